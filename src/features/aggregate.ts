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
 *
 * Deferred decay. Multiplying every row on each re-anchor costs 2 · H · d products per event,
 * three times the cost of adding the event itself. Each row therefore carries a scale: the
 * decayed sum of slot s is `scales[s] · row s`. Re-anchoring multiplies the 2 · H scales and
 * weights; an event is added to its row divided by the row's scale. A row is folded back (row
 * times scale, scale 1) whenever its scale falls below SETTLE_BELOW, so that rows never grow by
 * more than 2^30 and stay far inside float32's range. Float32 rounding is relative, so the
 * deferred form carries the same precision as the eager one. Rows are stored with their scales,
 * unsettled, so a state read back from Redis goes on exactly as the one held in memory would
 * have: the result is a function of the events alone, not of where the flushes fell. It is the
 * landmark form of exponential decay in Cormode, Shkapenyuk, Srivastava and Xu, "Forward Decay:
 * A Practical Time Decay Model for Streaming Systems" (ICDE 2009), with the landmark moved
 * whenever the numbers would grow too large.
 */
import type { Polarity } from '../events/types.js';
import { decayFactor } from './decay.js';
import type { RowArena } from './row-arena.js';

export const POLARITIES: readonly Polarity[] = ['positive', 'negative'];

/** A row whose scale falls below this is folded back at once. */
const SETTLE_BELOW = 2 ** -30;

export interface AggregateLayout {
  readonly dim: number;
  readonly halfLivesMs: readonly number[];
  /** Where the worker keeps the sums of the states it holds (row-arena.ts); none elsewhere. */
  readonly arena?: RowArena | null;
}

export interface Aggregates {
  /** Newest event time folded in, epoch ms; null before the first event. */
  anchorMs: number | null;
  /**
   * Row-major (polarity, half-life) x dim, float32 as stored in Redis. Row s times `scales[s]`
   * is the decayed sum: read values through `slotSum`, directions through `slotRow`.
   */
  readonly sums: Float32Array;
  /** Per (polarity, half-life): the decay not yet multiplied into the row; 1 when settled. */
  readonly scales: Float64Array;
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
  const slots = slotCount(layout);
  const floats = slots * layout.dim;
  const arena = layout.arena?.slotFloats === floats ? layout.arena : null;
  return {
    anchorMs: null,
    sums: arena?.allocate() ?? new Float32Array(floats),
    scales: new Float64Array(slots).fill(1),
    weights: new Float64Array(slots),
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
  const halfLives = layout.halfLivesMs.length;
  for (let h = 0; h < halfLives; h++) {
    const factor = decayFactor(ageMs, layout.halfLivesMs[h]!);
    for (let slot = h; slot < 2 * halfLives; slot += halfLives) {
      agg.weights[slot]! *= factor;
      agg.scales[slot]! *= factor;
      if (agg.scales[slot]! < SETTLE_BELOW) settleSlot(agg, layout.dim, slot);
    }
  }
  agg.anchorMs = tsMs;
}

/**
 * Adds one event's embedding with its weight, decayed from its own time to the anchor. The
 * caller advances the anchor first, so `tsMs` is never after it. The rows of one polarity are
 * adjacent; they are updated three per pass over the embedding, which at d = 384 is about a
 * third faster than one pass per row (V8 vectorises neither). Sums held in the layout's arena
 * (the worker's) go to its SIMD kernel instead, which gives the same bits (row-arena.ts).
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
  const first = slotIndex(layout, polarity, 0);
  const halfLives = layout.halfLivesMs.length;

  let h = 0;
  for (; h + 3 <= halfLives; h += 3) {
    const w0 = addWeight(agg, layout, first + h, weight, ageMs);
    const w1 = addWeight(agg, layout, first + h + 1, weight, ageMs);
    const w2 = addWeight(agg, layout, first + h + 2, weight, ageMs);
    if (layout.arena?.addRows(agg.sums, first + h, 3, embedding, w0, w1, w2)) continue;
    addThreeRows(agg.sums, (first + h) * layout.dim, layout.dim, w0, w1, w2, embedding);
  }
  for (; h < halfLives; h++) {
    const w = addWeight(agg, layout, first + h, weight, ageMs);
    if (layout.arena?.addRows(agg.sums, first + h, 1, embedding, w)) continue;
    addRow(agg.sums, (first + h) * layout.dim, layout.dim, w, embedding);
  }
}

/** Adds the event's decayed weight to a slot; returns what its row takes (over the scale). */
function addWeight(
  agg: Aggregates,
  layout: AggregateLayout,
  slot: number,
  weight: number,
  ageMs: number,
): number {
  const halfLife = layout.halfLivesMs[slot % layout.halfLivesMs.length]!;
  const decayedWeight = weight * decayFactor(ageMs, halfLife);
  agg.weights[slot]! += decayedWeight;
  return decayedWeight / agg.scales[slot]!;
}

/**
 * Rows r, r + 1, r + 2 (from `offset`, `dim` apart) += w0 x, w1 x, w2 x, in float32 arithmetic:
 * the weight rounded to float32, the product rounded, the sum rounded (by the store). The
 * arena's kernel does the same four floats at a time, and the two agree bit for bit
 * (row-arena.ts says why Math.fround gives exactly float32's operations).
 */
function addThreeRows(
  sums: Float32Array,
  offset: number,
  dim: number,
  w0: number,
  w1: number,
  w2: number,
  x: Float32Array,
): void {
  const o1 = offset + dim;
  const o2 = o1 + dim;
  const f0 = Math.fround(w0);
  const f1 = Math.fround(w1);
  const f2 = Math.fround(w2);
  for (let k = 0; k < dim; k++) {
    const value = x[k]!;
    sums[offset + k]! += Math.fround(f0 * value);
    sums[o1 + k]! += Math.fround(f1 * value);
    sums[o2 + k]! += Math.fround(f2 * value);
  }
}

function addRow(sums: Float32Array, offset: number, dim: number, w: number, x: Float32Array): void {
  const f = Math.fround(w);
  for (let k = 0; k < dim; k++) sums[offset + k]! += Math.fround(f * x[k]!);
}

/** The decayed sum of one slot: a new array, the row times its deferred decay. */
export function slotSum(agg: Aggregates, layout: AggregateLayout, slot: number): Float32Array {
  const sum = slotRow(agg, layout, slot).slice();
  const scale = agg.scales[slot]!;
  if (scale !== 1) for (let k = 0; k < sum.length; k++) sum[k]! *= scale;
  return sum;
}

/**
 * One slot's row as a view (no copy): the decayed sum up to its positive scale, so it has the
 * sum's direction, which is all a cosine needs.
 */
export function slotRow(agg: Aggregates, layout: AggregateLayout, slot: number): Float32Array {
  return agg.sums.subarray(slot * layout.dim, (slot + 1) * layout.dim);
}

function settleSlot(agg: Aggregates, dim: number, slot: number): void {
  const scale = agg.scales[slot]!;
  if (scale === 1) return;

  const sums = agg.sums;
  const end = (slot + 1) * dim;
  for (let k = slot * dim; k < end; k++) sums[k]! *= scale;
  agg.scales[slot] = 1;
}
