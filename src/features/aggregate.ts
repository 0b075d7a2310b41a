/**
 * Method 1 state: for each polarity and half-life, the exponentially decayed sum of the item
 * embeddings a user engaged with and the decayed sum of the event weights, both anchored at the
 * user's newest event time. The decayed average is sum / weight; its cosine with a candidate
 * equals the cosine of the sum, so the weight is only needed to report how much signal there is.
 *
 * Re-anchoring to a later time T' multiplies everything by 2^(-(T' - T) / h); a late event of
 * time t ≤ T is added with weight · 2^(-(T - t) / h). Both follow from 2^(-(a+b)/h) =
 * 2^(-a/h) · 2^(-b/h), so the state after a set of events is the same for every arrival order
 * (up to float rounding).
 */
import type { Polarity } from '../events/types.js';
import { decayFactor } from './decay.js';

export const POLARITIES: readonly Polarity[] = ['positive', 'negative'];

export interface AggregateLayout {
  readonly dim: number;
  readonly halfLivesMs: readonly number[];
}

export interface Aggregates {
  /** Newest event time folded in, epoch ms; null before the first event. */
  anchorMs: number | null;
  /** Row-major (polarity, half-life) x dim; float32 as stored in Redis. */
  readonly sums: Float32Array;
  /** Per (polarity, half-life): decayed weight at the anchor. */
  readonly weights: Float64Array;
}

export function slotIndex(layout: AggregateLayout, polarity: Polarity, halfLife: number): number {
  return (polarity === 'positive' ? 0 : 1) * layout.halfLivesMs.length + halfLife;
}

export function slotCount(layout: AggregateLayout): number {
  return POLARITIES.length * layout.halfLivesMs.length;
}

export function emptyAggregates(layout: AggregateLayout): Aggregates {
  return {
    anchorMs: null,
    sums: new Float32Array(slotCount(layout) * layout.dim),
    weights: new Float64Array(slotCount(layout)),
  };
}

/** Moves the anchor forward to `tsMs` when it is newer, decaying every sum and weight. */
export function advanceAnchor(agg: Aggregates, layout: AggregateLayout, tsMs: number): void {
  if (agg.anchorMs === null) {
    agg.anchorMs = tsMs;
    return;
  }
  if (tsMs <= agg.anchorMs) return;

  const ageMs = tsMs - agg.anchorMs;
  for (let h = 0; h < layout.halfLivesMs.length; h++) {
    const factor = decayFactor(ageMs, layout.halfLivesMs[h]!);
    for (const polarity of POLARITIES) {
      const slot = slotIndex(layout, polarity, h);
      agg.weights[slot]! *= factor;
      scaleRow(agg.sums, slot * layout.dim, layout.dim, factor);
    }
  }
  agg.anchorMs = tsMs;
}

/**
 * Adds one event's embedding with its weight, decayed from its own time to the anchor. The
 * caller advances the anchor first, so `tsMs` is never after it.
 */
export function addToAggregates(
  agg: Aggregates,
  layout: AggregateLayout,
  polarity: Polarity,
  weight: number,
  tsMs: number,
  embedding: Float32Array,
): void {
  const ageMs = (agg.anchorMs ?? tsMs) - tsMs;

  for (let h = 0; h < layout.halfLivesMs.length; h++) {
    const decayedWeight = weight * decayFactor(ageMs, layout.halfLivesMs[h]!);
    const slot = slotIndex(layout, polarity, h);
    agg.weights[slot]! += decayedWeight;

    const offset = slot * layout.dim;
    for (let k = 0; k < layout.dim; k++) agg.sums[offset + k]! += decayedWeight * embedding[k]!;
  }
}

/** The decayed sum of one slot, as a view (no copy). */
export function slotSum(agg: Aggregates, layout: AggregateLayout, slot: number): Float32Array {
  return agg.sums.subarray(slot * layout.dim, (slot + 1) * layout.dim);
}

function scaleRow(values: Float32Array, offset: number, length: number, factor: number): void {
  for (let k = 0; k < length; k++) values[offset + k]! *= factor;
}
