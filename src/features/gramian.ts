/**
 * The catalogue Gramian G = sum_i e_i e_i^T over every item embedding, shared by all users of
 * the dual-vector method (see dual.ts). It is kept up to date by rank-one updates as items are
 * added, changed or removed, and can be rebuilt from scratch to shed accumulated rounding.
 *
 * Each rank-one contribution is exact: the product of two float32 numbers has at most 48
 * significant bits and fits a float64 without rounding. Only the running sums round, so after
 * k updates an entry is off by at most about k * 2^-53 times the largest partial sum; a full
 * recomputation with `computeGramian` every few million updates keeps that far below anything
 * the solver can see.
 */

import { Buffer } from 'node:buffer';

/** A d x d symmetric Gramian with the number of embeddings summed into it. */
export interface Gramian {
  /** Embedding dimension d. */
  readonly dim: number;
  /** Row-major d * d entries; symmetric bit for bit (entry (i, j) equals entry (j, i)). */
  readonly values: Float64Array;
  /** Number of embeddings currently summed into `values` (the catalogue size it describes). */
  count: number;
}

/** Size in bytes of the header written by `encodeGramian`. */
export const GRAMIAN_HEADER_BYTES = 16;

/** Format version written in the first header field by `encodeGramian`. */
export const GRAMIAN_FORMAT_VERSION = 1;

/** An all-zero Gramian of dimension `dim` (an empty catalogue). */
export function createGramian(dim: number): Gramian {
  if (!Number.isInteger(dim) || dim <= 0) {
    throw new RangeError(`Gramian dimension must be a positive integer, got ${dim}`);
  }
  return { dim, values: new Float64Array(dim * dim), count: 0 };
}

/**
 * Full recomputation of G over `vectors`, each of length `dim`. Sums the upper triangle and
 * mirrors it, so the result equals, bit for bit, adding the same vectors in the same order
 * with `addRankOne`.
 */
export function computeGramian(vectors: Iterable<Float32Array>, dim: number): Gramian {
  const gramian = createGramian(dim);
  const values = gramian.values;

  for (const vector of vectors) {
    checkLength(vector, dim);
    for (let i = 0, row = 0; i < dim; i++, row += dim) {
      const ei = vector[i]!;
      for (let j = i; j < dim; j++) values[row + j]! += ei * vector[j]!;
    }
    gramian.count++;
  }

  for (let i = 1; i < dim; i++) {
    for (let j = 0; j < i; j++) values[i * dim + j] = values[j * dim + i]!;
  }
  return gramian;
}

/**
 * In place: G += sign * e e^T and count += sign. Removing from an empty Gramian throws before
 * anything changes, since it means an item was removed that was never added.
 */
export function addRankOne(gramian: Gramian, embedding: Float32Array, sign: 1 | -1): void {
  const { dim, values } = gramian;
  checkLength(embedding, dim);
  if (sign === -1 && gramian.count <= 0) {
    throw new RangeError('cannot remove an embedding from a Gramian that holds none');
  }

  // (sign * e_i) * e_j is exact and commutes, so entries (i, j) and (j, i) stay equal.
  for (let i = 0, row = 0; i < dim; i++, row += dim) {
    const ei = sign * embedding[i]!;
    for (let j = 0; j < dim; j++) values[row + j]! += ei * embedding[j]!;
  }
  gramian.count += sign;
}

/**
 * Applies one catalogue change: `previous` null and `next` set adds an item, both set changes
 * its embedding, `previous` set and `next` null removes it, both null does nothing. `previous`
 * must be exactly the embedding that was added for that item, or G drifts from the catalogue.
 */
export function replaceItem(
  gramian: Gramian,
  previous: Float32Array | null,
  next: Float32Array | null,
): void {
  if (previous !== null) checkLength(previous, gramian.dim);
  if (next !== null) checkLength(next, gramian.dim);

  if (previous !== null) addRankOne(gramian, previous, -1);
  if (next !== null) addRankOne(gramian, next, 1);
}

/**
 * Serialises G for storage (e.g. a Redis string). Layout, all little-endian, 16 + 8 d^2 bytes:
 *
 * | offset | type      | field                                                       |
 * | ------ | --------- | ----------------------------------------------------------- |
 * | 0      | uint32    | format version, currently 1                                 |
 * | 4      | uint32    | dimension d                                                 |
 * | 8      | float64   | count (an integer, exact below 2^53)                        |
 * | 16     | float64[] | d * d entries, row-major: entry (i, j) at 16 + 8 * (i d + j) |
 *
 * From Python: `version, d, count = struct.unpack_from('<IId', buf, 0)` then
 * `numpy.frombuffer(buf, dtype='<f8', offset=16).reshape(d, d)`.
 */
export function encodeGramian(gramian: Gramian): Buffer {
  const { dim, values } = gramian;
  const buffer = Buffer.alloc(GRAMIAN_HEADER_BYTES + 8 * values.length);
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);

  view.setUint32(0, GRAMIAN_FORMAT_VERSION, true);
  view.setUint32(4, dim, true);
  view.setFloat64(8, gramian.count, true);
  for (let k = 0; k < values.length; k++) {
    view.setFloat64(GRAMIAN_HEADER_BYTES + 8 * k, values[k]!, true);
  }
  return buffer;
}

/**
 * Reads the layout written by `encodeGramian`, checking the version, that the stored
 * dimension is `dim`, and the length. Throws a RangeError naming the mismatch otherwise.
 */
export function decodeGramian(bytes: Uint8Array, dim: number): Gramian {
  const expectedLength = GRAMIAN_HEADER_BYTES + 8 * dim * dim;
  if (bytes.byteLength !== expectedLength) {
    throw new RangeError(
      `encoded Gramian has ${bytes.byteLength} bytes, expected ${expectedLength} for d = ${dim}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(0, true);
  if (version !== GRAMIAN_FORMAT_VERSION) {
    throw new RangeError(`encoded Gramian has format version ${version}, expected 1`);
  }
  const storedDim = view.getUint32(4, true);
  if (storedDim !== dim) {
    throw new RangeError(`encoded Gramian has dimension ${storedDim}, expected ${dim}`);
  }

  const gramian = createGramian(dim);
  gramian.count = view.getFloat64(8, true);
  for (let k = 0; k < gramian.values.length; k++) {
    gramian.values[k] = view.getFloat64(GRAMIAN_HEADER_BYTES + 8 * k, true);
  }
  return gramian;
}

function checkLength(embedding: Float32Array, dim: number): void {
  if (embedding.length !== dim) {
    throw new RangeError(`embedding has length ${embedding.length}, Gramian dimension is ${dim}`);
  }
}
