/**
 * Ranking metrics and bootstrap intervals against values worked out by hand or computed by
 * brute force (every tie order enumerated, every pair compared), with the tolerance stated.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  clusterBootstrap,
  quantile,
  rankOutcome,
  seededRandom,
} from '../../src/offline/metrics.js';

/** Sums of a few float64 terms: exact up to 1e-12. */
const EXACT = 1e-12;

test('AUC of a hand-worked query: one negative above, one tied, two below (one null)', () => {
  // positive 0.5; negatives 0.9 (above), 0.5 (tie, half credit), 0.3 (below), null (below).
  // AUC = (2 + 0.5) / 4 = 0.625.
  const outcome = rankOutcome(0.5, [0.9, 0.5, 0.3, Number.NaN], 10);
  assert.ok(Math.abs(outcome.auc - 0.625) < EXACT);
});

test('NDCG@10 and Recall@10 by hand: rank 3 gives 1 / log2(4) = 0.5', () => {
  const outcome = rankOutcome(0.5, [0.9, 0.8, 0.1, 0.2], 10);
  assert.ok(Math.abs(outcome.ndcg - 0.5) < EXACT);
  assert.equal(outcome.recall, 1);
});

test('a positive ranked 11th is outside the top 10: NDCG@10 = Recall@10 = 0', () => {
  const negatives = Array.from({ length: 10 }, (_, i) => 1 + i);
  const outcome = rankOutcome(0, [...negatives, -1], 10);
  assert.equal(outcome.ndcg, 0);
  assert.equal(outcome.recall, 0);
  assert.ok(Math.abs(outcome.auc - 1 / 11) < EXACT);
});

test('ties at the cutoff: expectation over every order of the tied items, enumerated', () => {
  // 8 negatives above, 3 tied with the positive: the positive is at rank 9, 10, 11 or 12, each
  // with probability 1/4. By hand: NDCG = (1/log2(10) + 1/log2(11)) / 4, Recall = 2/4.
  const negatives = [...Array.from({ length: 8 }, () => 2), 1, 1, 1, 0];
  const outcome = rankOutcome(1, negatives, 10);
  const expectedNdcg = (1 / Math.log2(10) + 1 / Math.log2(11)) / 4;
  assert.ok(Math.abs(outcome.ndcg - expectedNdcg) < EXACT);
  assert.ok(Math.abs(outcome.recall - 0.5) < EXACT);
  assert.deepEqual(outcome, bruteForce(1, negatives, 10));
});

test('random queries with many ties agree with brute force (AUC by pairs, NDCG by tie orders)', () => {
  const random = seededRandom(42);
  for (let trial = 0; trial < 200; trial++) {
    const positive = Math.floor(random() * 4);
    const negatives = Array.from({ length: 12 }, () =>
      random() < 0.1 ? Number.NaN : Math.floor(random() * 4),
    );
    const k = 1 + Math.floor(random() * 12);
    const expected = bruteForce(positive, negatives, k);
    const actual = rankOutcome(positive, negatives, k);
    for (const metric of ['auc', 'ndcg', 'recall'] as const) {
      assert.ok(Math.abs(actual[metric] - expected[metric]) < EXACT, `${metric} trial ${trial}`);
    }
  }
});

test('a null positive ties with null negatives and ranks below every number', () => {
  const outcome = rankOutcome(Number.NaN, [Number.NaN, 0.1, -5], 10);
  // Below both numbers, tied with the null: AUC = 0.5 / 3.
  assert.ok(Math.abs(outcome.auc - 0.5 / 3) < EXACT);
  // Rank 3 or 4, each with probability 1/2.
  assert.ok(Math.abs(outcome.ndcg - (1 / Math.log2(4) + 1 / Math.log2(5)) / 2) < EXACT);
});

test('quantile uses NumPy linear interpolation (np.percentile([1,2,3,4],[25,90]) = [1.75, 3.7])', () => {
  const sorted = Float64Array.from([1, 2, 3, 4]);
  assert.ok(Math.abs(quantile(sorted, 0.25) - 1.75) < EXACT);
  assert.ok(Math.abs(quantile(sorted, 0.9) - 3.7) < EXACT);
});

test('bootstrap: the value is the mean over queries; equal values give a zero-width interval', () => {
  const values = Float64Array.from([0.2, 0.4, 0.9, 0.5]);
  const clusters = Int32Array.from([0, 0, 1, 2]);
  const interval = clusterBootstrap(values, clusters, 3, { resamples: 200, seed: 1 });
  assert.ok(Math.abs(interval.value - 0.5) < EXACT);
  assert.ok(interval.low <= interval.value && interval.value <= interval.high);

  const flat = clusterBootstrap(Float64Array.from([0.3, 0.3, 0.3]), Int32Array.from([0, 1, 2]), 3, {
    resamples: 100,
    seed: 1,
  });
  assert.deepEqual([flat.low, flat.high], [0.3, 0.3]);
});

test('bootstrap over one-query clusters matches the normal interval mean ± 1.96 s / sqrt(n)', () => {
  const random = seededRandom(7);
  const n = 400;
  const values = Float64Array.from({ length: n }, () => random());
  const clusters = Int32Array.from({ length: n }, (_, i) => i);
  const interval = clusterBootstrap(values, clusters, n, { resamples: 4000, seed: 3 });

  const mean = values.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  const half = (1.96 * sd) / Math.sqrt(n);
  // The percentile bootstrap's half-width has a Monte Carlo error of a few percent at 4000
  // resamples; 10% of the normal half-width is the bound.
  assert.ok(Math.abs(interval.high - interval.low - 2 * half) < 0.2 * half);
  assert.ok(Math.abs((interval.low + interval.high) / 2 - mean) < 0.1 * half);
});

test('bootstrap resamples users, not queries: one heavy user widens the interval', () => {
  // 20 users; user 0 has 100 queries of value 1, the others one query of value 0 each.
  const values = Float64Array.from([...Array(100).fill(1), ...Array(19).fill(0)]);
  const clusters = Int32Array.from([
    ...Array(100).fill(0),
    ...Array.from({ length: 19 }, (_, i) => i + 1),
  ]);
  const byUser = clusterBootstrap(values, clusters, 20, { resamples: 1000, seed: 5 });
  const byQuery = clusterBootstrap(
    values,
    Int32Array.from(values, (_, i) => i),
    values.length,
    {
      resamples: 1000,
      seed: 5,
    },
  );
  assert.ok(byUser.high - byUser.low > 3 * (byQuery.high - byQuery.low));
});

/** Mean over every order of the tied items of the top-k gains, and AUC by comparing pairs. */
function bruteForce(positive: number, negatives: number[], k: number) {
  const key = (x: number) => (Number.isNaN(x) ? Number.NEGATIVE_INFINITY : x);
  let pairs = 0;
  for (const negative of negatives) {
    if (key(negative) < key(positive)) pairs += 1;
    else if (key(negative) === key(positive)) pairs += 0.5;
  }
  const above = negatives.filter((x) => key(x) > key(positive)).length;
  const tied = negatives.filter((x) => key(x) === key(positive)).length;
  // The positive takes each of the tied+1 positions in the tie block with equal probability.
  let ndcg = 0;
  let recall = 0;
  for (let position = 0; position <= tied; position++) {
    const rank = 1 + above + position;
    if (rank <= k) {
      ndcg += 1 / Math.log2(rank + 1);
      recall += 1;
    }
  }
  return { auc: pairs / negatives.length, ndcg: ndcg / (tied + 1), recall: recall / (tied + 1) };
}
