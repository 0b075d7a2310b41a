import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AggregateLayout } from '../../src/features/aggregate.js';
import {
  addToAggregates,
  advanceAnchor,
  emptyAggregates,
  slotIndex,
  slotSum,
} from '../../src/features/aggregate.js';

const HOUR_MS = 3_600_000;
const layout: AggregateLayout = { dim: 3, halfLivesMs: [HOUR_MS, 24 * HOUR_MS] };

interface Event {
  tsMs: number;
  weight: number;
  embedding: Float32Array;
}

const events: Event[] = [
  { tsMs: 0, weight: 1, embedding: Float32Array.of(1, 0, 0) },
  { tsMs: 2 * HOUR_MS, weight: 3, embedding: Float32Array.of(0, 1, 0) },
  { tsMs: 5 * HOUR_MS, weight: 0.5, embedding: Float32Array.of(0, 0, 1) },
  { tsMs: 5.5 * HOUR_MS, weight: 2, embedding: Float32Array.of(1, 1, 0) },
];

function applyInOrder(order: readonly Event[]) {
  const agg = emptyAggregates(layout);
  for (const event of order) {
    advanceAnchor(agg, layout, event.tsMs);
    addToAggregates(agg, layout, 'positive', event.weight, event.tsMs, event.embedding);
  }
  return agg;
}

/** The closed form: sum_e w_e 2^(-(T - t_e)/h) e, with T the newest event time. */
function closedForm(order: readonly Event[], halfLifeMs: number) {
  const anchorMs = Math.max(...order.map((event) => event.tsMs));
  const sum = [0, 0, 0];
  let weight = 0;
  for (const event of order) {
    const factor = event.weight * 2 ** (-(anchorMs - event.tsMs) / halfLifeMs);
    weight += factor;
    for (let k = 0; k < 3; k++) sum[k]! += factor * event.embedding[k]!;
  }
  return { sum, weight };
}

// float32 sums: relative rounding of a few ulps (2^-24 ≈ 6e-8) per operation; 1e-6 is ample.
const TOLERANCE = 1e-6;

function assertMatchesClosedForm(order: readonly Event[]) {
  const agg = applyInOrder(order);
  layout.halfLivesMs.forEach((halfLifeMs, h) => {
    const expected = closedForm(events, halfLifeMs);
    const slot = slotIndex(layout, 'positive', h);
    assert.ok(Math.abs(agg.weights[slot]! - expected.weight) <= TOLERANCE * expected.weight);
    const sum = slotSum(agg, layout, slot);
    for (let k = 0; k < 3; k++) {
      assert.ok(
        Math.abs(sum[k]! - expected.sum[k]!) <= TOLERANCE * expected.weight,
        `component ${k}`,
      );
    }
  });
  assert.equal(agg.anchorMs, 5.5 * HOUR_MS);
}

test('decayed sums in time order equal the closed form', () => {
  assertMatchesClosedForm(events);
});

test('late events are added with their decay, so any arrival order gives the closed form', () => {
  const permutations = [
    [3, 2, 1, 0],
    [1, 3, 0, 2],
    [2, 0, 3, 1],
  ];
  for (const permutation of permutations)
    assertMatchesClosedForm(permutation.map((i) => events[i]!));
});

test('the negative polarity is kept apart from the positive one', () => {
  const agg = emptyAggregates(layout);
  advanceAnchor(agg, layout, 0);
  addToAggregates(agg, layout, 'negative', 3, 0, Float32Array.of(0, 0, 2));
  assert.equal(agg.weights[slotIndex(layout, 'positive', 0)], 0);
  assert.equal(agg.weights[slotIndex(layout, 'negative', 0)], 3);
  assert.deepEqual([...slotSum(agg, layout, slotIndex(layout, 'negative', 1))], [0, 0, 6]);
});

test('one half-life later, the weight has exactly halved', () => {
  const agg = emptyAggregates(layout);
  advanceAnchor(agg, layout, 0);
  addToAggregates(agg, layout, 'positive', 1, 0, Float32Array.of(1, 0, 0));
  advanceAnchor(agg, layout, HOUR_MS);
  assert.equal(agg.weights[slotIndex(layout, 'positive', 0)], 0.5);
  assert.equal(agg.weights[slotIndex(layout, 'positive', 1)], 2 ** (-1 / 24));
});
