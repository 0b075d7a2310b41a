/**
 * Method 1's decayed sums, for the states the worker holds, kept in WebAssembly memory so that
 * adding an event's embedding to its rows runs as a SIMD kernel rather than as JavaScript. The
 * update is 2 to 5 multiply-adds per dimension and half-life, into rows cold in cache with
 * thousands of users held: in JavaScript it took about 1.5 µs per event at d = 384 with three
 * half-lives (one float at a time, converting each between float32 and float64), the largest
 * single cost of the worker's apply.
 *
 * The kernel is the JavaScript loop of features/aggregate.ts four lanes at a time and gives the
 * same bits: the weight is rounded to float32, multiplied by the float32 embedding and the
 * product added to the float32 row, each operation rounded to float32 to nearest-even
 * (WebAssembly Core Specification 2.0, 4.3.3); the loop computes the same with Math.fround,
 * which is exact here (a product of two float32 values is exact in float64, and rounding a
 * float64 sum of two float32 values to float32 is the correctly rounded float32 sum, since
 * 53 >= 2 * 24 + 2: Figueroa, "When is double rounding innocuous?", SIGNUM Newsletter 30(3),
 * 1995). States in the arena and states outside it therefore evolve identically, and the
 * offline replay (which uses no arena) equals the worker bit for bit. Until 2026-12-04 the
 * kernel widened each float to float64 and rounded once per update, two floats per vector:
 * `addRows` took 430 to 470 ns per event at d = 384 with three rows, against 200 to 210 ns now
 * (5,000 states, eight events each in turn). The conversions bounded it, not the memory: with
 * 50 states, all in cache, it took 380 to 450 ns. docs/benchmarks.md, round of 2026-12-04 11:05.
 *
 * Slots are handed out from chunks of fixed-size memories, never grown: growing a WebAssembly
 * memory detaches every view on it. The holder releases a slot when it drops the state; a state
 * dropped without that is given back when it is garbage-collected (FinalizationRegistry). When
 * the arena is full, `allocate` returns null and the state lives in a plain array.
 */
import type { Code, KernelFunction, WasmMemory, WasmModule } from './wasm-assembler.js';
import {
  OP,
  V128,
  I32,
  WASM_PAGE_BYTES,
  encodeModule,
  forLoop,
  get,
  load128,
  set,
  simd,
  store128,
  unsignedLeb128,
  wasm,
} from './wasm-assembler.js';

/** Slots per chunk memory: about 36 MB at d = 384 with three half-lives. */
const CHUNK_SLOTS = 4_096;

interface RowExports {
  addThreeRows(row: number, rowBytes: number, x: number, weights: number): void;
  addOneRow(row: number, rowBytes: number, x: number, weights: number): void;
}

interface Chunk {
  readonly memory: WasmMemory;
  readonly kernels: RowExports;
  /** The embedding being added, copied here (the kernel reads only this memory). */
  readonly x: Float32Array;
  /** The weights of the rows being updated, as the kernel reads them (rounded to float32). */
  readonly weights: Float32Array;
  /** Byte offset of slot 0. */
  readonly slotsAt: number;
}

export class RowArena {
  private readonly chunks = new Map<ArrayBuffer, Chunk>();
  private readonly chunkList: Chunk[] = [];
  private readonly free: { chunk: Chunk; slot: number }[] = [];
  private readonly slotOf = new WeakMap<Float32Array, { chunk: Chunk; slot: number }>();
  private readonly finalizer = new FinalizationRegistry<{ chunk: Chunk; slot: number }>((held) =>
    this.free.push(held),
  );
  private used = 0;
  private readonly slotBytes: number;

  /**
   * `slotFloats` per state (rows × dim), rows of `dim` floats, at most `maxSlots` states. Null
   * where the kernels cannot run: no SIMD in this runtime, or a dimension that is not a
   * multiple of 4 (the kernel takes four floats at a time).
   */
  static create(dim: number, slotFloats: number, maxSlots: number): RowArena | null {
    if (dim % 4 !== 0 || rowModule() === null) return null;
    return new RowArena(dim, slotFloats, maxSlots);
  }

  private constructor(
    readonly dim: number,
    readonly slotFloats: number,
    private readonly maxSlots: number,
  ) {
    this.slotBytes = slotFloats * 4;
  }

  /** A zeroed view of a free slot, or null when the arena is full. */
  allocate(): Float32Array | null {
    const held = this.free.pop() ?? this.fresh();
    if (!held) return null;
    const view = new Float32Array(
      held.chunk.memory.buffer,
      held.chunk.slotsAt + held.slot * this.slotBytes,
      this.slotFloats,
    );
    view.fill(0);
    this.slotOf.set(view, held);
    this.finalizer.register(view, held, view);
    return view;
  }

  /** Gives a view's slot back; a view not from this arena, or already released, is ignored. */
  release(view: Float32Array): void {
    const held = this.slotOf.get(view);
    if (!held) return;
    this.slotOf.delete(view);
    this.finalizer.unregister(view);
    this.free.push(held);
  }

  /**
   * rows[first + r] += w_r x for r < count (1 or 3), rows `dim` floats apart, when `rows` is
   * one of this arena's views; returns false (nothing done) when it is not.
   */
  addRows(
    rows: Float32Array,
    first: number,
    count: 1 | 3,
    x: Float32Array,
    w0: number,
    w1 = 0,
    w2 = 0,
  ): boolean {
    const chunk = this.chunks.get(rows.buffer as ArrayBuffer);
    if (!chunk || x.length !== this.dim) return false;
    chunk.x.set(x);
    chunk.weights[0] = w0;
    chunk.weights[1] = w1;
    chunk.weights[2] = w2;
    const row = rows.byteOffset + first * this.dim * 4;
    const rowBytes = this.dim * 4;
    const add = count === 3 ? chunk.kernels.addThreeRows : chunk.kernels.addOneRow;
    add(row, rowBytes, chunk.x.byteOffset, chunk.weights.byteOffset);
    return true;
  }

  private fresh(): { chunk: Chunk; slot: number } | null {
    if (this.used >= this.maxSlots) return null;
    const index = this.used++;
    const chunkIndex = Math.floor(index / CHUNK_SLOTS);
    const chunk = this.chunkList[chunkIndex] ?? this.addChunk();
    return { chunk, slot: index % CHUNK_SLOTS };
  }

  private addChunk(): Chunk {
    // The embedding, then 3 weights, then the slots (all 16-byte aligned).
    const xBytes = align16(this.dim * 4);
    const slotsAt = xBytes + 32;
    const slots = Math.min(CHUNK_SLOTS, this.maxSlots - this.chunkList.length * CHUNK_SLOTS);
    const pages = Math.ceil((slotsAt + slots * this.slotBytes) / WASM_PAGE_BYTES);
    const memory = new wasm.Memory({ initial: pages, maximum: pages });
    const instance = new wasm.Instance(rowModule()!, { env: { memory } });
    const chunk: Chunk = {
      memory,
      kernels: instance.exports as unknown as RowExports,
      x: new Float32Array(memory.buffer, 0, this.dim),
      weights: new Float32Array(memory.buffer, xBytes, 3),
      slotsAt,
    };
    this.chunks.set(memory.buffer, chunk);
    this.chunkList.push(chunk);
    return chunk;
  }
}

function align16(bytes: number): number {
  return Math.ceil(bytes / 16) * 16;
}

/**
 * addThreeRows(row, rowBytes, x, weights) / addOneRow: for each of 1 or 3 rows (rowBytes
 * apart from `row`), row[k] = f32(row[k] + f32(x[k] · weights[r])) with float32 weights, four
 * floats per step (rowBytes a multiple of 16).
 */
function rowKernel(name: string, rows: number): KernelFunction {
  const [row, rowBytes, x, weights] = [0, 1, 2, 3];
  const j = 4;
  const base = (r: number) => 5 + r;
  const address = 5 + rows;
  const weight = (r: number) => 6 + rows + r;
  const xv = 6 + 2 * rows;

  const setup: Code = [];
  for (let r = 0; r < rows; r++) {
    setup.push(...get(weights), ...simd(OP.v128Load32Splat, 2, ...unsignedLeb128(4 * r)));
    setup.push(...set(weight(r)));
    if (r === 0) setup.push(...get(row), ...set(base(0)));
    else setup.push(...get(base(r - 1)), ...get(rowBytes), OP.i32Add, ...set(base(r)));
  }
  const step: Code = [...get(x), ...get(j), OP.i32Add, ...load128, ...set(xv)];
  for (let r = 0; r < rows; r++) {
    step.push(...get(base(r)), ...get(j), OP.i32Add, ...set(address));
    step.push(...get(address), ...get(address), ...load128);
    step.push(...get(xv), ...get(weight(r)), ...simd(OP.f32x4Mul), ...simd(OP.f32x4Add));
    step.push(...store128);
  }
  return {
    name,
    parameters: 4,
    locals: [...new Array<number>(rows + 2).fill(I32), ...new Array<number>(rows + 1).fill(V128)],
    body: [...setup, ...forLoop(j, rowBytes, 16, step)],
  };
}

let compiled: WasmModule | null | undefined;

function rowModule(): WasmModule | null {
  if (compiled !== undefined) return compiled;
  const bytes = encodeModule([rowKernel('addThreeRows', 3), rowKernel('addOneRow', 1)]);
  compiled = wasm.validate(bytes) ? new wasm.Module(bytes) : null;
  return compiled;
}
