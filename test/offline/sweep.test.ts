/**
 * The validation sweeps (sweep.ts) with two points per parameter on the taste log: each
 * half-life's score in the sweep's one many-half-life replay equals the score of a replay with
 * that half-life alone; the greedy step keeps the half-life whose cross-validated ranker scores
 * best (both computed here); the staged dual search tries each point once (4 + 2 + 1 of them)
 * and ends on the best of all it tried; the result's settings carry what was chosen.
 *
 * Scores are compared to 1e-12: the same float32 sums and the same ranker fit on the same
 * table give the same doubles, so only an accidental change of order could move them.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { parseSignalMap } from '../../src/neural/events.js';
import { crossValidated } from '../../src/offline/assess.js';
import { loadOfflineCatalogue } from '../../src/offline/catalogue.js';
import type { OfflineCatalogue } from '../../src/offline/catalogue.js';
import { FeatureTable } from '../../src/offline/feature-table.js';
import { readOfflineEvents } from '../../src/offline/inputs.js';
import type { PeriodQueries } from '../../src/offline/queries.js';
import {
  BASELINE_FEATURES,
  DEFAULT_EXCLUSION,
  baselineFeatures,
  buildQueries,
  chronologicalSplit,
  indexLog,
} from '../../src/offline/queries.js';
import type { ReplayModel } from '../../src/offline/replay.js';
import { replay, replayFeatureNames } from '../../src/offline/replay.js';
import { methodSettings, withOverrides } from '../../src/offline/settings.js';
import type { SweepContext, SweepGrids } from '../../src/offline/sweep.js';
import { dualLabel, scoreAlone, sweepOnValidation } from '../../src/offline/sweep.js';
import { TASTE_SIGNAL_MAP, writeTasteLog } from '../helpers/taste-log.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const TOLERANCE = 1e-12;

const GRIDS: SweepGrids = {
  halfLivesMs: [HOUR_MS, 30 * DAY_MS],
  halfLivesKept: 1,
  thresholds: [0, 0.5],
  thresholdsKept: 1,
  a0: [0.01, 1],
  lambda: [0.1, 10],
  nu: [0, 1],
  // 365d is the configured dual half-life, so the last stage adds one new point only.
  dualHalfLivesMs: [7 * DAY_MS, 365 * DAY_MS],
};

/** The validation queries of the taste log, and a replay of them under any model. */
async function validationContext(): Promise<SweepContext> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-sweep-'));
  try {
    await writeTasteLog(dir);
    const settings = methodSettings(loadConfig({}));
    const input = {
      path: join(dir, 'events.csv'),
      timestampUnit: 's' as const,
      signalMap: parseSignalMap(TASTE_SIGNAL_MAP),
    };
    const { events } = await readOfflineEvents(input, settings);
    const catalogue = await loadOfflineCatalogue(join(dir, 'items.jsonl'), {
      center: true,
      normalize: true,
    });
    return contextOf(events, catalogue, settings.signals);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function contextOf(
  events: InteractionEvent[],
  catalogue: OfflineCatalogue,
  signals: Parameters<typeof indexLog>[1],
): SweepContext {
  const split = chronologicalSplit(events, 0.3, 0.3);
  const log = indexLog(events, signals);
  const period = { name: 'validation' as const, startMs: split.validationStartMs };
  const options = {
    negatives: 'popularity' as const,
    exclusion: DEFAULT_EXCLUSION,
    negativesPerPositive: 20,
    seed: 1,
    maxQueries: 300,
  };
  const validation = buildQueries(log, { ...period, endMs: split.testStartMs }, catalogue, options);
  return {
    catalogue,
    validation,
    baseline: baselineFeatures(log, validation),
    fit: { negativesPerQuery: 10, seed: 1 },
    grids: GRIDS,
    replayValidation: (model) => replayPeriod(events, validation, model),
  };
}

function replayPeriod(events: InteractionEvent[], period: PeriodQueries, model: ReplayModel) {
  const table = new FeatureTable(replayFeatureNames(model), period.rows);
  const groups = period.queries.map((q) => ({ user: q.user, atMs: q.atMs, items: q.candidates }));
  const stats = replay(events, groups, model, (group, candidate, values) =>
    table.set(period.offsets[group]! + candidate, values),
  );
  return { table, dualSolves: stats.dualSolves, dualIterations: stats.dualIterations };
}

function close(actual: number, expected: number, label: string): void {
  assert.ok(Math.abs(actual - expected) <= TOLERANCE, `${label}: ${actual} vs ${expected}`);
}

test('a 2-point sweep of every parameter chooses the best point it measured', async () => {
  const context = await validationContext();
  const base = methodSettings(loadConfig({}));
  const result = sweepOnValidation(context, base);

  assert.deepEqual(
    result.halfLives.map((point) => point.label),
    ['1h', '30d'],
  );
  const alone = new Map<number, number>();
  const ranked = new Map<number, number>();
  for (const halfLifeMs of GRIDS.halfLivesMs) {
    const settings = withOverrides(base, { halfLivesMs: [halfLifeMs], dual: { enabled: false } });
    const model = { settings, catalogue: context.catalogue, neural: null, historyFeatures: false };
    const { table } = context.replayValidation(model, 'check');
    const features = { period: context.validation, tables: [context.baseline, table] };
    const name = halfLifeMs === HOUR_MS ? '1h' : '30d';
    alone.set(halfLifeMs, scoreAlone(features, `agg.pos.${name}.cos`).auc);
    const sums = ['pos', 'neg'].flatMap((tag) => [
      `agg.${tag}.${name}.cos`,
      `agg.${tag}.${name}.weight`,
    ]);
    ranked.set(
      halfLifeMs,
      crossValidated(features, [...BASELINE_FEATURES, ...sums], context.fit).auc,
    );
  }
  result.halfLives.forEach((point, k) =>
    close(point.validation.auc, alone.get(GRIDS.halfLivesMs[k]!)!, `half-life ${point.label}`),
  );
  const bestRanked = Math.max(...ranked.values());
  const chosen = [...ranked].find(([, auc]) => auc === bestRanked)![0];
  assert.deepEqual(result.settings.halfLivesMs, [chosen]);
  assert.equal(result.halfLifeSteps.length, 1);
  close(result.halfLifeSteps[0]!.validation.auc, bestRanked, 'greedy step');

  assert.deepEqual(
    result.thresholds.map((point) => point.label),
    ['0', '0.5'],
  );
  assert.equal(result.settings.cosineThresholds.length, 1);
  assert.ok(GRIDS.thresholds.includes(result.settings.cosineThresholds[0]!));

  assert.equal(result.dual.length, 4 + 2 + 1, result.dual.map((point) => point.label).join('; '));
  assert.equal(new Set(result.dual.map((point) => point.label)).size, result.dual.length);
  const bestDual = Math.max(...result.dual.map((point) => point.validation.auc));
  const chosenLabel = dualLabel(result.settings.dual);
  const chosenPoint = result.dual.find((point) => point.label === chosenLabel);
  assert.ok(chosenPoint, `the chosen ${chosenLabel} was measured`);
  assert.equal(chosenPoint.validation.auc, bestDual, 'the chosen dual point is the best tried');
  assert.equal(result.settings.dual.enabled, true);
  assert.ok(bestDual > 0.6, `dual.score separates on the taste log: ${bestDual}`);
});
