/**
 * Choosing the method parameters on the validation period only (the test period is not read):
 *
 *  - half-lives: one replay with every half-life of the grid; each `agg.pos.<h>.cos` is scored
 *    alone, then a set of three is chosen greedily, adding at each step the half-life whose
 *    sums (cos and weight, both polarities) most raise the two-fold cross-validated AUC of the
 *    ranker on the baseline features plus the sums chosen so far;
 *  - cosine thresholds: one replay with every threshold of the grid; each
 *    `agg.hist.pos.share_above_<t>` is scored alone, then two are chosen greedily as the
 *    half-lives are (the shares of both polarities at that threshold join the ranker);
 *  - dual vector: a0 x lambda at nu = 0, then lambda x nu at the best a0, then the confidence
 *    half-life, each point scored by the AUC of `dual.score` alone.
 *
 * Scoring one feature alone is what a sweep of that feature's own parameter needs and costs
 * little; the greedy set uses the ranker because three similar half-lives are worth less than
 * their single scores suggest.
 */
import { formatDuration } from '../config/duration.js';
import type { MetricMeans, PeriodFeatures, RankerFitOptions } from './assess.js';
import { crossValidated, featureColumn, meansOf, outcomesOf } from './assess.js';
import type { OfflineCatalogue } from './catalogue.js';
import type { FeatureTable } from './feature-table.js';
import { BASELINE_FEATURES } from './queries.js';
import type { PeriodQueries } from './queries.js';
import type { ReplayModel } from './replay.js';
import type { MethodSettings } from './settings.js';
import { withOverrides } from './settings.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

export const HALF_LIFE_GRID_MS = [
  HOUR_MS,
  6 * HOUR_MS,
  DAY_MS,
  7 * DAY_MS,
  30 * DAY_MS,
  90 * DAY_MS,
  365 * DAY_MS,
  1825 * DAY_MS,
];
export const THRESHOLD_GRID = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
export const A0_GRID = [0.001, 0.01, 0.05, 0.2, 1];
export const LAMBDA_GRID = [0.1, 1, 10, 100];
export const NU_GRID = [0, 0.5, 1];
export const DUAL_HALF_LIFE_GRID_MS = [7 * DAY_MS, 30 * DAY_MS, 365 * DAY_MS, 3650 * DAY_MS];

/** The values each sweep tries, and how many the greedy sets keep. */
export interface SweepGrids {
  readonly halfLivesMs: readonly number[];
  /** Half-lives kept in the greedy set; at most `halfLivesMs.length`. */
  readonly halfLivesKept: number;
  readonly thresholds: readonly number[];
  readonly thresholdsKept: number;
  readonly a0: readonly number[];
  readonly lambda: readonly number[];
  readonly nu: readonly number[];
  readonly dualHalfLivesMs: readonly number[];
}

export const DEFAULT_SWEEP_GRIDS: SweepGrids = {
  halfLivesMs: HALF_LIFE_GRID_MS,
  halfLivesKept: 3,
  thresholds: THRESHOLD_GRID,
  thresholdsKept: 2,
  a0: A0_GRID,
  lambda: LAMBDA_GRID,
  nu: NU_GRID,
  dualHalfLivesMs: DUAL_HALF_LIFE_GRID_MS,
};

export interface SweepPoint {
  readonly label: string;
  readonly validation: MetricMeans;
  /** Mean CG iterations per solve, for dual points. */
  readonly iterations?: number;
}

export interface SweepResult {
  readonly settings: MethodSettings;
  readonly halfLives: readonly SweepPoint[];
  readonly halfLifeSteps: readonly SweepPoint[];
  readonly thresholds: readonly SweepPoint[];
  readonly thresholdSteps: readonly SweepPoint[];
  readonly dual: readonly SweepPoint[];
}

/** Replays the validation queries under `model` and returns their feature table. */
export type ValidationReplay = (
  model: ReplayModel,
  stage: string,
) => {
  table: FeatureTable;
  dualSolves: number;
  dualIterations: number;
};

export interface SweepContext {
  readonly catalogue: OfflineCatalogue;
  readonly validation: PeriodQueries;
  readonly baseline: FeatureTable;
  readonly replayValidation: ValidationReplay;
  readonly fit: RankerFitOptions;
  /** Default DEFAULT_SWEEP_GRIDS; smaller ones make a test fast. */
  readonly grids?: SweepGrids;
}

export function sweepOnValidation(context: SweepContext, base: MethodSettings): SweepResult {
  const grids = context.grids ?? DEFAULT_SWEEP_GRIDS;
  const halfLives = sweepHalfLives(context, grids, base);
  const thresholds = sweepThresholds(context, grids, base);
  const dual = sweepDual(context, grids, base);
  const settings = withOverrides(base, {
    halfLivesMs: halfLives.chosen,
    cosineThresholds: thresholds.chosen,
    dual: dual.chosen,
  });
  return {
    settings,
    halfLives: halfLives.points,
    halfLifeSteps: halfLives.steps,
    thresholds: thresholds.points,
    thresholdSteps: thresholds.steps,
    dual: dual.points,
  };
}

/** Settings that compute only what a sweep reads: no sums unless asked, no dual, no history. */
function sweepModel(
  context: SweepContext,
  settings: MethodSettings,
  historyFeatures: boolean,
): ReplayModel {
  return { settings, catalogue: context.catalogue, neural: null, historyFeatures };
}

function sweepHalfLives(context: SweepContext, grids: SweepGrids, base: MethodSettings) {
  const settings = withOverrides(base, {
    halfLivesMs: grids.halfLivesMs,
    dual: { enabled: false },
  });
  const model = sweepModel(context, settings, false);
  const { table } = context.replayValidation(model, 'sweep: half-lives');
  const features = { period: context.validation, tables: [context.baseline, table] };
  const points = grids.halfLivesMs.map((ms) => ({
    label: formatDuration(ms),
    validation: scoreAlone(features, `agg.pos.${formatDuration(ms)}.cos`),
  }));
  const greedy = greedySet(features, context.fit, {
    grid: grids.halfLivesMs,
    keep: grids.halfLivesKept,
    namesOf: sumNames,
    label: formatDuration,
  });
  return { points, ...greedy };
}

function sumNames(halfLifeMs: number): string[] {
  const name = formatDuration(halfLifeMs);
  return ['pos', 'neg'].flatMap((tag) => [`agg.${tag}.${name}.cos`, `agg.${tag}.${name}.weight`]);
}

function shareNames(threshold: number): string[] {
  return ['pos', 'neg'].map((tag) => `agg.hist.${tag}.share_above_${threshold}`);
}

/**
 * Forward selection of `keep` grid values: each step adds the value whose features most raise
 * the cross-validated AUC of the ranker on the baseline plus the features chosen so far.
 */
function greedySet(
  features: PeriodFeatures,
  fit: RankerFitOptions,
  search: {
    grid: readonly number[];
    keep: number;
    namesOf: (value: number) => string[];
    label: (value: number) => string;
  },
): { chosen: number[]; steps: SweepPoint[] } {
  const chosen: number[] = [];
  const steps: SweepPoint[] = [];
  while (chosen.length < Math.min(search.keep, search.grid.length)) {
    let best: { value: number; score: MetricMeans } | null = null;
    for (const value of search.grid.filter((candidate) => !chosen.includes(candidate))) {
      const names = [...BASELINE_FEATURES, ...[...chosen, value].flatMap(search.namesOf)];
      const score = crossValidated(features, names, fit);
      if (!best || score.auc > best.score.auc) best = { value, score };
    }
    chosen.push(best!.value);
    steps.push({ label: `+${search.label(best!.value)}`, validation: best!.score });
  }
  return { chosen: [...chosen].sort((a, b) => a - b), steps };
}

function sweepThresholds(context: SweepContext, grids: SweepGrids, base: MethodSettings) {
  const settings = withOverrides(base, {
    halfLivesMs: [],
    cosineThresholds: grids.thresholds,
    dual: { enabled: false },
  });
  const model = sweepModel(context, settings, true);
  const { table } = context.replayValidation(model, 'sweep: thresholds');
  const features = { period: context.validation, tables: [context.baseline, table] };
  const points = grids.thresholds.map((threshold) => ({
    label: String(threshold),
    validation: scoreAlone(features, `agg.hist.pos.share_above_${threshold}`),
  }));
  const greedy = greedySet(features, context.fit, {
    grid: grids.thresholds,
    keep: grids.thresholdsKept,
    namesOf: shareNames,
    label: String,
  });
  return { points, ...greedy };
}

interface DualChoice {
  readonly a0: number;
  readonly lambda: number;
  readonly nu: number;
  readonly halfLifeMs: number;
}

function sweepDual(context: SweepContext, grids: SweepGrids, base: MethodSettings) {
  const points: SweepPoint[] = [];
  const tried = new Map<string, MetricMeans>();
  const score = (choice: DualChoice): number => {
    const key = dualLabel(choice);
    if (!tried.has(key)) {
      const point = scoreDual(context, base, choice);
      tried.set(key, point.validation);
      points.push(point);
    }
    return tried.get(key)!.auc;
  };

  let best: DualChoice = {
    a0: base.dual.a0,
    lambda: base.dual.lambda,
    nu: 0,
    halfLifeMs: base.dual.halfLifeMs,
  };
  best = bestOf(
    grids.a0.flatMap((a0) => grids.lambda.map((lambda) => ({ ...best, a0, lambda }))),
    score,
  );
  best = bestOf(
    grids.nu.flatMap((nu) => grids.lambda.map((lambda) => ({ ...best, nu, lambda }))),
    score,
  );
  best = bestOf(
    grids.dualHalfLivesMs.map((halfLifeMs) => ({ ...best, halfLifeMs })),
    score,
  );
  return { points, chosen: best };
}

function bestOf(choices: DualChoice[], score: (choice: DualChoice) => number): DualChoice {
  let best = choices[0]!;
  let bestScore = score(best);
  for (const choice of choices.slice(1)) {
    const value = score(choice);
    if (value > bestScore) [best, bestScore] = [choice, value];
  }
  return best;
}

function scoreDual(context: SweepContext, base: MethodSettings, choice: DualChoice): SweepPoint {
  const settings = withOverrides(base, { halfLivesMs: [], dual: { ...choice, enabled: true } });
  const label = dualLabel(choice);
  const replayed = context.replayValidation(
    sweepModel(context, settings, false),
    `sweep: dual ${label}`,
  );
  const features = { period: context.validation, tables: [replayed.table] };
  const solves = Math.max(1, replayed.dualSolves);
  return {
    label,
    validation: scoreAlone(features, 'dual.score'),
    iterations: Math.round((10 * replayed.dualIterations) / solves) / 10,
  };
}

export function dualLabel(choice: DualChoice): string {
  const { a0, lambda, nu, halfLifeMs } = choice;
  return `a0=${a0} lambda=${lambda} nu=${nu} half-life=${formatDuration(halfLifeMs)}`;
}

/** Metrics of one feature used alone as the ranking score (higher ranks first). */
export function scoreAlone(features: PeriodFeatures, name: string): MetricMeans {
  return meansOf(outcomesOf(features.period, featureColumn(features, name)));
}
