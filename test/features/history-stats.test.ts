import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cosineStats, percentile } from '../../src/features/history-stats.js';

test('percentiles match NumPy linear interpolation (values from np.percentile)', () => {
  const sorted = [0.1, 0.2, 0.4, 0.8];
  // np.percentile([0.1, 0.2, 0.4, 0.8], [50, 90]) = [0.3, 0.68]; exact up to 1e-12.
  assert.ok(Math.abs(percentile(sorted, 0.5) - 0.3) < 1e-12);
  assert.ok(Math.abs(percentile(sorted, 0.9) - 0.68) < 1e-12);
  assert.equal(percentile([0.7], 0.9), 0.7);
});

test('cosine statistics: weighted mean, max, shares above thresholds', () => {
  const stats = cosineStats(
    [
      { cosine: 0.5, weight: 1 },
      { cosine: -0.5, weight: 3 },
      { cosine: 0.9, weight: 0 },
    ],
    [0, 0.6],
  );
  // mean = (0.5 * 1 - 0.5 * 3 + 0.9 * 0) / 4 = -0.25
  assert.ok(Math.abs(stats.mean! + 0.25) < 1e-12);
  assert.equal(stats.max, 0.9);
  assert.equal(stats.p50, 0.5);
  assert.deepEqual(stats.shareAbove, [2 / 3, 1 / 3]);
  assert.equal(stats.count, 3);
});

test('no history gives nulls, not zeros', () => {
  const stats = cosineStats([], [0.3]);
  assert.equal(stats.mean, null);
  assert.equal(stats.max, null);
  assert.deepEqual(stats.shareAbove, [null]);
  assert.equal(stats.count, 0);
});
