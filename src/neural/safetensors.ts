/**
 * Reads and writes the safetensors format (huggingface/safetensors, the format PyTorch's
 * `safetensors.torch.save_file` / `load_file` use), float32 tensors only:
 *
 *   8 bytes   N, the header length, unsigned 64-bit little-endian
 *   N bytes   JSON: {"<name>": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
 *             ..., "__metadata__": {"<key>": "<string>"}}, padded with spaces so that 8 + N
 *             is a multiple of 8
 *   rest      the tensors' bytes, little-endian, row-major; offsets are relative to this part
 *
 * The reader checks what the format promises: offsets inside the file, sizes matching dtype and
 * shape, tensors covering the data part without holes or overlap.
 */
import { readFile, writeFile } from 'node:fs/promises';

export interface NamedTensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export interface SafetensorsContent {
  /** In file order (ascending data offset). */
  readonly tensors: Map<string, NamedTensor>;
  readonly metadata: Record<string, string>;
}

export class SafetensorsError extends Error {
  readonly code = 'SAFETENSORS_FORMAT';
  readonly file: string;
  /** The problem alone, without the file name that `message` starts with. */
  readonly detail: string;

  constructor(file: string, detail: string, options: { cause?: unknown } = {}) {
    super(`${file}: ${detail}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SafetensorsError';
    this.file = file;
    this.detail = detail;
  }
}

/** A header larger than this is not a model of ours, and parsing it would waste memory. */
const MAX_HEADER_BYTES = 100_000_000;
const F32_BYTES = 4;

/**
 * Writes the tensors in the order given (a Map or an object's key order) with their metadata.
 * Throws RangeError when a tensor's data length differs from the product of its shape.
 */
export async function writeSafetensors(
  path: string,
  tensors: ReadonlyMap<string, NamedTensor> | Readonly<Record<string, NamedTensor>>,
  metadata: Readonly<Record<string, string>> = {},
): Promise<void> {
  await writeFile(path, encodeSafetensors(tensors, metadata));
}

/** The bytes of a safetensors file, as `writeSafetensors` writes them. */
export function encodeSafetensors(
  tensors: ReadonlyMap<string, NamedTensor> | Readonly<Record<string, NamedTensor>>,
  metadata: Readonly<Record<string, string>> = {},
): Buffer {
  const entries: [string, NamedTensor][] =
    tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, tensor] of entries) {
    if (name === '__metadata__') throw new RangeError('"__metadata__" cannot name a tensor');
    const size = tensor.shape.reduce((product, extent) => product * extent, 1);
    if (size !== tensor.data.length) {
      throw new RangeError(
        `tensor ${name}: shape [${tensor.shape.join(', ')}] needs ${size} values, data has ${tensor.data.length}`,
      );
    }
    header[name] = {
      dtype: 'F32',
      shape: [...tensor.shape],
      data_offsets: [offset, offset + size * F32_BYTES],
    };
    offset += size * F32_BYTES;
  }
  if (Object.keys(metadata).length > 0) header['__metadata__'] = { ...metadata };

  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = Buffer.alloc(8 + padded + offset, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);

  let at = 8 + padded;
  for (const [, tensor] of entries) {
    for (let i = 0; i < tensor.data.length; i++, at += F32_BYTES)
      out.writeFloatLE(tensor.data[i]!, at);
  }
  return out;
}

/** Reads a safetensors file of F32 tensors; throws SafetensorsError on anything malformed. */
export async function readSafetensors(path: string): Promise<SafetensorsContent> {
  return decodeSafetensors(await readFile(path), path);
}

export function decodeSafetensors(bytes: Buffer, file = '<buffer>'): SafetensorsContent {
  if (bytes.length < 8)
    throw new SafetensorsError(file, `${bytes.length} bytes: too short for the header length`);
  const headerLength = bytes.readBigUInt64LE(0);
  if (headerLength > BigInt(Math.min(MAX_HEADER_BYTES, bytes.length - 8))) {
    throw new SafetensorsError(
      file,
      `header length ${headerLength} exceeds the file (${bytes.length} bytes)`,
    );
  }

  const dataStart = 8 + Number(headerLength);
  let header: unknown;
  try {
    header = JSON.parse(bytes.toString('utf8', 8, dataStart));
  } catch (cause) {
    throw new SafetensorsError(file, 'header is not JSON', { cause });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new SafetensorsError(file, 'header is not a JSON object');
  }

  const metadata = readMetadata(file, (header as Record<string, unknown>)['__metadata__']);
  const layout = Object.entries(header)
    .filter(([name]) => name !== '__metadata__')
    .map(([name, entry]) => tensorLayout(file, name, entry))
    .sort((a, b) => a.begin - b.begin);

  const dataLength = bytes.length - dataStart;
  let expected = 0;
  const tensors = new Map<string, NamedTensor>();
  for (const { name, shape, begin, end } of layout) {
    if (begin !== expected)
      throw new SafetensorsError(
        file,
        `tensor ${name} starts at ${begin}, expected ${expected} (hole or overlap)`,
      );
    if (end > dataLength)
      throw new SafetensorsError(
        file,
        `tensor ${name} ends at ${end}, past the data (${dataLength} bytes)`,
      );
    const data = new Float32Array((end - begin) / F32_BYTES);
    for (let i = 0; i < data.length; i++)
      data[i] = bytes.readFloatLE(dataStart + begin + i * F32_BYTES);
    tensors.set(name, { shape, data });
    expected = end;
  }
  if (expected !== dataLength)
    throw new SafetensorsError(file, `${dataLength - expected} bytes after the last tensor`);
  return { tensors, metadata };
}

function readMetadata(file: string, raw: unknown): Record<string, string> {
  if (raw === undefined) return {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new SafetensorsError(file, '__metadata__ is not an object');
  }
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== 'string')
      throw new SafetensorsError(file, `__metadata__.${key} is not a string`);
    metadata[key] = value;
  }
  return metadata;
}

function tensorLayout(
  file: string,
  name: string,
  entry: unknown,
): { name: string; shape: number[]; begin: number; end: number } {
  const { dtype, shape, data_offsets: offsets } = (entry ?? {}) as Record<string, unknown>;
  if (dtype !== 'F32') {
    throw new SafetensorsError(
      file,
      `tensor ${name} has dtype ${String(dtype)}; only F32 is read (convert with tensor.float())`,
    );
  }
  if (
    !Array.isArray(shape) ||
    !shape.every((extent) => Number.isSafeInteger(extent) && extent >= 0)
  ) {
    throw new SafetensorsError(
      file,
      `tensor ${name}: shape must be a list of non-negative integers`,
    );
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
  ) {
    throw new SafetensorsError(file, `tensor ${name}: data_offsets must be [begin, end]`);
  }

  const [begin, end] = offsets as [number, number];
  const size = (shape as number[]).reduce((product, extent) => product * extent, 1);
  if (end - begin !== size * F32_BYTES) {
    throw new SafetensorsError(
      file,
      `tensor ${name}: ${end - begin} bytes for shape [${shape.join(', ')}], expected ${size * F32_BYTES}`,
    );
  }
  return { name, shape: shape as number[], begin, end };
}
