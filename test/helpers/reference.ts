/**
 * A plain reference computation of the method-1 features, written apart from src/ on purpose:
 * float64 throughout, straight from the definitions in docs/features.md (decay from each event
 * to the read time, no anchors, no incremental updates). The integration tests compare the
 * worker's output against it.
 */
import type { InteractionEvent } from '../../src/events/types.js';

export interface ReferenceSettings {
  halfLivesMs: number[];
  historyMaxEvents: number;
  historyHalfLifeMs: number;
  thresholds: number[];
  weights: Record<string, number>;
}

function halfLifeName(ms: number): string {
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
  ] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

function cos(a: ArrayLike<number>, b: ArrayLike<number>): number | null {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return aa === 0 || bb === 0 ? null : ab / Math.sqrt(aa * bb);
}

function quantile(sorted: number[], q: number): number {
  const h = (sorted.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.ceil(h);
  return sorted[lo]! + (h - lo) * (sorted[hi]! - sorted[lo]!);
}

export function referenceFeatures(
  events: readonly InteractionEvent[],
  candidate: Float32Array,
  embeddings: ReadonlyMap<string, Float32Array>,
  atMs: number,
  settings: ReferenceSettings,
): Record<string, number | null> {
  const features: Record<string, number | null> = {};
  const dim = candidate.length;

  for (const [tag, sign] of [
    ['pos', 1],
    ['neg', -1],
  ] as const) {
    for (const halfLifeMs of settings.halfLivesMs) {
      const sum = new Float64Array(dim);
      let weight = 0;
      for (const event of events) {
        const w = settings.weights[event.type]! * (event.value ?? 1);
        if (Math.sign(w) !== sign) continue;
        const e = embeddings.get(event.item)!;
        const decayed = Math.abs(w) * 2 ** (-(atMs - event.ts) / halfLifeMs);
        weight += decayed;
        for (let k = 0; k < dim; k++) sum[k]! += decayed * e[k]!;
      }
      const base = `agg.${tag}.${halfLifeName(halfLifeMs)}`;
      features[`${base}.cos`] = weight > 0 ? cos(sum, candidate) : null;
      features[`${base}.weight`] = weight;
    }
  }

  const newest = [...events]
    .sort(
      (a, b) =>
        a.ts - b.ts ||
        (a.item < b.item ? -1 : a.item > b.item ? 1 : 0) ||
        (a.type < b.type ? -1 : 1),
    )
    .slice(-settings.historyMaxEvents);
  for (const [tag, sign] of [
    ['pos', 1],
    ['neg', -1],
  ] as const) {
    const samples = newest
      .filter((event) => Math.sign(settings.weights[event.type]!) === sign)
      .map((event) => ({
        c: cos(embeddings.get(event.item)!, candidate)!,
        w:
          Math.abs(settings.weights[event.type]! * (event.value ?? 1)) *
          2 ** (-(atMs - event.ts) / settings.historyHalfLifeMs),
      }));
    const base = `agg.hist.${tag}`;
    const sorted = samples.map((s) => s.c).sort((a, b) => a - b);
    const totalWeight = samples.reduce((acc, s) => acc + s.w, 0);
    features[`${base}.mean`] =
      samples.length === 0 ? null : samples.reduce((acc, s) => acc + s.w * s.c, 0) / totalWeight;
    features[`${base}.max`] = samples.length === 0 ? null : sorted[sorted.length - 1]!;
    features[`${base}.p50`] = samples.length === 0 ? null : quantile(sorted, 0.5);
    features[`${base}.p90`] = samples.length === 0 ? null : quantile(sorted, 0.9);
    for (const threshold of settings.thresholds) {
      features[`${base}.share_above_${threshold}`] =
        samples.length === 0 ? null : sorted.filter((c) => c > threshold).length / sorted.length;
    }
    features[`${base}.count`] = samples.length;
  }
  return features;
}
