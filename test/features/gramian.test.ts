import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { test } from 'node:test';

import {
  GRAMIAN_HEADER_BYTES,
  addRankOne,
  computeGramian,
  createGramian,
  decodeGramian,
  encodeGramian,
  replaceItem,
} from '../../src/features/gramian.js';
import type { Gramian } from '../../src/features/gramian.js';
import { seededRandom } from '../helpers/services.js';

function randomEmbedding(dim: number, random: () => number): Float32Array {
  return Float32Array.from({ length: dim }, () => 2 * random() - 1);
}

/** The Gramian by its definition, entry by entry: G_jk = sum_i e_ij e_ik. */
function gramianByDefinition(vectors: readonly Float32Array[], dim: number): Float64Array {
  const values = new Float64Array(dim * dim);
  for (let j = 0; j < dim; j++) {
    for (let k = 0; k < dim; k++) {
      let sum = 0;
      for (const e of vectors) sum += e[j]! * e[k]!;
      values[j * dim + k] = sum;
    }
  }
  return values;
}

function relativeFrobeniusError(actual: Float64Array, expected: Float64Array): number {
  let difference = 0;
  let reference = 0;
  for (let k = 0; k < expected.length; k++) {
    difference += (actual[k]! - expected[k]!) ** 2;
    reference += expected[k]! ** 2;
  }
  return Math.sqrt(difference / reference);
}

function assertSymmetric(gramian: Gramian): void {
  const { dim, values } = gramian;
  for (let j = 0; j < dim; j++) {
    for (let k = 0; k < j; k++) assert.equal(values[j * dim + k], values[k * dim + j]);
  }
}

test('computeGramian matches the definition and counts the vectors', () => {
  const random = seededRandom(1);
  const dim = 7;
  const vectors = Array.from({ length: 40 }, () => randomEmbedding(dim, random));

  const gramian = computeGramian(vectors, dim);

  assert.equal(gramian.dim, dim);
  assert.equal(gramian.count, 40);
  // Tolerance 1e-14 relative: the two differ only in summation order over 40 float64 terms.
  assert.ok(relativeFrobeniusError(gramian.values, gramianByDefinition(vectors, dim)) < 1e-14);
  assertSymmetric(gramian);
});

test('computeGramian equals adding the same vectors in order with addRankOne, bit for bit', () => {
  const random = seededRandom(2);
  const dim = 9;
  const vectors = Array.from({ length: 25 }, () => randomEmbedding(dim, random));
  const incremental = createGramian(dim);

  for (const e of vectors) addRankOne(incremental, e, 1);

  // Exact equality: each rank-one product is exact and the per-entry summation order is the same.
  assert.deepEqual(incremental.values, computeGramian(vectors, dim).values);
  assert.equal(incremental.count, 25);
});

test('adds, changes and removes through replaceItem agree with a full recomputation', () => {
  const random = seededRandom(3);
  const dim = 16;
  const catalogue = new Map<string, Float32Array>();
  const gramian = createGramian(dim);

  for (let step = 0; step < 600; step++) {
    const id = `item-${Math.floor(random() * 80)}`;
    const previous = catalogue.get(id) ?? null;
    const remove = previous !== null && random() < 0.3;
    const next = remove ? null : randomEmbedding(dim, random);
    replaceItem(gramian, previous, next);
    if (next === null) catalogue.delete(id);
    else catalogue.set(id, next);
  }
  const recomputed = computeGramian(catalogue.values(), dim);

  assert.equal(gramian.count, catalogue.size);
  // Tolerance 1e-10 relative (Frobenius): each of the ~1000 rank-one updates is exact and only the
  // running sums round, so the drift is about 1000 * 2^-53 ~ 1e-13 of the largest partial sum.
  assert.ok(relativeFrobeniusError(gramian.values, recomputed.values) < 1e-10);
  assertSymmetric(gramian);
});

test('replaceItem with both sides null changes nothing', () => {
  const gramian = computeGramian([Float32Array.of(1, 2)], 2);
  const before = Float64Array.from(gramian.values);

  replaceItem(gramian, null, null);

  assert.deepEqual(gramian.values, before);
  assert.equal(gramian.count, 1);
});

test('removing from an empty Gramian and mismatched lengths throw without changing it', () => {
  const gramian = createGramian(3);

  assert.throws(() => addRankOne(gramian, Float32Array.of(1, 0, 0), -1), RangeError);
  assert.throws(() => addRankOne(gramian, Float32Array.of(1, 0), 1), RangeError);
  assert.throws(() => replaceItem(gramian, null, Float32Array.of(1, 0, 0, 0)), RangeError);
  assert.deepEqual(gramian.values, new Float64Array(9));
  assert.equal(gramian.count, 0);
});

test('encodeGramian writes the documented little-endian layout', () => {
  const gramian = computeGramian([Float32Array.of(1, 2, 3), Float32Array.of(-0.5, 0.25, 4)], 3);

  const bytes = encodeGramian(gramian);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

  assert.equal(bytes.byteLength, GRAMIAN_HEADER_BYTES + 8 * 9);
  assert.equal(view.getUint32(0, true), 1);
  assert.equal(view.getUint32(4, true), 3);
  assert.equal(view.getFloat64(8, true), 2);
  // Entry (1, 2) = 2 * 3 + 0.25 * 4 = 7, at byte 16 + 8 * (1 * 3 + 2); exact in float64.
  assert.equal(view.getFloat64(16 + 8 * 5, true), 7);
});

test('encode then decode round-trips exactly', () => {
  const random = seededRandom(4);
  const dim = 12;
  const gramian = computeGramian(
    Array.from({ length: 30 }, () => randomEmbedding(dim, random)),
    dim,
  );

  const decoded = decodeGramian(encodeGramian(gramian), dim);

  // Exact equality: float64 values are copied bit for bit.
  assert.deepEqual(decoded.values, gramian.values);
  assert.equal(decoded.count, gramian.count);
  assert.equal(decoded.dim, dim);
});

test('decodeGramian rejects a wrong dimension, length or version', () => {
  const bytes = encodeGramian(computeGramian([Float32Array.of(1, 2)], 2));

  assert.throws(() => decodeGramian(bytes, 3), /expected 88 for d = 3/);
  assert.throws(() => decodeGramian(bytes.subarray(0, bytes.length - 8), 2), RangeError);

  const otherVersion = Buffer.from(bytes);
  otherVersion.writeUInt32LE(2, 0);
  assert.throws(() => decodeGramian(otherVersion, 2), /format version 2/);
});
