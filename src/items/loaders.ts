/**
 * Loads an item embedding catalogue from disk into one row-major float32 matrix, and checks it
 * row by row before anything else sees it.
 *
 * Three formats, told apart by `options.format`, else by the path:
 *  - folder: a directory holding `items.json` ({count, dim, dtype: "float32"}), `items.f32`
 *    (little-endian float32, row-major, count x dim) and `items.ids.txt` (one id per line, in
 *    row order). This is the layout of the prepared ml-latest-small data.
 *  - npy: a NumPy `.npy` file (format versions 1.0, 2.0 and 3.0, as specified in
 *    numpy/lib/format.py), 2-D, C order, dtype `<f4` or `<f8` (float64 is rounded to float32),
 *    with ids one per line from `options.ids`, by default the sibling `<name>.ids.txt`.
 *  - jsonl: one `{"id": "...", "embedding": [...]}` object per line (`item` and `vector` are
 *    accepted as the field names too), optionally gzip-compressed; blank lines are skipped. The
 *    file is streamed line by line, so its size is bounded by the matrix, not by a string.
 *    An id may also be a safe integer, which is turned into its decimal string.
 *
 * Every catalogue is checked the same way: at least one item, one dimension for all rows (and
 * `options.dim` when given), no empty and no duplicate ids, one row per id, finite values (after
 * rounding to float32) and no zero vectors (tolerance in `transform.ts`). The first fault throws
 * a CatalogueError whose message names the file, the line or row, and the item id.
 *
 * Ids read from a text file are trimmed of surrounding whitespace (including a CR of CRLF
 * files); ids inside JSON are taken as written.
 */
import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';

import { CatalogueError } from './errors.js';
import type { CatalogueLocation } from './errors.js';
import { decodeFloat32LE } from '../encoding/float32.js';
import { toFloat32, validateEmbedding } from './transform.js';

/** Item embeddings: row `r` of `vectors` (`dim` values from `r * dim`) belongs to `ids[r]`. */
export interface Catalogue {
  dim: number;
  ids: string[];
  /** Row-major, `ids.length` x `dim`. */
  vectors: Float32Array;
}

export type CatalogueFormat = 'folder' | 'npy' | 'jsonl';

export interface LoadCatalogueOptions {
  /** Ids file, one per line, for a `.npy` catalogue; default `<name>.ids.txt` beside it. */
  ids?: string;
  /** Skips format detection. */
  format?: CatalogueFormat;
  /** The dimension the caller expects; any other is an ITEMS_DIMENSION error. */
  dim?: number;
}

/** Loads and checks a catalogue; throws CatalogueError on any fault (see the file comment). */
export async function loadCatalogue(
  path: string,
  options: LoadCatalogueOptions = {},
): Promise<Catalogue> {
  const { dim } = options;
  if (dim !== undefined && !(Number.isInteger(dim) && dim > 0)) {
    throw new RangeError(`dim must be a positive integer, got ${dim}`);
  }

  const info = await statOrThrow(path);
  const format = options.format ?? (await detectFormat(path, info));
  if (options.ids !== undefined && format !== 'npy') {
    const detail = `an ids file only goes with a .npy catalogue, this one is read as ${format}`;
    throw new CatalogueError('ITEMS_FORMAT', detail, { file: path });
  }

  const loaded = await loadRows(path, format, options);
  checkCatalogue(loaded, dim);
  return loaded.catalogue;
}

/** A catalogue as read, and where each of its rows came from, for error messages. */
interface Loaded {
  catalogue: Catalogue;
  file: string;
  locate: (row: number, part: 'id' | 'vector') => CatalogueLocation;
}

function loadRows(path: string, format: CatalogueFormat, options: LoadCatalogueOptions) {
  switch (format) {
    case 'folder':
      return loadFolder(path);
    case 'npy':
      return loadNpy(path, options.ids);
    case 'jsonl':
      return loadJsonl(path, options.dim);
  }
}

async function detectFormat(path: string, info: Stats): Promise<CatalogueFormat> {
  if (info.isDirectory()) return 'folder';
  const lower = path.toLowerCase();
  if (lower.endsWith('.npy')) return 'npy';
  if (/\.(jsonl|ndjson)(\.gz)?$/.test(lower)) return 'jsonl';

  const head = await readHead(path, 64);
  if (isNpyMagic(head)) return 'npy';
  const text = head
    .toString('utf8')
    .replace(/^\uFEFF/, '')
    .trimStart();
  if (isGzipMagic(head) || text.startsWith('{')) return 'jsonl';

  const detail =
    'cannot tell the format: expected a folder with items.json, a .npy file or a JSONL file; ' +
    'pass the format option';
  throw new CatalogueError('ITEMS_FORMAT', detail, { file: path });
}

/** The checks every format shares, in the order a user would fix them. */
function checkCatalogue(loaded: Loaded, expectedDim: number | undefined): void {
  const { catalogue, file, locate } = loaded;
  if (catalogue.ids.length === 0) {
    throw new CatalogueError('ITEMS_FORMAT', 'catalogue has no items', { file });
  }
  if (expectedDim !== undefined && catalogue.dim !== expectedDim) {
    const detail = `catalogue has dim ${catalogue.dim}, expected ${expectedDim}`;
    throw new CatalogueError('ITEMS_DIMENSION', detail, { file });
  }

  const firstRowOf = new Map<string, number>();
  for (const [row, id] of catalogue.ids.entries()) {
    const first = firstRowOf.get(id);
    if (first === undefined) {
      firstRowOf.set(id, row);
      continue;
    }
    const { line } = locate(first, 'id');
    const where = line === undefined ? `row ${first}` : `row ${first}, line ${line}`;
    const detail = `duplicate id, first at ${where}`;
    throw new CatalogueError('ITEMS_DUPLICATE_ID', detail, locate(row, 'id'));
  }

  const { dim, vectors } = catalogue;
  for (let row = 0; row < catalogue.ids.length; row++) {
    validateEmbedding(vectors.subarray(row * dim, (row + 1) * dim), locate(row, 'vector'));
  }
}

// ---------------------------------------------------------------------------------------------
// Folder: items.json + items.f32 + items.ids.txt

async function loadFolder(dir: string): Promise<Loaded> {
  const metaFile = join(dir, 'items.json');
  const idsFile = join(dir, 'items.ids.txt');
  const vectorsFile = join(dir, 'items.f32');
  const [metaText, idsText, bytes] = await Promise.all([
    readFolderMember(metaFile).then((b) => b.toString('utf8')),
    readFolderMember(idsFile).then((b) => b.toString('utf8')),
    readFolderMember(vectorsFile),
  ]);

  const { count, dim } = parseFolderMeta(metaText, metaFile);
  const ids = parseIds(idsText, idsFile);
  if (ids.length !== count) {
    const detail = `${ids.length} ids, but items.json says count ${count}`;
    throw new CatalogueError('ITEMS_FORMAT', detail, { file: idsFile });
  }
  checkMatrixBytes(bytes.length, count, dim, 4, vectorsFile, 'items.json count');

  return {
    catalogue: { dim, ids, vectors: decodeFloat32LE(bytes) },
    file: dir,
    locate: (row, part) =>
      part === 'id'
        ? { file: idsFile, line: row + 1, row, id: ids[row]! }
        : { file: vectorsFile, row, id: ids[row]! },
  };
}

/** A missing member means the folder is not a catalogue, which is a format fault, not I/O. */
async function readFolderMember(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw ioError(file, err);
    const detail = 'missing: a catalogue folder holds items.json, items.ids.txt and items.f32';
    throw new CatalogueError('ITEMS_FORMAT', detail, { file }, { cause: err });
  }
}

function parseFolderMeta(text: string, file: string): { count: number; dim: number } {
  let meta: unknown;
  try {
    meta = JSON.parse(text);
  } catch (err) {
    const detail = `not valid JSON: ${(err as Error).message}`;
    throw new CatalogueError('ITEMS_FORMAT', detail, { file }, { cause: err });
  }

  const { count, dim, dtype } = (meta ?? {}) as Record<string, unknown>;
  if (!(Number.isSafeInteger(count) && (count as number) >= 0)) {
    throw new CatalogueError('ITEMS_FORMAT', `"count" must be an integer >= 0`, { file });
  }
  if (!(Number.isSafeInteger(dim) && (dim as number) > 0)) {
    throw new CatalogueError('ITEMS_FORMAT', `"dim" must be an integer > 0`, { file });
  }
  if (dtype !== undefined && dtype !== 'float32') {
    const detail = `"dtype" is ${JSON.stringify(dtype)}; items.f32 must be "float32"`;
    throw new CatalogueError('ITEMS_FORMAT', detail, { file });
  }
  return { count: count as number, dim: dim as number };
}

// ---------------------------------------------------------------------------------------------
// NumPy .npy: magic "\x93NUMPY", major and minor version bytes, header length (uint16 LE in
// version 1, uint32 LE in 2 and 3), then a Python dict literal (latin-1, UTF-8 in version 3)
// with 'descr', 'fortran_order' and 'shape', padded with spaces and a newline; the data follows.

interface NpyHeader {
  itemBytes: 4 | 8;
  rows: number;
  cols: number;
  dataOffset: number;
}

async function loadNpy(file: string, idsOption: string | undefined): Promise<Loaded> {
  const idsFile = idsOption ?? (await siblingIdsFile(file));
  const [bytes, idsBytes] = await Promise.all([readOrThrow(file), readOrThrow(idsFile)]);

  const header = parseNpyHeader(bytes, file);
  const ids = parseIds(idsBytes.toString('utf8'), idsFile);
  if (ids.length !== header.rows) {
    const detail = `${ids.length} ids for ${header.rows} rows in ${basename(file)}`;
    throw new CatalogueError('ITEMS_FORMAT', detail, { file: idsFile });
  }
  const { itemBytes, rows, cols, dataOffset } = header;
  checkMatrixBytes(bytes.length - dataOffset, rows, cols, itemBytes, file, 'the header shape');

  const data = bytes.subarray(dataOffset);
  const vectors = itemBytes === 4 ? decodeFloat32LE(data) : decodeFloat64LE(data);
  return {
    catalogue: { dim: cols, ids, vectors },
    file,
    locate: (row, part) =>
      part === 'id'
        ? { file: idsFile, line: row + 1, row, id: ids[row]! }
        : { file, row, id: ids[row]! },
  };
}

async function siblingIdsFile(file: string): Promise<string> {
  const candidate = join(dirname(file), `${basename(file).replace(/\.npy$/i, '')}.ids.txt`);
  try {
    await stat(candidate);
    return candidate;
  } catch (err) {
    const detail = `no ids: pass the ids option (--ids) or put ${basename(candidate)} beside it`;
    throw new CatalogueError('ITEMS_FORMAT', detail, { file }, { cause: err });
  }
}

function parseNpyHeader(bytes: Buffer, file: string): NpyHeader {
  const fail = (detail: string) => new CatalogueError('ITEMS_FORMAT', detail, { file });
  if (!isNpyMagic(bytes) || bytes.length < 10) throw fail('not a .npy file: no \\x93NUMPY magic');

  const major = bytes[6]!;
  if (major < 1 || major > 3) throw fail(`.npy format version ${major}.${bytes[7]} not supported`);
  const start = major === 1 ? 10 : 12;
  const length = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  if (bytes.length < start + length) throw fail('.npy header is truncated');
  const text = bytes.toString(major === 3 ? 'utf8' : 'latin1', start, start + length);

  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(text)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw fail(`.npy header lacks a plain descr, fortran_order or shape: ${text.trim()}`);
  }

  if (fortran === 'True') {
    throw fail('fortran_order is True: save a C-order array (np.ascontiguousarray) instead');
  }
  const itemBytes = descr === '<f4' ? 4 : descr === '<f8' ? 8 : null;
  if (itemBytes === null) {
    throw fail(`dtype '${descr}' not supported: use '<f4' or '<f8' (little-endian float32/64)`);
  }
  const shape = shapeText
    .split(',')
    .map((part) => part.trim().replace(/L$/, ''))
    .filter((part) => part !== '')
    .map(Number);
  if (shape.length !== 2 || !shape.every((n) => Number.isSafeInteger(n) && n >= 0)) {
    throw fail(`shape (${shapeText}) is not 2-D (items x dim)`);
  }
  if (shape[1] === 0) throw fail('shape has dim 0');

  return { itemBytes, rows: shape[0]!, cols: shape[1]!, dataOffset: start + length };
}

function decodeFloat64LE(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.length / 8);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(8 * i, true);
  return out;
}

// ---------------------------------------------------------------------------------------------
// JSONL, streamed

/** Rows appended one at a time to a matrix that doubles when full. */
class RowBuffer {
  private data: Float32Array;
  rows = 0;

  constructor(readonly dim: number) {
    this.data = new Float32Array(dim * 1024);
  }

  append(values: readonly unknown[], location: CatalogueLocation): void {
    if (this.data.length < (this.rows + 1) * this.dim) {
      const grown = new Float32Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    const row = this.data.subarray(this.rows * this.dim, (this.rows + 1) * this.dim);
    toFloat32(values, location, 'embedding', row);
    this.rows++;
  }

  matrix(): Float32Array {
    return this.data.slice(0, this.rows * this.dim);
  }
}

async function loadJsonl(file: string, expectedDim: number | undefined): Promise<Loaded> {
  const ids: string[] = [];
  const lines: number[] = [];
  let buffer: RowBuffer | null = null;
  let firstDimLine = 0;

  const gzipped = isGzipMagic(await readHead(file, 2));
  const stream = openLines(file, gzipped);
  let line = 0;
  try {
    for await (const raw of stream.lines) {
      line++;
      const text = line === 1 ? raw.replace(/^\uFEFF/, '') : raw;
      if (text.trim() === '') continue;

      const { id, embedding } = parseJsonlRecord(text, { file, line, row: ids.length });
      const location = { file, line, row: ids.length, id };
      if (buffer === null) {
        buffer = new RowBuffer(expectedDim ?? embedding.length);
        firstDimLine = line;
      }
      if (embedding.length !== buffer.dim) {
        const source =
          expectedDim === undefined ? `as on line ${firstDimLine}` : 'by the dim option';
        const found = embedding.length;
        const detail = `embedding has ${found} components, expected ${buffer.dim} ${source}`;
        throw new CatalogueError('ITEMS_DIMENSION', detail, location);
      }

      buffer.append(embedding, location);
      ids.push(id);
      lines.push(line);
    }
  } catch (err) {
    throw err instanceof CatalogueError ? err : ioError(file, err);
  } finally {
    stream.close();
  }

  const dim = buffer?.dim ?? expectedDim ?? 0;
  return {
    catalogue: { dim, ids, vectors: buffer?.matrix() ?? new Float32Array(0) },
    file,
    locate: (row) => ({ file, line: lines[row]!, row, id: ids[row]! }),
  };
}

function openLines(file: string, gzipped: boolean) {
  const source = createReadStream(file);
  // pipeline hands a read or gunzip error on to the last stream, and readline rethrows it in the
  // loop, where it becomes ITEMS_IO; the callback has nothing left to do.
  const input: Readable = gzipped ? pipeline(source, createGunzip(), () => undefined) : source;
  const lines = createInterface({ input, crlfDelay: Infinity });
  return {
    lines,
    close: () => {
      lines.close();
      source.destroy();
      input.destroy();
    },
  };
}

function parseJsonlRecord(
  text: string,
  location: CatalogueLocation,
): { id: string; embedding: readonly unknown[] } {
  let record: unknown;
  try {
    record = JSON.parse(text);
  } catch (err) {
    throw jsonLineError(text, location, err);
  }
  if (record === null || typeof record !== 'object' || Array.isArray(record)) {
    throw new CatalogueError('ITEMS_FORMAT', 'line is not a JSON object', location);
  }

  const fields = record as Record<string, unknown>;
  const id = parseJsonlId(fields.id ?? fields.item, location);
  const embedding = fields.embedding ?? fields.vector;
  if (!Array.isArray(embedding) || embedding.length === 0) {
    const detail = 'needs a non-empty "embedding" (or "vector") array of numbers';
    throw new CatalogueError('ITEMS_FORMAT', detail, { ...location, id });
  }
  return { id, embedding };
}

function parseJsonlId(value: unknown, location: CatalogueLocation): string {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  if (typeof value === 'string' && value.trim() !== '') return value;

  const detail =
    value === undefined
      ? 'needs an "id" (or "item") field'
      : `id ${JSON.stringify(value)} is not a non-empty string or an integer`;
  throw new CatalogueError('ITEMS_FORMAT', detail, location);
}

/** Python's json.dumps writes NaN and Infinity bare, which is not JSON: say what it means. */
function jsonLineError(text: string, location: CatalogueLocation, cause: unknown): CatalogueError {
  const guessedId = /"(?:id|item)"\s*:\s*"([^"]*)"/.exec(text)?.[1];
  const where = guessedId === undefined ? location : { ...location, id: guessedId };
  if (/(^|[^\w"])-?(NaN|Infinity)\b/.test(text)) {
    const detail = 'embedding holds NaN or Infinity (written bare, which is not valid JSON)';
    return new CatalogueError('ITEMS_NON_FINITE', detail, where, { cause });
  }
  const detail = `not valid JSON: ${(cause as Error).message}`;
  return new CatalogueError('ITEMS_FORMAT', detail, where, { cause });
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** Splits an ids file; a final newline ends the last id, any other empty line is an error. */
function parseIds(text: string, file: string): string[] {
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  if (lines.at(-1) === '') lines.pop();

  return lines.map((raw, index) => {
    const id = raw.trim();
    if (id === '') {
      throw new CatalogueError('ITEMS_FORMAT', 'empty id', { file, line: index + 1, row: index });
    }
    return id;
  });
}

/** Checks a matrix's byte length against rows x cols, telling a wrong dim from a wrong count. */
function checkMatrixBytes(
  byteLength: number,
  rows: number,
  cols: number,
  itemBytes: number,
  file: string,
  countSource: string,
): void {
  const rowBytes = cols * itemBytes;
  if (byteLength === rows * rowBytes) return;

  if (byteLength % rowBytes !== 0) {
    const detail =
      `${byteLength} bytes is not a whole number of rows of dim ${cols} ` +
      `(${rowBytes} bytes each)`;
    throw new CatalogueError('ITEMS_DIMENSION', detail, { file });
  }
  const found = byteLength / rowBytes;
  const detail = `holds ${found} rows of dim ${cols}, but ${countSource} is ${rows}`;
  throw new CatalogueError('ITEMS_FORMAT', detail, { file });
}

function isNpyMagic(bytes: Buffer): boolean {
  return bytes.length >= 6 && bytes[0] === 0x93 && bytes.toString('latin1', 1, 6) === 'NUMPY';
}

function isGzipMagic(bytes: Buffer): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

async function statOrThrow(path: string): Promise<Stats> {
  try {
    return await stat(path);
  } catch (err) {
    throw ioError(path, err);
  }
}

async function readOrThrow(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw ioError(file, err);
  }
}

async function readHead(file: string, byteCount: number): Promise<Buffer> {
  try {
    const handle = await open(file, 'r');
    try {
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(byteCount), 0, byteCount, 0);
      return buffer.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (err) {
    throw ioError(file, err);
  }
}

function ioError(file: string, err: unknown): CatalogueError {
  const reason = err instanceof Error ? err.message : String(err);
  return new CatalogueError('ITEMS_IO', `cannot read: ${reason}`, { file }, { cause: err });
}
