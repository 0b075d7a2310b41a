/**
 * The named features of one (user, candidate) pair, computed from a user state exactly as the
 * online reader, the backfill and the evaluation all see it. docs/features.md describes each.
 */
import { formatDuration } from '../config/duration.js';
import type { Polarity, Signals } from '../events/types.js';
import type { AggregateLayout } from '../features/aggregate.js';
import { POLARITIES, slotIndex, slotRow } from '../features/aggregate.js';
import { decayFactor } from '../features/decay.js';
import type { CosineSample } from '../features/history-stats.js';
import { cosineStats } from '../features/history-stats.js';
import { cosine, dot, norm } from '../features/vector.js';
import type { UserState } from '../state/user-state.js';

export type FeatureValues = Record<string, number | null>;

export interface FeatureSettings {
  readonly layout: AggregateLayout;
  readonly historyHalfLifeMs: number;
  readonly cosineThresholds: readonly number[];
  readonly signals: Signals;
}

/** What the neural method contributes for one candidate: the user's encoding and item vector. */
export interface NeuralInputs {
  readonly encoding: Float32Array | null;
  readonly itemVector: Float32Array | null;
}

const TAG: Record<Polarity, string> = { positive: 'pos', negative: 'neg' };

export function featureNames(
  settings: FeatureSettings,
  methods: { dual: boolean; neural: boolean },
): string[] {
  const names: string[] = [];
  for (const polarity of POLARITIES) {
    for (const halfLifeMs of settings.layout.halfLivesMs) {
      const base = `agg.${TAG[polarity]}.${formatDuration(halfLifeMs)}`;
      names.push(`${base}.cos`, `${base}.weight`);
    }
  }
  for (const polarity of POLARITIES) names.push(...historyNames(settings, TAG[polarity]));
  if (methods.dual) names.push('dual.score', 'dual.cos', 'dual.norm');
  if (methods.neural) names.push('neural.score', 'neural.cos');
  return names;
}

function historyNames(settings: FeatureSettings, tag: string): string[] {
  const base = `agg.hist.${tag}`;
  const shares = settings.cosineThresholds.map((threshold) => `${base}.share_above_${threshold}`);
  return [`${base}.mean`, `${base}.max`, `${base}.p50`, `${base}.p90`, ...shares, `${base}.count`];
}

/** A user's history resolved to embeddings once, reused for every candidate. */
export interface ResolvedHistory {
  readonly entries: readonly {
    polarity: Polarity;
    weight: number;
    embedding: Float32Array;
    norm: number;
  }[];
}

export function resolveHistory(
  state: UserState | null,
  atMs: number,
  settings: FeatureSettings,
  embedding: (item: string) => Float32Array | undefined,
): ResolvedHistory {
  const entries: ResolvedHistory['entries'][number][] = [];
  for (const entry of state?.history ?? []) {
    const spec = settings.signals.get(entry.type);
    const vector = embedding(entry.item);
    if (!spec || !vector) continue;
    const decay = decayFactor(Math.max(0, atMs - entry.ts), settings.historyHalfLifeMs);
    const weight = spec.weight * (entry.value ?? 1) * decay;
    entries.push({ polarity: spec.polarity, weight, embedding: vector, norm: norm(vector) });
  }
  return { entries };
}

/**
 * Every feature for one candidate. `candidate` undefined (no embedding) leaves the
 * candidate-dependent features null; weights are reported whatever the candidate.
 */
export function computeFeatures(
  state: UserState | null,
  history: ResolvedHistory,
  candidate: Float32Array | undefined,
  atMs: number,
  settings: FeatureSettings,
  methods: { dual: boolean; neural: NeuralInputs | null },
): FeatureValues {
  const features: FeatureValues = {};
  addAggregateFeatures(features, state, candidate, atMs, settings);
  addHistoryFeatures(features, history, candidate, settings);
  if (methods.dual) addDualFeatures(features, state, candidate);
  if (methods.neural) addNeuralFeatures(features, methods.neural);
  return features;
}

function addAggregateFeatures(
  features: FeatureValues,
  state: UserState | null,
  candidate: Float32Array | undefined,
  atMs: number,
  settings: FeatureSettings,
): void {
  const { layout } = settings;
  const anchorMs = state?.aggregates.anchorMs ?? null;
  // A read before the newest event cannot take later events out; it reports them undecayed.
  const ageMs = anchorMs === null ? 0 : Math.max(0, atMs - anchorMs);

  for (const polarity of POLARITIES) {
    layout.halfLivesMs.forEach((halfLifeMs, h) => {
      const base = `agg.${TAG[polarity]}.${formatDuration(halfLifeMs)}`;
      const slot = slotIndex(layout, polarity, h);
      const weight = state ? state.aggregates.weights[slot]! * decayFactor(ageMs, halfLifeMs) : 0;
      const row = state && weight > 0 ? slotRow(state.aggregates, layout, slot) : null;
      features[`${base}.cos`] = row && candidate ? cosine(row, candidate) : null;
      features[`${base}.weight`] = weight;
    });
  }
}

function addHistoryFeatures(
  features: FeatureValues,
  history: ResolvedHistory,
  candidate: Float32Array | undefined,
  settings: FeatureSettings,
): void {
  const candidateNorm = candidate ? norm(candidate) : 0;
  for (const polarity of POLARITIES) {
    const samples: CosineSample[] = [];
    if (candidate && candidateNorm > 0) {
      for (const entry of history.entries) {
        if (entry.polarity !== polarity || entry.norm === 0) continue;
        const value = dot(entry.embedding, candidate) / (entry.norm * candidateNorm);
        samples.push({ cosine: value, weight: entry.weight });
      }
    }

    const stats = cosineStats(samples, settings.cosineThresholds);
    const base = `agg.hist.${TAG[polarity]}`;
    features[`${base}.mean`] = stats.mean;
    features[`${base}.max`] = stats.max;
    features[`${base}.p50`] = stats.p50;
    features[`${base}.p90`] = stats.p90;
    settings.cosineThresholds.forEach((threshold, index) => {
      features[`${base}.share_above_${threshold}`] = stats.shareAbove[index] ?? null;
    });
    features[`${base}.count`] = stats.count;
  }
}

function addDualFeatures(
  features: FeatureValues,
  state: UserState | null,
  candidate: Float32Array | undefined,
): void {
  const vector = state?.dual?.vector ?? null;
  features['dual.score'] = vector && candidate ? dot(vector, candidate) : null;
  features['dual.cos'] = vector && candidate ? cosine(vector, candidate) : null;
  features['dual.norm'] = vector ? norm(vector) : null;
}

function addNeuralFeatures(features: FeatureValues, neural: NeuralInputs): void {
  const { encoding, itemVector } = neural;
  features['neural.score'] = encoding && itemVector ? dot(encoding, itemVector) : null;
  features['neural.cos'] = encoding && itemVector ? cosine(encoding, itemVector) : null;
}
