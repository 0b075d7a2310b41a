/**
 * Scoring the candidates of a period: per-query metrics of one score column (a feature or a
 * ranker's output), their means and bootstrap intervals, and the logistic ranker fitted on one
 * set of queries and applied to another, with a two-fold by-user cross-validation for choosing
 * parameters on the validation period alone.
 */
import type { FeatureTable } from './feature-table.js';
import type { BootstrapOptions, Interval } from './metrics.js';
import { clusterBootstrap, rankOutcome, seededRandom } from './metrics.js';
import type { PeriodQueries } from './queries.js';
import type { LogisticModel, TrainingData } from './ranker.js';
import { fitLogistic, scoreRows } from './ranker.js';

/** A period's queries and every feature table computed for its candidates (same rows). */
export interface PeriodFeatures {
  readonly period: PeriodQueries;
  readonly tables: readonly FeatureTable[];
}

/** Per-query metric values, one entry per query. */
export interface MetricSeries {
  readonly auc: Float64Array;
  readonly ndcg: Float64Array;
  readonly recall: Float64Array;
}

export interface MetricMeans {
  readonly auc: number;
  readonly ndcg: number;
  readonly recall: number;
}

export interface MetricIntervals {
  readonly auc: Interval;
  readonly ndcg: Interval;
  readonly recall: Interval;
}

export const METRICS = ['auc', 'ndcg', 'recall'] as const;

/** The cutoff of NDCG@k and Recall@k. */
export const CUTOFF_K = 10;

/** The column `name` over all candidate rows, NaN for null. */
export function featureColumn(features: PeriodFeatures, name: string): Float64Array {
  const table = features.tables.find((candidate) => candidate.names.includes(name));
  if (!table) throw new RangeError(`no table holds feature "${name}"`);
  const column = table.columnOf(name);
  const out = new Float64Array(table.rows);
  for (let row = 0; row < table.rows; row++) out[row] = table.at(row, column);
  return out;
}

/** Metrics of each query when candidates are ranked by `scores` times `sign`. */
export function outcomesOf(period: PeriodQueries, scores: Float64Array, sign = 1): MetricSeries {
  const count = period.queries.length;
  const series = {
    auc: new Float64Array(count),
    ndcg: new Float64Array(count),
    recall: new Float64Array(count),
  };
  period.queries.forEach((query, q) => {
    const start = period.offsets[q]!;
    const end = start + query.candidates.length;
    const oriented =
      sign === 1 ? scores.subarray(start, end) : scores.subarray(start, end).map((x) => -x);
    const outcome = rankOutcome(oriented[0]!, oriented.subarray(1), CUTOFF_K);
    series.auc[q] = outcome.auc;
    series.ndcg[q] = outcome.ndcg;
    series.recall[q] = outcome.recall;
  });
  return series;
}

export function meansOf(series: MetricSeries): MetricMeans {
  return { auc: mean(series.auc), ndcg: mean(series.ndcg), recall: mean(series.recall) };
}

function mean(values: Float64Array): number {
  let sum = 0;
  for (const value of values) sum += value;
  return values.length === 0 ? Number.NaN : sum / values.length;
}

/** Bootstrap intervals over the period's users for each metric (same resamples for all). */
export function intervalsOf(
  period: PeriodQueries,
  series: MetricSeries,
  options: BootstrapOptions,
): MetricIntervals {
  const clusters = Int32Array.from(period.queries, (query) => query.cluster);
  const of = (values: Float64Array) =>
    clusterBootstrap(values, clusters, period.users.length, options);
  return { auc: of(series.auc), ndcg: of(series.ndcg), recall: of(series.recall) };
}

/** a - b, query by query: the paired difference whose interval says whether b helps a. */
export function difference(a: MetricSeries, b: MetricSeries): MetricSeries {
  const minus = (x: Float64Array, y: Float64Array) => x.map((value, q) => value - y[q]!);
  return {
    auc: minus(a.auc, b.auc),
    ndcg: minus(a.ndcg, b.ndcg),
    recall: minus(a.recall, b.recall),
  };
}

/** True when `column` takes one value (or is null throughout) within every query. */
export function constantWithinQueries(period: PeriodQueries, column: Float64Array): boolean {
  return period.queries.every((query, q) => {
    const start = period.offsets[q]!;
    const first = column[start]!;
    for (let row = start + 1; row < start + query.candidates.length; row++) {
      const value = column[row]!;
      if (!(value === first || (Number.isNaN(value) && Number.isNaN(first)))) return false;
    }
    return true;
  });
}

export interface RankerFitOptions {
  /** Negatives kept per training query, drawn uniformly (seeded); the positive is always kept. */
  readonly negativesPerQuery: number;
  readonly seed: number;
}

/**
 * Fits the ranker on the queries `q` with `include(q)`. Dropping negatives at random only
 * shifts a logistic model's intercept (King & Zeng, "Logistic Regression in Rare Events Data",
 * Political Analysis 9(2), 2001), which no ranking sees, and makes the fit several times faster.
 */
export function fitRanker(
  features: PeriodFeatures,
  names: readonly string[],
  include: (q: number) => boolean,
  options: RankerFitOptions,
): LogisticModel {
  const rows = trainingRows(features.period, include, options);
  return fitLogistic(trainingData(features, names, rows));
}

function trainingRows(
  period: PeriodQueries,
  include: (q: number) => boolean,
  options: RankerFitOptions,
): { rows: number[]; labels: number[] } {
  const random = seededRandom(options.seed);
  const rows: number[] = [];
  const labels: number[] = [];
  period.queries.forEach((query, q) => {
    if (!include(q)) return;
    const start = period.offsets[q]!;
    rows.push(start);
    labels.push(1);
    const negatives = query.candidates.length - 1;
    const keep = Math.min(options.negativesPerQuery, negatives);
    for (const pick of sampleIndices(negatives, keep, random)) {
      rows.push(start + 1 + pick);
      labels.push(0);
    }
  });
  return { rows, labels };
}

/** `keep` distinct indices of 0..count-1 (a partial Fisher-Yates shuffle). */
function sampleIndices(count: number, keep: number, random: () => number): number[] {
  const indices = Array.from({ length: count }, (_, i) => i);
  for (let i = 0; i < keep; i++) {
    const j = i + Math.floor(random() * (count - i));
    [indices[i], indices[j]] = [indices[j]!, indices[i]!];
  }
  return indices.slice(0, keep);
}

function trainingData(
  features: PeriodFeatures,
  names: readonly string[],
  selection: { rows: number[]; labels: number[] },
): TrainingData {
  const columns = names.map((name) => featureColumn(features, name));
  const { rows, labels } = selection;
  const values = new Float64Array(rows.length * names.length);
  rows.forEach((row, r) => {
    columns.forEach((column, j) => (values[r * names.length + j] = column[row]!));
  });
  return { values, rows: rows.length, columns: names.length, labels: Uint8Array.from(labels) };
}

/** The ranker's score for every candidate row of `features`. */
export function rankerScores(
  model: LogisticModel,
  features: PeriodFeatures,
  names: readonly string[],
): Float64Array {
  const columns = names.map((name) => featureColumn(features, name));
  const rows = features.period.rows;
  const values = new Float64Array(rows * names.length);
  for (let row = 0; row < rows; row++) {
    columns.forEach((column, j) => (values[row * names.length + j] = column[row]!));
  }
  return scoreRows(model, values, rows);
}

/**
 * Two-fold cross-validation by user within one period: users are split in halves at random
 * (seeded), the ranker is fitted on one half's queries and scores the other's, and back. The
 * mean metrics over all queries then measure a feature set on the validation period without
 * scoring any query with a model that saw it.
 */
export function crossValidated(
  features: PeriodFeatures,
  names: readonly string[],
  options: RankerFitOptions,
): MetricMeans {
  const fold = userFolds(features.period, options.seed);
  const scores = new Float64Array(features.period.rows);
  for (const held of [0, 1]) {
    const model = fitRanker(features, names, (q) => fold[q] !== held, options);
    const all = rankerScores(model, features, names);
    features.period.queries.forEach((query, q) => {
      if (fold[q] !== held) return;
      const start = features.period.offsets[q]!;
      scores.set(all.subarray(start, start + query.candidates.length), start);
    });
  }
  return meansOf(outcomesOf(features.period, scores));
}

/** Fold (0 or 1) of each query, by its user. */
function userFolds(period: PeriodQueries, seed: number): Uint8Array {
  const random = seededRandom(seed ^ 0xf01d);
  const order = sampleIndices(period.users.length, period.users.length, random);
  const foldOfUser = new Uint8Array(period.users.length);
  order.forEach((user, position) => (foldOfUser[user] = position % 2));
  return Uint8Array.from(period.queries, (query) => foldOfUser[query.cluster]!);
}
