/**
 * A small assembler for WebAssembly SIMD kernels, written out byte by byte: opcodes, LEB128
 * integers, locals, loops, and a module that imports its memory as env.memory and exports
 * functions of i32 parameters. Encoding per the WebAssembly Core Specification 2.0: sections in
 * chapter 5.5, instructions in 5.4 (SIMD in 5.4.8), integers as LEB128 (5.2.2). Used by the
 * dual solver's kernels and by method 1's row updates (features/row-arena.ts).
 */
/**
 * The part of the WebAssembly JavaScript API used here. The project's type libraries (ES2023,
 * @types/node 20) do not declare the global, so it is typed locally.
 */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
export type WasmModule = object;
export interface WasmApi {
  readonly Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory;
  readonly Module: new (bytes: Uint8Array) => WasmModule;
  readonly Instance: new (module: WasmModule, imports: object) => { readonly exports: object };
  validate(bytes: Uint8Array): boolean;
}
export const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Bytes in one page of WebAssembly memory. */
export const WASM_PAGE_BYTES = 65_536;

/** Opcodes (one byte each) and SIMD sub-opcodes (after the 0xfd prefix) used below. */
export const OP = {
  block: 0x02,
  loop: 0x03,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  localGet: 0x20,
  localSet: 0x21,
  f64Load: 0x2b,
  f64Store: 0x39,
  i32Const: 0x41,
  i32GeS: 0x4e,
  i32Add: 0x6a,
  i32Mul: 0x6c,
  i32Shl: 0x74,
  f64Add: 0xa0,
  f64Mul: 0xa2,
  simdPrefix: 0xfd,
  v128Load: 0,
  v128Store: 11,
  v128Load32Splat: 9,
  v128Const: 12,
  f64x2Splat: 20,
  f64x2ExtractLane: 33,
  f32x4Add: 228,
  f32x4Mul: 230,
  f64x2Add: 240,
  f64x2Mul: 242,
} as const;

export const I32 = 0x7f;
export const V128 = 0x7b;
/** Block type of a block or loop that yields nothing. */
export const EMPTY_BLOCK = 0x40;

export type Code = number[];

export function unsignedLeb128(value: number): Code {
  const bytes: Code = [];
  do {
    const low = value & 0x7f;
    value >>>= 7;
    bytes.push(value === 0 ? low : low | 0x80);
  } while (value !== 0);
  return bytes;
}

export function signedLeb128(value: number): Code {
  const bytes: Code = [];
  for (;;) {
    const low = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && (low & 0x40) === 0) || (value === -1 && (low & 0x40) !== 0);
    bytes.push(done ? low : low | 0x80);
    if (done) return bytes;
  }
}

export const get = (local: number): Code => [OP.localGet, ...unsignedLeb128(local)];
export const set = (local: number): Code => [OP.localSet, ...unsignedLeb128(local)];
export const i32 = (value: number): Code => [OP.i32Const, ...signedLeb128(value)];
export const simd = (op: number, ...immediates: number[]): Code => [
  OP.simdPrefix,
  ...unsignedLeb128(op),
  ...immediates,
];
/** v128.load / v128.store with 16-byte alignment hint and offset 0. */
export const load128 = simd(OP.v128Load, 4, 0);
export const store128 = simd(OP.v128Store, 4, 0);
export const zero128 = simd(OP.v128Const, ...new Array<number>(16).fill(0));
export const add2 = simd(OP.f64x2Add);
export const mul2 = simd(OP.f64x2Mul);
/** (a + b) for the two lanes of the v128 in `local`, as an f64. */
export const laneSum = (local: number): Code => [
  ...get(local),
  ...simd(OP.f64x2ExtractLane, 0),
  ...get(local),
  ...simd(OP.f64x2ExtractLane, 1),
  OP.f64Add,
];
/** f64.load at address (base + 8 index + 8 extra): pushes base + (index << 3), then loads. */
export const loadF64 = (base: number, index: number, extra: number): Code => [
  ...get(base),
  ...get(index),
  ...i32(3),
  OP.i32Shl,
  OP.i32Add,
  OP.f64Load,
  3,
  ...unsignedLeb128(8 * extra),
];

/** for (counter = 0; counter < limit; counter += step) { body }, on i32 locals. */
export function forLoop(counter: number, limit: number, step: number, body: Code): Code {
  return [
    ...i32(0),
    ...set(counter),
    OP.block,
    EMPTY_BLOCK,
    OP.loop,
    EMPTY_BLOCK,
    ...get(counter),
    ...get(limit),
    OP.i32GeS,
    OP.brIf,
    1,
    ...body,
    ...get(counter),
    ...i32(step),
    OP.i32Add,
    ...set(counter),
    OP.br,
    0,
    OP.end,
    OP.end,
  ];
}

export interface KernelFunction {
  readonly name: string;
  readonly parameters: number;
  /** Types of the locals after the parameters (all parameters are i32). */
  readonly locals: readonly number[];
  readonly body: Code;
}

/** A module importing env.memory and exporting `functions`, all of i32 parameters only. */
export function encodeModule(functions: readonly KernelFunction[]): Uint8Array {
  const vector = (items: readonly Code[]): Code => [
    ...unsignedLeb128(items.length),
    ...items.flat(),
  ];
  // Names here are ASCII, one byte per character in UTF-8.
  const name = (text: string): Code => vector([...text].map((c) => [c.charCodeAt(0)]));
  const section = (id: number, content: Code): Code => [
    id,
    ...unsignedLeb128(content.length),
    ...content,
  ];
  const FUNCTION_TYPE = 0x60;
  const MEMORY_IMPORT = 0x02;
  const FUNCTION_EXPORT = 0x00;

  const types = functions.map((f) => [
    FUNCTION_TYPE,
    ...vector(new Array<Code>(f.parameters).fill([I32])),
    0,
  ]);
  const bodies = functions.map((f) => {
    const code = [...vector(f.locals.map((type) => [1, type])), ...f.body, OP.end];
    return [...unsignedLeb128(code.length), ...code];
  });
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vector(types)),
    ...section(2, vector([[...name('env'), ...name('memory'), MEMORY_IMPORT, 0x00, 1]])),
    ...section(3, vector(functions.map((_, k) => unsignedLeb128(k)))),
    ...section(
      7,
      vector(functions.map((f, k) => [...name(f.name), FUNCTION_EXPORT, ...unsignedLeb128(k)])),
    ),
    ...section(10, vector(bodies)),
  ]);
}
