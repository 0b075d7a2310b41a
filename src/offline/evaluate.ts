/**
 * `affinity evaluate`: which method helps, measured on a chronological split of a log.
 *
 *   1. Read the log and the catalogue twice transformed (raw and mean-centred); split the log by
 *      global time into train, validation and test; build the ranking queries of validation and
 *      test (queries.ts) and their baseline features. A given model (`modelDir`) is loaded and
 *      checked here, against the catalogue and the split, before the first replay: a wrong
 *      path or a leaking model fails in seconds, not after the sweeps.
 *   2. On validation only: choose raw or centred (cross-validated ranker on baseline + agg +
 *      dual; a given model fixes it to its own), then sweep the method parameters (sweep.ts).
 *      With `trainModelDir`, train the neural model on the events before validation starts.
 *   3. Replay validation and test with the chosen settings (and the other transform, for the
 *      comparison), score every feature alone on test, with its direction taken from
 *      validation, then fit the ranker on validation with nested feature sets (baseline, +agg,
 *      +dual, +neural) and score it on test. Every test figure gets a bootstrap interval over
 *      users, and every step of the nested sets the interval of its paired difference.
 *   4. Write report.md, report.svg and report.json (report.ts).
 *
 * Features come from the same replay as `affinity backfill` (replay.ts), so what is measured here
 * is what the online reader serves.
 */
import { mkdir } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { AffinityError } from '../errors.js';
import type { InteractionEvent } from '../events/types.js';
import type { LoadedModel } from '../features/neural-encode.js';
import { saveModel } from '../neural/files.js';
import type { NeuralConfig } from '../neural/model.js';
import { trainModel } from '../neural/train.js';
import type {
  MetricIntervals,
  MetricMeans,
  MetricSeries,
  PeriodFeatures,
  RankerFitOptions,
} from './assess.js';
import {
  constantWithinQueries,
  crossValidated,
  difference,
  featureColumn,
  fitRanker,
  intervalsOf,
  meansOf,
  outcomesOf,
  rankerScores,
} from './assess.js';
import type { CatalogueOptions, OfflineCatalogue } from './catalogue.js';
import { loadCatalogueVariants } from './catalogue.js';
import { FeatureTable } from './feature-table.js';
import type { EventsInput, EventsReport } from './inputs.js';
import { readOfflineEvents } from './inputs.js';
import type { BootstrapOptions } from './metrics.js';
import { loadOfflineModel, modelForCatalogue, readOfflineModel } from './neural.js';
import type { LogIndex, NegativeExclusion, NegativeMode, PeriodQueries, Split } from './queries.js';
import {
  BASELINE_FEATURES,
  baselineFeatures,
  buildQueries,
  chronologicalSplit,
  indexLog,
} from './queries.js';
import type { ReplayModel, ReplayStats, RequestGroup } from './replay.js';
import { replay, replayFeatureNames } from './replay.js';
import type { EvaluationReport, FeatureResult, RankerResult, VariantResult } from './report.js';
import { describeSettings, writeReport } from './report.js';
import type { MethodSettings } from './settings.js';
import type { SweepResult } from './sweep.js';
import { sweepOnValidation } from './sweep.js';

export interface EvaluationOptions {
  readonly events: EventsInput;
  readonly itemsPath: string;
  /** `normalize`, `ids` and `format` apply; `center` is ignored: both transforms are compared. */
  readonly catalogue: CatalogueOptions;
  readonly outDir: string;
  /** A neural model to evaluate; it must not have been trained on validation or test events. */
  readonly modelDir?: string;
  /** Train a neural model on the events before validation into this directory, and evaluate it. */
  readonly trainModelDir?: string;
  readonly modelEpochs?: number;
  readonly settings: MethodSettings;
  readonly negatives: NegativeMode;
  /** Which of the user's items a sampled negative may not be (queries.ts). */
  readonly exclusion: NegativeExclusion;
  readonly negativesPerPositive: number;
  readonly seed: number;
  readonly maxQueriesPerPeriod: number;
  readonly bootstrapResamples: number;
  readonly sweep: boolean;
  /** Shares of the events at the end of the log for validation and for test; default 0.1 each. */
  readonly validationFraction?: number;
  readonly testFraction?: number;
  /** The command line, recorded in the report. */
  readonly command?: string;
  readonly onProgress?: (progress: EvaluationProgress) => void;
}

export interface EvaluationProgress {
  readonly stage: string;
  readonly done: number;
  readonly total?: number;
}

export interface EvaluationSummary {
  readonly outDir: string;
  readonly wallSeconds: number;
  readonly variant: string;
  readonly rankers: readonly { set: string; auc: number; ndcg: number; recall: number }[];
}

/** Negatives per query the ranker trains on (all are scored). */
const TRAIN_NEGATIVES_PER_QUERY = 20;

interface Inputs {
  readonly events: InteractionEvent[];
  readonly eventsReport: EventsReport;
  readonly catalogues: { readonly raw: OfflineCatalogue; readonly centred: OfflineCatalogue };
}

interface Protocol {
  readonly split: Split;
  readonly log: LogIndex;
  readonly validation: PeriodQueries;
  readonly test: PeriodQueries;
  readonly baselines: { readonly validation: FeatureTable; readonly test: FeatureTable };
}

export async function runEvaluation(options: EvaluationOptions): Promise<EvaluationSummary> {
  const started = performance.now();
  const progress = options.onProgress ?? (() => {});
  const inputs = await readInputs(options, progress);
  const protocol = prepareProtocol(inputs, options, progress);
  const given = await givenModel(options.modelDir, inputs, protocol.split);
  const run = new EvaluationRun(inputs, protocol, options);

  const variants = run.compareVariants();
  const best = variants.reduce((a, b) => (b.validation.auc > a.validation.auc ? b : a)).name;
  const chosen = given?.variant ?? best;
  const catalogue = inputs.catalogues[chosen];
  const sweep = options.sweep ? run.sweep(catalogue) : null;
  const settings = sweep?.settings ?? options.settings;
  const neural = given ?? (await run.trainedModel(catalogue));

  const report = run.assess({ variants, chosen, sweep, settings, neural, started });
  await mkdir(options.outDir, { recursive: true });
  await writeReport(options.outDir, report);
  progress({ stage: 'report written', done: 1, total: 1 });
  return summaryOf(options.outDir, report);
}

/**
 * The model `--model DIR` names, loaded, fitted to the catalogue variant it was trained on (it
 * only reads embeddings prepared as in its training, so it fixes the transform) and checked
 * not to have seen validation or test; null without one.
 */
async function givenModel(
  dir: string | undefined,
  inputs: Inputs,
  split: Split,
): Promise<(NeuralChoice & { variant: 'raw' | 'centred' }) | null> {
  if (dir === undefined) return null;
  const loaded = await readOfflineModel(dir);
  const variant = loaded.config.inputTransform.center ? 'centred' : 'raw';
  const model = modelForCatalogue(dir, loaded, inputs.catalogues[variant]);
  checkNoLeak(model.config, split.validationStartMs);
  return { model, trainedHere: false, variant };
}

/**
 * A model that saw validation or test events would score them from memory: its training must
 * have stopped (`training.testCutoffTs`, written by `trainModel`) at or before the validation
 * start. Throws USAGE otherwise, and for a model that records no cutoff.
 */
export function checkNoLeak(config: NeuralConfig, validationStartMs: number): void {
  const cutoff = config.training?.testCutoffTs ?? null;
  if (cutoff !== null && cutoff <= validationStartMs) return;
  const when = new Date(validationStartMs).toISOString();
  const trained =
    cutoff === null ? 'without a test cutoff' : `up to ${new Date(cutoff).toISOString()}`;
  throw new AffinityError(
    'USAGE',
    `the model was trained ${trained}; it must not see events from ${when} ` +
      `(ms ${validationStartMs}) on: train it with a cutoff there, ` +
      'or let evaluate train one (--train-model DIR)',
  );
}

async function readInputs(
  options: EvaluationOptions,
  progress: (p: EvaluationProgress) => void,
): Promise<Inputs> {
  progress({ stage: 'reading events and items', done: 0 });
  const { events, report } = await readOfflineEvents(options.events, options.settings);
  if (events.length === 0)
    throw new AffinityError('USAGE', `${options.events.path}: no usable event`);
  const normalize = options.catalogue.normalize;
  const [raw, centred] = await loadCatalogueVariants(options.itemsPath, options.catalogue, [
    { center: false, normalize },
    { center: true, normalize },
  ]);
  return { events, eventsReport: report, catalogues: { raw: raw!, centred: centred! } };
}

function prepareProtocol(
  inputs: Inputs,
  options: EvaluationOptions,
  progress: (p: EvaluationProgress) => void,
): Protocol {
  progress({ stage: 'building queries', done: 0 });
  const split = chronologicalSplit(
    inputs.events,
    options.validationFraction ?? 0.1,
    options.testFraction ?? 0.1,
  );
  const log = indexLog(inputs.events, options.settings.signals);
  const queryOptions = {
    negatives: options.negatives,
    exclusion: options.exclusion,
    negativesPerPositive: options.negativesPerPositive,
    seed: options.seed,
    maxQueries: options.maxQueriesPerPeriod,
  };
  const catalogue = inputs.catalogues.raw;
  const validation = buildQueries(
    log,
    { name: 'validation', startMs: split.validationStartMs, endMs: split.testStartMs },
    catalogue,
    queryOptions,
  );
  const test = buildQueries(
    log,
    { name: 'test', startMs: split.testStartMs, endMs: split.endMs },
    catalogue,
    {
      ...queryOptions,
      seed: options.seed + 1,
    },
  );
  if (validation.queries.length === 0 || test.queries.length === 0)
    throw new AffinityError('USAGE', 'the split leaves no query in validation or test');
  const baselines = {
    validation: baselineFeatures(log, validation),
    test: baselineFeatures(log, test),
  };
  return { split, log, validation, test, baselines };
}

/** The steps of one evaluation, sharing its inputs, protocol and options. */
class EvaluationRun {
  private readonly fit: RankerFitOptions;
  private readonly bootstrap: BootstrapOptions;
  private readonly progress: (p: EvaluationProgress) => void;

  constructor(
    private readonly inputs: Inputs,
    private readonly protocol: Protocol,
    private readonly options: EvaluationOptions,
  ) {
    this.fit = { negativesPerQuery: TRAIN_NEGATIVES_PER_QUERY, seed: options.seed };
    this.bootstrap = { resamples: options.bootstrapResamples, seed: options.seed };
    this.progress = options.onProgress ?? (() => {});
  }

  /** Raw and centred at the configured settings, scored by the cross-validated ranker. */
  compareVariants(): VariantResult[] {
    return (['raw', 'centred'] as const).map((name) => {
      const model = {
        settings: this.options.settings,
        catalogue: this.inputs.catalogues[name],
        neural: null,
      };
      const [table] = this.replayPeriods(
        model,
        [this.protocol.validation],
        `validation replay (${name})`,
      );
      const features = {
        period: this.protocol.validation,
        tables: [this.protocol.baselines.validation, table!],
      };
      const names = [...BASELINE_FEATURES, ...replayFeatureNames(model)];
      return { name, validation: crossValidated(features, names, this.fit) };
    });
  }

  sweep(catalogue: OfflineCatalogue): SweepResult {
    return sweepOnValidation(
      {
        catalogue,
        validation: this.protocol.validation,
        baseline: this.protocol.baselines.validation,
        fit: this.fit,
        replayValidation: (model, stage) => {
          const [table] = this.replayPeriods(model, [this.protocol.validation], stage);
          const { dualSolves, dualIterations } = this.lastStats!;
          return { table: table!, dualSolves, dualIterations };
        },
      },
      this.options.settings,
    );
  }

  /** Counters of the latest replay. */
  private lastStats: ReplayStats | null = null;

  /** With --train-model, the model trained here on the events before validation; else none. */
  async trainedModel(catalogue: OfflineCatalogue): Promise<NeuralChoice | null> {
    if (this.options.trainModelDir === undefined) return null;
    return this.trainNeural(catalogue, this.options.trainModelDir);
  }

  private async trainNeural(catalogue: OfflineCatalogue, dir: string): Promise<NeuralChoice> {
    const cutoffMs = this.protocol.split.validationStartMs;
    const result = await trainModel({
      events: this.inputs.events,
      catalogue,
      signals: this.options.settings.signals,
      seed: this.options.seed,
      testCutoffTs: cutoffMs,
      inputTransform: catalogue.transform,
      ...(this.options.modelEpochs === undefined ? {} : { maxEpochs: this.options.modelEpochs }),
      onProgress: (p) =>
        this.progress({ stage: `training neural model, epoch ${p.epoch}`, done: p.epoch }),
    });
    await saveModel(dir, result.config, result.weights);
    return { model: await loadOfflineModel(dir, catalogue), trainedHere: true };
  }

  /** Everything measured with the chosen settings, as the report holds it. */
  assess(choice: {
    variants: VariantResult[];
    chosen: 'raw' | 'centred';
    sweep: SweepResult | null;
    settings: MethodSettings;
    neural: NeuralChoice | null;
    started: number;
  }): EvaluationReport {
    const other = choice.chosen === 'raw' ? 'centred' : 'raw';
    const main = this.finalFeatures(choice.chosen, choice.settings, choice.neural?.model ?? null);
    const contrast = this.finalFeatures(other, choice.settings, null);
    this.progress({ stage: 'scoring features and rankers', done: 0 });
    const features = [
      ...this.featureResults(main, choice.chosen, true),
      ...this.featureResults(contrast, other, false),
    ];
    const rankers = this.nestedRankers(main, choice.neural !== null);
    return this.reportOf(choice, features, rankers);
  }

  private finalFeatures(
    variant: 'raw' | 'centred',
    settings: MethodSettings,
    neural: LoadedModel | null,
  ) {
    const model: ReplayModel = { settings, catalogue: this.inputs.catalogues[variant], neural };
    const { validation, test } = this.protocol;
    const [validationTable, testTable] = this.replayPeriods(
      model,
      [validation, test],
      `final replay (${variant})`,
    );
    return {
      names: replayFeatureNames(model),
      validation: {
        period: validation,
        tables: [this.protocol.baselines.validation, validationTable!],
      },
      test: { period: test, tables: [this.protocol.baselines.test, testTable!] },
    };
  }

  /** Each candidate-dependent feature alone on test, oriented by its validation AUC. */
  private featureResults(
    final: { names: string[]; validation: PeriodFeatures; test: PeriodFeatures },
    variant: 'raw' | 'centred',
    withBaseline: boolean,
  ): FeatureResult[] {
    const names = withBaseline ? [...BASELINE_FEATURES, ...final.names] : final.names;
    const results: FeatureResult[] = [];
    for (const name of names) {
      const testColumn = featureColumn(final.test, name);
      if (constantWithinQueries(final.test.period, testColumn)) continue;
      const validation = meansOf(
        outcomesOf(final.validation.period, featureColumn(final.validation, name)),
      );
      const sign = validation.auc >= 0.5 ? 1 : -1;
      const series = outcomesOf(final.test.period, testColumn, sign);
      results.push({
        name,
        variant,
        sign,
        validation,
        test: intervalsOf(final.test.period, series, this.bootstrap),
      });
    }
    return results;
  }

  private nestedRankers(
    final: { names: string[]; validation: PeriodFeatures; test: PeriodFeatures },
    withNeural: boolean,
  ): RankerResult[] {
    const sets = nestedSets(final.names, withNeural);
    const results: RankerResult[] = [];
    let previous: MetricSeries | null = null;
    for (const set of sets) {
      this.progress({ stage: `ranker ${set.name}`, done: results.length, total: sets.length });
      const model = fitRanker(final.validation, set.names, () => true, this.fit);
      const series = outcomesOf(final.test.period, rankerScores(model, final.test, set.names));
      results.push({
        set: set.name,
        features: set.names.length,
        iterations: model.iterations,
        test: intervalsOf(final.test.period, series, this.bootstrap),
        delta: previous
          ? intervalsOf(final.test.period, difference(series, previous), this.bootstrap)
          : null,
      });
      previous = series;
    }
    return results;
  }

  /** Replays `periods` in one pass; returns one method feature table per period. */
  private replayPeriods(
    model: ReplayModel,
    periods: readonly PeriodQueries[],
    stage: string,
  ): FeatureTable[] {
    const names = replayFeatureNames(model);
    const tables = periods.map((period) => new FeatureTable(names, period.rows));
    const { groups, route } = groupsOf(periods);
    const sink = (group: number, candidate: number, values: Record<string, number | null>) => {
      const { period, offset } = route[group]!;
      tables[period]!.set(offset + candidate, values);
    };
    const onProgress = (done: number, total: number) => this.progress({ stage, done, total });
    const stats = replay(this.inputs.events, groups, model, sink, onProgress);
    this.lastStats = stats;
    return tables;
  }

  private reportOf(
    choice: Parameters<EvaluationRun['assess']>[0],
    features: FeatureResult[],
    rankers: RankerResult[],
  ): EvaluationReport {
    const { split, validation, test } = this.protocol;
    const { raw } = this.inputs.catalogues;
    return {
      command: this.options.command ?? null,
      data: {
        events: this.inputs.eventsReport,
        users: this.protocol.log.firstEventMs.size,
        items: raw.size,
        dim: raw.dim,
        split: {
          validationStart: new Date(split.validationStartMs).toISOString(),
          testStart: new Date(split.testStartMs).toISOString(),
          end: new Date(split.endMs - 1).toISOString(),
        },
        periods: [validation, test].map((period) => ({
          name: period.name,
          queries: period.queries.length,
          users: period.users.length,
          candidatesPerQuery: period.rows / Math.max(1, period.queries.length),
          counts: period.counts,
        })),
      },
      protocol: {
        negatives: this.options.negatives,
        exclusion: this.options.exclusion,
        negativesPerPositive: this.options.negativesPerPositive,
        k: 10,
        seed: this.options.seed,
        maxQueriesPerPeriod: this.options.maxQueriesPerPeriod,
        bootstrap: { resamples: this.bootstrap.resamples, unit: 'user', level: 0.95 },
        rankerTrainNegativesPerQuery: TRAIN_NEGATIVES_PER_QUERY,
      },
      variants: choice.variants,
      chosenVariant: choice.chosen,
      sweep: choice.sweep
        ? {
            halfLives: choice.sweep.halfLives,
            halfLifeSteps: choice.sweep.halfLifeSteps,
            thresholds: choice.sweep.thresholds,
            thresholdSteps: choice.sweep.thresholdSteps,
            dual: choice.sweep.dual,
          }
        : null,
      settings: describeSettings(choice.settings, choice.chosen === 'centred'),
      neural: choice.neural
        ? {
            version: choice.neural.model.version,
            trainedHere: choice.neural.trainedHere,
            testCutoff: choice.neural.model.config.training?.testCutoffTs ?? null,
            validation: choice.neural.model.config.validation,
          }
        : null,
      features,
      rankers,
      wallSeconds: (performance.now() - choice.started) / 1000,
    };
  }
}

interface NeuralChoice {
  readonly model: LoadedModel;
  readonly trainedHere: boolean;
}

/** Baseline, then + agg, + dual, + neural, each only when it adds features. */
export function nestedSets(
  methodNames: readonly string[],
  withNeural: boolean,
): { name: string; names: string[] }[] {
  const agg = methodNames.filter((name) => name.startsWith('agg.'));
  const dual = methodNames.filter((name) => name.startsWith('dual.'));
  const neural = withNeural ? methodNames.filter((name) => name.startsWith('neural.')) : [];
  const sets = [{ name: 'baseline', names: [...BASELINE_FEATURES] as string[] }];
  for (const [name, added] of [
    ['+agg', agg],
    ['+dual', dual],
    ['+neural', neural],
  ] as const) {
    if (added.length === 0) continue;
    sets.push({ name, names: [...sets[sets.length - 1]!.names, ...added] });
  }
  return sets;
}

/** All periods' queries as request groups, with where each group's rows go. */
function groupsOf(periods: readonly PeriodQueries[]) {
  const groups: RequestGroup[] = [];
  const route: { period: number; offset: number }[] = [];
  periods.forEach((period, p) => {
    period.queries.forEach((query, q) => {
      groups.push({ user: query.user, atMs: query.atMs, items: query.candidates });
      route.push({ period: p, offset: period.offsets[q]! });
    });
  });
  return { groups, route };
}

function summaryOf(outDir: string, report: EvaluationReport): EvaluationSummary {
  return {
    outDir,
    wallSeconds: Math.round(report.wallSeconds),
    variant: report.chosenVariant,
    rankers: report.rankers.map((ranker) => ({
      set: ranker.set,
      auc: ranker.test.auc.value,
      ndcg: ranker.test.ndcg.value,
      recall: ranker.test.recall.value,
    })),
  };
}

export type { MetricIntervals, MetricMeans };
