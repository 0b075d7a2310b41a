import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CatalogueError } from '../../src/items/errors.js';
import type { CatalogueErrorCode } from '../../src/items/errors.js';
import type { Catalogue } from '../../src/items/loaders.js';
import {
  catalogueMean,
  parseEmbeddingValue,
  transformCatalogue,
  transformEmbedding,
} from '../../src/items/transform.js';

// Expected values below are computed in float64 from these plain numbers, independently of the
// code under test; float32 storage limits agreement to about 1e-7 relative, so 1e-6 is the
// tolerance throughout.
const TOLERANCE = 1e-6;
const ROWS = [
  [1, 0.5, -2, 4],
  [0.25, 3, 1.5, -1],
  [-1, -0.75, 0.125, 2],
  [2, 2, -4, 0.5],
  [3, -1, 1, 1],
];
const IDS = ['a', 'b', 'c', 'd', 'e'];
const DIM = 4;

function catalogue(rows: readonly (readonly number[])[] = ROWS, ids = IDS): Catalogue {
  return { dim: rows[0]!.length, ids: [...ids], vectors: Float32Array.from(rows.flat()) };
}

function columnMeans(rows: readonly (readonly number[])[]): number[] {
  return rows[0]!.map((_, j) => rows.reduce((sum, row) => sum + row[j]!, 0) / rows.length);
}

function rowOf(c: Catalogue, row: number): number[] {
  return [...c.vectors.subarray(row * c.dim, (row + 1) * c.dim)];
}

function length(values: readonly number[]): number {
  return Math.sqrt(values.reduce((sum, x) => sum + x * x, 0));
}

function assertClose(actual: readonly number[], expected: readonly number[], what: string): void {
  assert.equal(actual.length, expected.length, what);
  actual.forEach((x, i) => {
    assert.ok(Math.abs(x - expected[i]!) <= TOLERANCE, `${what}[${i}]: ${x} vs ${expected[i]}`);
  });
}

function throwsWith(fn: () => unknown, code: CatalogueErrorCode, ...fragments: string[]): void {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof CatalogueError, `expected a CatalogueError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const fragment of fragments) {
      assert.ok(err.message.includes(fragment), `"${err.message}" lacks "${fragment}"`);
    }
    return true;
  });
}

describe('catalogueMean', () => {
  it('is the column mean', () => {
    assertClose([...catalogueMean(catalogue())], columnMeans(ROWS), 'mean');
  });
});

describe('transformCatalogue', () => {
  it('centring subtracts the mean, leaving columns of mean zero', () => {
    const input = catalogue();
    const { catalogue: centred, mean } = transformCatalogue(input, {
      center: true,
      normalize: false,
    });
    const expectedMean = columnMeans(ROWS);

    assertClose([...mean!], expectedMean, 'mean');
    ROWS.forEach((row, r) => {
      const expected = row.map((x, j) => x - expectedMean[j]!);
      assertClose(rowOf(centred, r), expected, `row ${r}`);
    });
    const rows = IDS.map((_, r) => rowOf(centred, r));
    assertClose(columnMeans(rows), [0, 0, 0, 0], 'column means after centring');
  });

  it('normalising alone gives unit rows in the same direction, and no mean', () => {
    const { catalogue: unit, mean } = transformCatalogue(catalogue(), {
      center: false,
      normalize: true,
    });

    assert.equal(mean, null);
    ROWS.forEach((row, r) => {
      const expected = row.map((x) => x / length(row));
      assertClose(rowOf(unit, r), expected, `row ${r}`);
      assert.ok(Math.abs(length(rowOf(unit, r)) - 1) <= TOLERANCE);
    });
  });

  it('centring then normalising gives unit rows along (x - mean)', () => {
    // Each row is scaled by its own factor, so the columns no longer average to zero once
    // normalised; mean zero is a property of centring alone (tested above).
    const { catalogue: out } = transformCatalogue(catalogue(), { center: true, normalize: true });
    const mean = columnMeans(ROWS);

    ROWS.forEach((row, r) => {
      const residual = row.map((x, j) => x - mean[j]!);
      const expected = residual.map((x) => x / length(residual));
      assertClose(rowOf(out, r), expected, `row ${r}`);
      assert.ok(Math.abs(length(rowOf(out, r)) - 1) <= TOLERANCE);
    });
  });

  it('leaves its input alone and copies the ids', () => {
    const input = catalogue();
    const before = Float32Array.from(input.vectors);
    const { catalogue: out } = transformCatalogue(input, { center: true, normalize: true });

    assert.deepEqual(input.vectors, before);
    assert.deepEqual(out.ids, IDS);
    assert.notEqual(out.ids, input.ids);
    assert.equal(out.dim, DIM);
  });

  it('an item equal to the mean has no direction once centred', () => {
    const rows = [
      [1, 2, 3],
      [3, 2, 1],
      [2, 2, 2],
    ];
    throwsWith(
      () => transformCatalogue(catalogue(rows, ['x', 'y', 'z']), { center: true, normalize: true }),
      'ITEMS_ZERO_VECTOR',
      'row 2, id "z"',
    );
  });

  it('rejects a catalogue whose vectors do not match ids x dim', () => {
    const broken = { dim: 4, ids: ['a', 'b'], vectors: new Float32Array(7) };
    throwsWith(
      () => transformCatalogue(broken, { center: false, normalize: true }),
      'ITEMS_FORMAT',
    );
  });
});

describe('transformEmbedding', () => {
  const e = Float32Array.from([3, 0, -4, 0]);
  const mean = Float32Array.from([1, 1, 1, 1]);

  it('returns a new array and leaves its input alone', () => {
    const out = transformEmbedding(e, { mean: null, normalize: false }, 'item-1');
    assert.notEqual(out, e);
    assert.deepEqual(out, e);

    const unit = transformEmbedding(e, { mean: null, normalize: true });
    assertClose([...unit], [0.6, 0, -0.8, 0], 'normalised');
    assert.deepEqual([...e], [3, 0, -4, 0]);
  });

  it('subtracts the mean, then normalises', () => {
    const residual = [2, -1, -5, -1];
    const centred = transformEmbedding(e, { mean, normalize: false });
    assertClose([...centred], residual, 'centred');

    const out = transformEmbedding(e, { mean, normalize: true });
    assertClose(
      [...out],
      residual.map((x) => x / length(residual)),
      'centred and normalised',
    );
  });

  it('an item equal to, or within float32 rounding of, the mean is a zero vector', () => {
    throwsWith(
      () => transformEmbedding(mean, { mean, normalize: true }, 'item-7'),
      'ITEMS_ZERO_VECTOR',
      'id "item-7"',
      'minus the mean',
    );
    const nearly = Float32Array.from([1, 1, 1, 1 + 2 ** -20]);
    throwsWith(() => transformEmbedding(nearly, { mean, normalize: false }), 'ITEMS_ZERO_VECTOR');

    const apart = Float32Array.from([1, 1, 1, 1.001]);
    const out = transformEmbedding(apart, { mean, normalize: true });
    assertClose([...out], [0, 0, 0, 1], 'small but real residual');
  });

  it('a zero input, a non-finite input, a mean of another length', () => {
    throwsWith(
      () => transformEmbedding(new Float32Array(4), { mean: null, normalize: true }, 'z'),
      'ITEMS_ZERO_VECTOR',
      'id "z"',
    );
    throwsWith(
      () => transformEmbedding(Float32Array.from([1, NaN, 0, 0]), { mean, normalize: true }, 'n'),
      'ITEMS_NON_FINITE',
      'id "n"',
      'component 1',
    );
    throwsWith(
      () => transformEmbedding(e, { mean: new Float32Array(3), normalize: true }, 'd'),
      'ITEMS_DIMENSION',
      'id "d"',
    );
  });
});

describe('parseEmbeddingValue', () => {
  const values = [0.5, -1.25, 3, 0.125];
  const raw = Buffer.from(Float32Array.from(values).buffer);

  it('reads raw little-endian float32, aligned or not', () => {
    assert.deepEqual([...parseEmbeddingValue(raw, 4)], values);
    const unaligned = Buffer.concat([Buffer.from([7]), raw]).subarray(1);
    assert.deepEqual([...parseEmbeddingValue(unaligned, null)], values);
  });

  it('reads raw bytes whose first byte happens to be "["', () => {
    const bytes = Buffer.from(raw);
    bytes[0] = 0x5b;
    const expected = [bytes.readFloatLE(0), ...values.slice(1)];
    assert.deepEqual([...parseEmbeddingValue(bytes, 4)], expected);
  });

  it('reads a JSON array, surrounded by whitespace', () => {
    const json = Buffer.from(' [0.5, -1.25, 3, 0.125]\n');
    assert.deepEqual([...parseEmbeddingValue(json, 4)], values);
    const rounded = parseEmbeddingValue(Buffer.from('[0.1, 0.2]'), null);
    assert.deepEqual([...rounded], [0.1, 0.2].map(Math.fround));
  });

  it('rejects bad values with a code and the id', () => {
    const nan = Buffer.from(Float32Array.from([1, NaN, 2, 3]).buffer);
    const cases: [Buffer, number | null, CatalogueErrorCode, string][] = [
      [Buffer.alloc(0), null, 'ITEMS_FORMAT', 'empty'],
      [Buffer.from('abcdefg'), null, 'ITEMS_FORMAT', '7 bytes'],
      [Buffer.from('[1, 2, 3,]'), null, 'ITEMS_FORMAT', 'not valid JSON'],
      [Buffer.from('[1, 2, 3, 4, 5, '), 4, 'ITEMS_FORMAT', 'truncated JSON'],
      [Buffer.from('{"v": [1, 2]}'), null, 'ITEMS_FORMAT', 'JSON array'],
      [Buffer.from('[]'), null, 'ITEMS_FORMAT', 'non-empty'],
      [Buffer.from('[1, "2"]'), null, 'ITEMS_FORMAT', 'component 1'],
      [Buffer.from('[1, 2, 3]'), 4, 'ITEMS_DIMENSION', '3 components, expected 4'],
      [raw, 3, 'ITEMS_DIMENSION', '4 components, expected 3'],
      [nan, null, 'ITEMS_NON_FINITE', 'component 1 is NaN'],
      [Buffer.from('[1, 1e39]'), null, 'ITEMS_NON_FINITE', 'component 1 is Infinity'],
      [Buffer.from('[0, 0, 0]'), 3, 'ITEMS_ZERO_VECTOR', 'zero vector'],
      [Buffer.alloc(16), 4, 'ITEMS_ZERO_VECTOR', 'zero vector'],
    ];
    for (const [bytes, dim, code, fragment] of cases) {
      throwsWith(() => parseEmbeddingValue(bytes, dim, 'movie-9'), code, 'id "movie-9"', fragment);
    }
  });
});
