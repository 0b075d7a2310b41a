/**
 * Offline training of the history attention encoder (method 3) on an interaction log.
 *
 * Objective: next positive item. Every event of a positive type whose user has at least one
 * event with a strictly earlier timestamp is an example; its history is the user's last N
 * events with a strictly earlier timestamp (negative types included, they are inputs through
 * their type row), its target is the event's item. Strictly earlier, not earlier in log order:
 * logs such as MovieLens hold bursts of events in the same second whose order is arbitrary
 * (item id), and a model that learns from that order learns nothing it can use in serving.
 *
 * Loss: softmax cross-entropy of the target against the whole catalogue while it has at most
 * `fullSoftmaxMaxItems` items (50,000). It is most of the cost: at 9,741 items and D = 64 the
 * logits and their two gradient products take 1.9 M multiply-adds per example, the encoder
 * about 0.2 M. Above that, sampled softmax with the log-Q correction of Yi et al. 2019 ("Sampling-
 * bias-corrected neural modeling for large corpus item recommendations", RecSys): each batch
 * scores its own targets plus `sampledNegatives` draws by popularity (training target counts
 * + 1) with repeats removed, and every logit is lowered by the log of its item's probability of
 * being in such a sample, 1 - (1 - q)^m for m draws (see logInclusionProbability).
 *
 * Split: chronological. Events at or after `testCutoffTs` are not read at all (a test period
 * the caller keeps); targets at or after the validation start are validation examples (their
 * histories may reach back into the training period, as in serving); the rest train. Adam
 * (Kingma & Ba 2015), early stopping on the validation loss with patience, best weights kept.
 *
 * Determinism: every random choice comes from mulberry32 streams derived from `seed`, sums run
 * in a fixed order, so the same inputs and seed give byte-identical weights.
 */
import { AffinityError } from '../errors.js';
import type { InteractionEvent, Signals } from '../events/types.js';
import type { EmbeddingMatrix, Params, TokenBatch } from './backward.js';
import {
  Workspace,
  computeLogits,
  encodeBatch,
  lossAndGradients,
  paramsFromWeights,
  projectCandidates,
  weightsFromParams,
  zerosLike,
} from './backward.js';
import type {
  ConfigOptions,
  InputTransform,
  NeuralConfig,
  NeuralWeights,
  Random,
  TrainingSummary,
  ValidationMetrics,
} from './model.js';
import {
  TENSOR_NAMES,
  ageBucket,
  createConfig,
  createRandom,
  deriveSeed,
  initWeights,
  weightsDigest,
} from './model.js';

/** The item embeddings to train on: row k of `vectors` (dim floats) belongs to ids[k]. */
export interface TrainingCatalogue {
  readonly dim: number;
  readonly ids: readonly string[];
  readonly vectors: Float32Array;
}

/** Reported after the initial evaluation (epoch 0) and after every epoch. */
export interface TrainProgress {
  readonly epoch: number;
  /** Mean training loss of the epoch; null for epoch 0. */
  readonly trainLoss: number | null;
  readonly validation: ValidationMetrics;
  /** Training examples per second over the epoch (validation excluded); null for epoch 0. */
  readonly examplesPerSecond: number | null;
  /** True when this epoch's weights are the best so far and are kept. */
  readonly improved: boolean;
  readonly elapsedMs: number;
}

export interface TrainOptions {
  /** The interaction log, sorted by ts ascending (`readEventsFile` returns it so). */
  readonly events: readonly InteractionEvent[];
  readonly catalogue: TrainingCatalogue;
  /** Event types and their polarity; positive types are targets. */
  readonly signals: Signals;
  /** Type rows of the model, in order; default the types of `signals` in their order. */
  readonly types?: readonly string[];
  readonly seed?: number;
  readonly maxEpochs?: number;
  /** Epochs without a lower validation loss before stopping. */
  readonly patience?: number;
  readonly learningRate?: number;
  readonly batchSize?: number;
  /** N, D, H and the number of age buckets. */
  readonly historyLength?: number;
  readonly modelDim?: number;
  readonly heads?: number;
  readonly ageBuckets?: number;
  /** Share of the (pre-cutoff) events, by count, at the end of the log that is validation. */
  readonly validationFraction?: number;
  /** Validation starts at this epoch-ms timestamp instead; overrides the fraction. */
  readonly validationStartTs?: number;
  /** Events at or after this epoch-ms timestamp are left out (a test period). */
  readonly testCutoffTs?: number;
  /** A seeded random subset of the training examples of at most this size. */
  readonly maxTrainingExamples?: number;
  /** Evenly spaced validation examples of at most this size; default 5,000. */
  readonly maxValidationExamples?: number;
  /** Full softmax up to this catalogue size, sampled above; default 50,000. */
  readonly fullSoftmaxMaxItems?: number;
  /** Popularity samples per batch for the sampled softmax; default 2,048. */
  readonly sampledNegatives?: number;
  /** Recorded in the config: what was done to the embeddings before they came here. */
  readonly inputTransform?: InputTransform;
  /** Version string of the result; default `hae1-` and a digest of the weights. */
  readonly version?: string;
  readonly onProgress?: (progress: TrainProgress) => void;
}

export interface TrainResult {
  readonly config: NeuralConfig;
  /** The weights of the epoch with the lowest validation loss. */
  readonly weights: NeuralWeights;
  /** The validation metrics of the initial (untrained) weights. */
  readonly untrained: ValidationMetrics;
  readonly progress: readonly TrainProgress[];
  readonly wallTimeMs: number;
  /** Events left out, by reason. */
  readonly skipped: {
    readonly afterCutoff: number;
    readonly unknownItem: number;
    readonly unknownType: number;
  };
}

export const TRAIN_DEFAULTS = {
  seed: 1,
  maxEpochs: 30,
  patience: 3,
  learningRate: 0.005,
  batchSize: 256,
  validationFraction: 0.1,
  maxValidationExamples: 5_000,
  fullSoftmaxMaxItems: 50_000,
  sampledNegatives: 2_048,
} as const;

/** Adam's moment decay rates and the denominator floor (the values of the paper). */
const ADAM_BETA1 = 0.9;
const ADAM_BETA2 = 0.999;
const ADAM_EPSILON = 1e-8;

/** Examples per evaluation batch. */
const EVALUATION_BATCH = 256;

/** The options with their defaults filled in and checked. */
interface Resolved {
  readonly seed: number;
  readonly maxEpochs: number;
  readonly patience: number;
  readonly learningRate: number;
  readonly batchSize: number;
  readonly validationFraction: number;
  readonly maxValidationExamples: number;
  readonly fullSoftmaxMaxItems: number;
  readonly sampledNegatives: number;
}

/** The user's events that the model can read, flattened user after user, each in time order. */
interface Log {
  readonly items: Int32Array;
  readonly types: Int32Array;
  readonly ts: Float64Array;
  readonly positive: Uint8Array;
  /** Users in order of first appearance: events userStarts[u] .. userStarts[u + 1] - 1. */
  readonly userStarts: Int32Array;
}

/** Example e: history histStart[e] .. histEnd[e] - 1 of the log, target item target[e]. */
interface Examples {
  readonly histStart: Int32Array;
  readonly histEnd: Int32Array;
  readonly target: Int32Array;
  readonly ts: Float64Array;
}

/** How a batch's candidates are chosen: the whole catalogue, or a popularity sample. */
export interface LossSetup {
  readonly sampled: boolean;
  /** Each catalogue item's probability of being picked by one draw; only when sampled. */
  readonly drawProbability: Float64Array | null;
  /** Cumulative sampling distribution over the catalogue; only when sampled. */
  readonly cumulative: Float64Array | null;
}

/** The items validation ranks against, and each validation example's target column. */
interface EvaluationCandidates {
  readonly items: Int32Array;
  readonly logQ: Float64Array | null;
  readonly column: Int32Array;
}

/** Everything a training run works with, fixed before the first epoch. */
interface Run {
  readonly options: TrainOptions;
  readonly resolved: Resolved;
  readonly config: NeuralConfig;
  readonly embeddings: EmbeddingMatrix;
  readonly log: Log;
  readonly skipped: TrainResult['skipped'];
  readonly validationStartTs: number;
  readonly train: Examples;
  readonly validation: Examples;
  readonly setup: LossSetup;
  readonly evaluation: EvaluationCandidates;
}

/**
 * Trains a model and resolves with the best weights and their config. Throws AffinityError
 * USAGE when an option is out of range or the split leaves no training or no validation
 * example. Yields to the event loop between batches.
 */
export async function trainModel(options: TrainOptions): Promise<TrainResult> {
  const started = performance.now();
  const elapsedMs = (): number => performance.now() - started;
  const run = prepareRun(options);
  const { seed, maxEpochs, patience } = run.resolved;
  const state = new TrainingState(initWeights(run.config, seed), run.config);
  const progress: TrainProgress[] = [];

  const untrained = evaluate(run, state);
  const initial = { epoch: 0, trainLoss: null, examplesPerSecond: null, improved: true };
  report(options, progress, { ...initial, validation: untrained, elapsedMs: elapsedMs() });

  let best = { epoch: 0, metrics: untrained, params: copyParams(state.params) };
  const random = {
    shuffle: createRandom(deriveSeed(seed, 2)),
    sampler: createRandom(deriveSeed(seed, 3)),
  };
  let epoch = 0;
  while (epoch < maxEpochs && epoch - best.epoch < patience) {
    epoch++;
    const epochStart = performance.now();
    const trainLoss = await runEpoch(run, state, random);
    const examplesPerSecond = run.train.target.length / ((performance.now() - epochStart) / 1000);

    const validation = evaluate(run, state);
    const improved = validation.loss < best.metrics.loss;
    if (improved) best = { epoch, metrics: validation, params: copyParams(state.params) };
    const entry = { epoch, trainLoss, validation, examplesPerSecond, improved };
    report(options, progress, { ...entry, elapsedMs: elapsedMs() });
  }

  const weights = weightsFromParams(best.params, run.config);
  const config = finalConfig(run, weights, epoch, best);
  return { config, weights, untrained, progress, wallTimeMs: elapsedMs(), skipped: run.skipped };
}

/** Resolves the options, reads the log and builds the examples and the loss setup. */
function prepareRun(options: TrainOptions): Run {
  const resolved = resolveOptions(options);
  const config = createConfig({
    inputDim: options.catalogue.dim,
    types: options.types ?? [...options.signals.keys()],
    ...definedDims(options),
    ...(options.inputTransform === undefined ? {} : { inputTransform: options.inputTransform }),
  });
  const embeddings = embeddingMatrix(options.catalogue);

  const { log, skipped } = buildLog(options, config);
  const validationStartTs =
    options.validationStartTs ?? fractionStart(log, resolved.validationFraction);
  const all = buildExamples(log, config.historyLength);
  const { train, validation } = splitExamples(all, validationStartTs, options, resolved);
  if (train.target.length === 0) throw usage('the split leaves no training example');
  if (validation.target.length === 0) throw usage('the split leaves no validation example');

  const setup = lossSetup(embeddings.rows, train, resolved);
  const evaluation = evaluationCandidates(embeddings.rows, validation, setup, resolved);
  return {
    ...{ options, resolved, config, embeddings, log, skipped, validationStartTs },
    ...{ train, validation, setup, evaluation },
  };
}

/** The config of the kept weights: version, training summary and validation metrics. */
function finalConfig(
  run: Run,
  weights: NeuralWeights,
  epochsRun: number,
  best: { epoch: number; metrics: ValidationMetrics },
): NeuralConfig {
  const { resolved, setup, train, config, options } = run;
  const training: TrainingSummary = {
    seed: resolved.seed,
    objective: 'next-positive-item',
    loss: setup.sampled ? 'sampled-softmax-logq' : 'full-softmax',
    sampledNegatives: setup.sampled ? resolved.sampledNegatives : null,
    historyRule: 'strictly-earlier-timestamp',
    optimizer: 'adam',
    learningRate: resolved.learningRate,
    batchSize: resolved.batchSize,
    maxEpochs: resolved.maxEpochs,
    patience: resolved.patience,
    epochsRun,
    bestEpoch: best.epoch,
    trainExamples: train.target.length,
    validationExamples: run.validation.target.length,
    trainFromTs: minOf(train.ts),
    trainToTs: maxOf(train.ts),
    validationStartTs: run.validationStartTs,
    testCutoffTs: options.testCutoffTs ?? null,
  };
  const version = options.version ?? `hae${config.architectureVersion}-${weightsDigest(weights)}`;
  return Object.freeze({ ...config, version, training, validation: best.metrics });
}

/** Extremes of example timestamps (example order is time order within a user only). */
function minOf(values: Float64Array): number | null {
  return values.length === 0 ? null : values.reduce((a, b) => Math.min(a, b));
}

function maxOf(values: Float64Array): number | null {
  return values.length === 0 ? null : values.reduce((a, b) => Math.max(a, b));
}

type Dims = Pick<ConfigOptions, 'modelDim' | 'heads' | 'historyLength' | 'ageBuckets'>;

function definedDims(options: TrainOptions): Dims {
  const dims: { -readonly [K in keyof Dims]?: Dims[K] } = {};
  if (options.modelDim !== undefined) dims.modelDim = options.modelDim;
  if (options.heads !== undefined) dims.heads = options.heads;
  if (options.historyLength !== undefined) dims.historyLength = options.historyLength;
  if (options.ageBuckets !== undefined) dims.ageBuckets = options.ageBuckets;
  return dims;
}

function usage(message: string): AffinityError {
  return new AffinityError('USAGE', `trainModel: ${message}`);
}

function report(options: TrainOptions, progress: TrainProgress[], entry: TrainProgress): void {
  progress.push(entry);
  options.onProgress?.(entry);
}

const POSITIVE_INTEGER_OPTIONS = [
  'maxEpochs',
  'patience',
  'batchSize',
  'maxValidationExamples',
  'sampledNegatives',
] as const;

function resolveOptions(options: TrainOptions): Resolved {
  const resolved: Resolved = {
    seed: options.seed ?? TRAIN_DEFAULTS.seed,
    maxEpochs: options.maxEpochs ?? TRAIN_DEFAULTS.maxEpochs,
    patience: options.patience ?? TRAIN_DEFAULTS.patience,
    learningRate: options.learningRate ?? TRAIN_DEFAULTS.learningRate,
    batchSize: options.batchSize ?? TRAIN_DEFAULTS.batchSize,
    validationFraction: options.validationFraction ?? TRAIN_DEFAULTS.validationFraction,
    maxValidationExamples: options.maxValidationExamples ?? TRAIN_DEFAULTS.maxValidationExamples,
    fullSoftmaxMaxItems: options.fullSoftmaxMaxItems ?? TRAIN_DEFAULTS.fullSoftmaxMaxItems,
    sampledNegatives: options.sampledNegatives ?? TRAIN_DEFAULTS.sampledNegatives,
  };

  for (const field of POSITIVE_INTEGER_OPTIONS) {
    if (!Number.isSafeInteger(resolved[field]) || resolved[field] < 1) {
      throw usage(`${field} must be a positive integer, got ${resolved[field]}`);
    }
  }
  if (!Number.isSafeInteger(resolved.seed)) {
    throw usage(`seed must be an integer, got ${resolved.seed}`);
  }
  if (!(resolved.learningRate > 0 && Number.isFinite(resolved.learningRate))) {
    throw usage(`learningRate must be a positive number, got ${resolved.learningRate}`);
  }
  if (!(resolved.validationFraction > 0 && resolved.validationFraction < 1)) {
    throw usage(`validationFraction must be in (0, 1), got ${resolved.validationFraction}`);
  }
  if (!(resolved.fullSoftmaxMaxItems >= 0)) throw usage('fullSoftmaxMaxItems must be ≥ 0');
  const max = options.maxTrainingExamples;
  if (max !== undefined && (!Number.isSafeInteger(max) || max < 1)) {
    throw usage(`maxTrainingExamples must be a positive integer, got ${max}`);
  }

  const c = options.catalogue;
  if (!Number.isSafeInteger(c.dim) || c.dim < 1 || c.vectors.length !== c.ids.length * c.dim) {
    throw usage(
      `catalogue holds ${c.vectors.length} floats for ${c.ids.length} ids of dim ${c.dim}`,
    );
  }
  return resolved;
}

function embeddingMatrix(catalogue: TrainingCatalogue): EmbeddingMatrix {
  return { rows: catalogue.ids.length, dim: catalogue.dim, vectors: catalogue.vectors };
}

/** Keeps the events the model can read (known item and type, before the cutoff), per user. */
function buildLog(
  options: TrainOptions,
  config: NeuralConfig,
): { log: Log; skipped: TrainResult['skipped'] } {
  const rowOf = new Map<string, number>();
  options.catalogue.ids.forEach((id, row) => rowOf.set(id, row));
  const typeOf = new Map<string, number>();
  config.types.forEach((type, index) => typeOf.set(type, index));
  const cutoff = options.testCutoffTs ?? Infinity;

  const perUser = new Map<string, number[]>();
  const skipped = { afterCutoff: 0, unknownItem: 0, unknownType: 0 };
  let previousTs = -Infinity;
  options.events.forEach((event, index) => {
    if (event.ts < previousTs)
      throw usage(`events must be sorted by ts; event ${index} goes back in time`);
    previousTs = event.ts;
    if (event.ts >= cutoff) skipped.afterCutoff++;
    else if (!rowOf.has(event.item)) skipped.unknownItem++;
    else if (!typeOf.has(event.type)) skipped.unknownType++;
    else {
      const list = perUser.get(event.user);
      if (list === undefined) perUser.set(event.user, [index]);
      else list.push(index);
    }
  });

  const total = [...perUser.values()].reduce((sum, list) => sum + list.length, 0);
  const log = {
    items: new Int32Array(total),
    types: new Int32Array(total),
    ts: new Float64Array(total),
    positive: new Uint8Array(total),
    userStarts: new Int32Array(perUser.size + 1),
  };
  let at = 0;
  let user = 0;
  for (const list of perUser.values()) {
    log.userStarts[user++] = at;
    for (const index of list) {
      const event = options.events[index]!;
      log.items[at] = rowOf.get(event.item)!;
      log.types[at] = typeOf.get(event.type)!;
      log.ts[at] = event.ts;
      log.positive[at] = options.signals.get(event.type)?.polarity === 'positive' ? 1 : 0;
      at++;
    }
  }
  log.userStarts[user] = at;
  return { log, skipped };
}

/** The timestamp at which the last `fraction` of the kept events, by count, begins. */
function fractionStart(log: Log, fraction: number): number {
  const sorted = Float64Array.from(log.ts).sort();
  if (sorted.length === 0) throw usage('no event is usable: check the catalogue ids and the types');
  return sorted[Math.min(sorted.length - 1, Math.floor((1 - fraction) * sorted.length))]!;
}

/** Every positive event with at least one strictly earlier event of its user. */
function buildExamples(log: Log, historyLength: number): Examples {
  const histStart: number[] = [];
  const histEnd: number[] = [];
  const target: number[] = [];
  const ts: number[] = [];

  for (let u = 0; u + 1 < log.userStarts.length; u++) {
    const first = log.userStarts[u]!;
    const end = log.userStarts[u + 1]!;
    let groupStart = first;
    for (let i = first; i < end; i++) {
      if (log.ts[i] !== log.ts[groupStart]) groupStart = i;
      if (log.positive[i] === 0 || groupStart === first) continue;
      histStart.push(Math.max(first, groupStart - historyLength));
      histEnd.push(groupStart);
      target.push(log.items[i]!);
      ts.push(log.ts[i]!);
    }
  }
  return {
    histStart: Int32Array.from(histStart),
    histEnd: Int32Array.from(histEnd),
    target: Int32Array.from(target),
    ts: Float64Array.from(ts),
  };
}

function selectExamples(examples: Examples, indices: readonly number[]): Examples {
  return {
    histStart: Int32Array.from(indices, (i) => examples.histStart[i]!),
    histEnd: Int32Array.from(indices, (i) => examples.histEnd[i]!),
    target: Int32Array.from(indices, (i) => examples.target[i]!),
    ts: Float64Array.from(indices, (i) => examples.ts[i]!),
  };
}

function splitExamples(
  all: Examples,
  validationStartTs: number,
  options: TrainOptions,
  resolved: Resolved,
): { train: Examples; validation: Examples } {
  let train: number[] = [];
  let validation: number[] = [];
  for (let e = 0; e < all.target.length; e++)
    (all.ts[e]! < validationStartTs ? train : validation).push(e);

  const maxTrain = options.maxTrainingExamples;
  if (maxTrain !== undefined && train.length > maxTrain) {
    const random = createRandom(deriveSeed(resolved.seed, 4));
    for (let i = 0; i < maxTrain; i++) {
      const j = i + random.int(train.length - i);
      [train[i], train[j]] = [train[j]!, train[i]!];
    }
    train = train.slice(0, maxTrain).sort((a, b) => a - b);
  }
  const maxValidation = resolved.maxValidationExamples;
  if (validation.length > maxValidation) {
    const step = validation.length / maxValidation;
    validation = Array.from({ length: maxValidation }, (_, i) => validation[Math.floor(i * step)]!);
  }
  return { train: selectExamples(all, train), validation: selectExamples(all, validation) };
}

/** Full softmax for small catalogues; a popularity sampler (target counts + 1) for large ones. */
function lossSetup(items: number, train: Examples, resolved: Resolved): LossSetup {
  if (items <= resolved.fullSoftmaxMaxItems)
    return { sampled: false, drawProbability: null, cumulative: null };

  const counts = new Float64Array(items).fill(1);
  for (const item of train.target) counts[item]! += 1;
  return popularitySampler(counts);
}

/** Draws item k with probability counts[k] / Σ counts. Exported for the tests. */
export function popularitySampler(counts: Float64Array): LossSetup {
  const total = counts.reduce((sum, count) => sum + count, 0);
  const drawProbability = new Float64Array(counts.length);
  const cumulative = new Float64Array(counts.length);
  let running = 0;
  for (let k = 0; k < counts.length; k++) {
    drawProbability[k] = counts[k]! / total;
    running += counts[k]! / total;
    cumulative[k] = running;
  }
  return { sampled: true, drawProbability, cumulative };
}

/**
 * log P(item in the sample) for a sample of `draws` independent draws, each picking the item
 * with probability q, repeats removed: log(1 - (1 - q)^draws). A sampled softmax approximates
 * the full one when each sampled logit is lowered by the log of the rate at which the proposal
 * offers that item (Bengio & Senécal 2008, "Adaptive importance sampling to accelerate training
 * of a neural probabilistic language model", IEEE TNN 19(4)); Yi et al. 2019 lower it by log q,
 * the rate of a single draw. For m draws with repeats removed the rate is the inclusion
 * probability above. The two agree up to the constant log m (which the softmax cancels) while
 * m·q is small, and part where it is not: at q = 0.01 and m = 2,048 the item is in the sample
 * with probability 1 - 1e-9 while m·q is 20.5, so log q would lower its logit by log 20.5 ≈ 3
 * more, relative to rarely drawn items, than its share of the samples calls for. Computed as
 * log(-expm1(m·log1p(-q))) to keep its precision for tiny q.
 */
export function logInclusionProbability(q: number, draws: number): number {
  return Math.log(-Math.expm1(draws * Math.log1p(-q)));
}

/** An item drawn from the cumulative distribution (binary search). */
function drawItem(cumulative: Float64Array, u: number): number {
  let low = 0;
  let high = cumulative.length - 1;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (cumulative[mid]! > u) high = mid;
    else low = mid + 1;
  }
  return low;
}

/**
 * Candidate items of a batch: all items, or its targets plus `samples` popularity draws, repeats
 * removed, each with the log of its probability of being in such a sample (see
 * logInclusionProbability; targets get the same correction as drawn items, as in TensorFlow's
 * sampled softmax). Exported for the tests.
 */
export function batchCandidates(
  items: number,
  targets: Int32Array,
  setup: LossSetup,
  samples: number,
  random: { next(): number },
): { items: Int32Array; logQ: Float64Array | null; targetColumns: Int32Array } {
  if (!setup.sampled) {
    return { items: allItems(items), logQ: null, targetColumns: targets };
  }

  const column = new Map<number, number>();
  const chosen: number[] = [];
  const add = (item: number): number => {
    let at = column.get(item);
    if (at === undefined) {
      at = chosen.length;
      column.set(item, at);
      chosen.push(item);
    }
    return at;
  };
  const targetColumns = Int32Array.from(targets, add);
  for (let s = 0; s < samples; s++) add(drawItem(setup.cumulative!, random.next()));

  const candidateItems = Int32Array.from(chosen);
  const q = setup.drawProbability!;
  const logQ = Float64Array.from(candidateItems, (item) =>
    logInclusionProbability(q[item]!, samples),
  );
  return { items: candidateItems, logQ, targetColumns };
}

let allItemsCache = new Int32Array(0);
function allItems(count: number): Int32Array {
  if (allItemsCache.length !== count)
    allItemsCache = Int32Array.from({ length: count }, (_, k) => k);
  return allItemsCache;
}

/** Flattens the histories of some examples into a token batch (ages from each newest event). */
function tokenBatch(
  log: Log,
  examples: Examples,
  order: Int32Array | null,
  from: number,
  to: number,
  ageBuckets: number,
): TokenBatch {
  const size = to - from;
  const offsets = new Int32Array(size + 1);
  let count = 0;
  for (let b = 0; b < size; b++) {
    const e = order === null ? from + b : order[from + b]!;
    offsets[b] = count;
    count += examples.histEnd[e]! - examples.histStart[e]!;
  }
  offsets[size] = count;

  const items = new Int32Array(count);
  const types = new Int32Array(count);
  const buckets = new Int32Array(count);
  for (let b = 0; b < size; b++) {
    const e = order === null ? from + b : order[from + b]!;
    const end = examples.histEnd[e]!;
    const newest = log.ts[end - 1]!;
    let t = offsets[b]!;
    for (let i = examples.histStart[e]!; i < end; i++, t++) {
      items[t] = log.items[i]!;
      types[t] = log.types[i]!;
      buckets[t] = ageBucket(newest - log.ts[i]!, ageBuckets);
    }
  }
  return { size, offsets, items, types, buckets };
}

function copyParams(params: Params): Params {
  const copy = {} as Params;
  for (const name of TENSOR_NAMES) copy[name] = Float64Array.from(params[name]);
  return copy;
}

/** Parameters, their gradients and Adam's moments. */
class TrainingState {
  readonly params: Params;
  readonly grads: Params;
  readonly first: Params;
  readonly second: Params;
  readonly ws = new Workspace();
  step = 0;

  constructor(
    weights: NeuralWeights,
    readonly config: NeuralConfig,
  ) {
    this.params = paramsFromWeights(weights);
    this.grads = zerosLike(config);
    this.first = zerosLike(config);
    this.second = zerosLike(config);
  }

  /** One Adam step from the gradients, which are then cleared. */
  adamStep(learningRate: number): void {
    this.step++;
    const correction1 = 1 - ADAM_BETA1 ** this.step;
    const correction2 = 1 - ADAM_BETA2 ** this.step;
    const rate = (learningRate * Math.sqrt(correction2)) / correction1;

    for (const name of TENSOR_NAMES) {
      const p = this.params[name];
      const g = this.grads[name];
      const m = this.first[name];
      const v = this.second[name];
      const epsilon = ADAM_EPSILON * Math.sqrt(correction2);
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]!;
        m[i] = ADAM_BETA1 * m[i]! + (1 - ADAM_BETA1) * gi;
        v[i] = ADAM_BETA2 * v[i]! + (1 - ADAM_BETA2) * gi * gi;
        p[i]! -= (rate * m[i]!) / (Math.sqrt(v[i]!) + epsilon);
      }
      g.fill(0);
    }
  }
}

/** One pass over the training examples in a seeded random order; returns the mean loss. */
async function runEpoch(
  run: Run,
  state: TrainingState,
  random: { shuffle: Random; sampler: Random },
): Promise<number> {
  const { train, log, embeddings, setup, resolved, config } = run;
  const count = train.target.length;
  const order = Int32Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = random.shuffle.int(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }

  let total = 0;
  for (let from = 0; from < count; from += resolved.batchSize) {
    const to = Math.min(count, from + resolved.batchSize);
    const batch = tokenBatch(log, train, order, from, to, config.ageBuckets);
    const targets = Int32Array.from(order.subarray(from, to), (e) => train.target[e]!);
    const samples = resolved.sampledNegatives;
    const candidates = batchCandidates(embeddings.rows, targets, setup, samples, random.sampler);

    const { params, grads, ws } = state;
    total +=
      (to - from) * lossAndGradients(params, config, embeddings, batch, candidates, grads, ws);
    state.adamStep(resolved.learningRate);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return total / count;
}

/** Validation candidates: the catalogue, or (sampled) a fixed draw plus the validation targets. */
function evaluationCandidates(
  items: number,
  validation: Examples,
  setup: LossSetup,
  resolved: Resolved,
): EvaluationCandidates {
  const random = createRandom(deriveSeed(resolved.seed, 5));
  const samples = resolved.sampledNegatives;
  const candidates = batchCandidates(items, validation.target, setup, samples, random);
  return { items: candidates.items, logQ: candidates.logQ, column: candidates.targetColumns };
}

/**
 * Loss (with the log-Q correction when sampled), recall@10 and MRR of the validation targets
 * ranked by raw score among the candidates. Ties (items with identical embeddings score
 * identically) count as broken at random: the expected hit and reciprocal rank over the order.
 */
function evaluate(run: Run, state: TrainingState): ValidationMetrics {
  const { config, embeddings, log, validation: examples, evaluation: candidates } = run;
  const { params, ws } = state;
  const count = candidates.items.length;
  const logQ = candidates.logQ;
  let loss = 0;
  let recall = 0;
  let mrr = 0;

  projectCandidates(params, config, embeddings, candidates.items, ws);
  for (let from = 0; from < examples.target.length; from += EVALUATION_BATCH) {
    const to = Math.min(examples.target.length, from + EVALUATION_BATCH);
    const batch = tokenBatch(log, examples, null, from, to, config.ageBuckets);
    encodeBatch(params, config, embeddings, batch, ws);
    computeLogits(ws, batch.size, count, config.modelDim);

    const logits = ws.logits;
    for (let b = 0; b < batch.size; b++) {
      const row = b * count;
      const column = candidates.column[from + b]!;
      const { greater, ties } = countAbove(logits, row, count, logits[row + column]!);
      const { hit, reciprocal } = expectedRank(greater, ties, 10);
      recall += hit;
      mrr += reciprocal;
      loss += crossEntropy(logits, row, count, logQ, column);
    }
  }

  const n = examples.target.length;
  return { examples: n, loss: loss / n, recallAt10: recall / n, mrr: mrr / n, candidates: count };
}

/** How many of logits[row .. row + count) are above `score`, and how many equal it. */
function countAbove(
  logits: Float64Array,
  row: number,
  count: number,
  score: number,
): { greater: number; ties: number } {
  let greater = 0;
  let ties = 0;
  for (let k = row; k < row + count; k++) {
    const value = logits[k]!;
    if (value > score) greater++;
    else if (value === score) ties++;
  }
  return { greater, ties };
}

/** -log softmax(logits[row ..] - logQ)[column]; logits are left as they are. */
function crossEntropy(
  logits: Float64Array,
  row: number,
  count: number,
  logQ: Float64Array | null,
  column: number,
): number {
  if (logQ === null) {
    let max = -Infinity;
    for (let k = row; k < row + count; k++) if (logits[k]! > max) max = logits[k]!;
    let sum = 0;
    for (let k = row; k < row + count; k++) sum += Math.exp(logits[k]! - max);
    return max + Math.log(sum) - logits[row + column]!;
  }

  let max = -Infinity;
  for (let k = 0; k < count; k++) max = Math.max(max, logits[row + k]! - logQ[k]!);
  let sum = 0;
  for (let k = 0; k < count; k++) sum += Math.exp(logits[row + k]! - logQ[k]! - max);
  return max + Math.log(sum) - (logits[row + column]! - logQ[column]!);
}

/**
 * With `greater` items scoring above the target and `ties` items (itself included) scoring the
 * same, in a uniformly random tie order: P(rank ≤ k) and E[1 / rank].
 */
function expectedRank(
  greater: number,
  ties: number,
  k: number,
): { hit: number; reciprocal: number } {
  const hit = Math.min(1, Math.max(0, (k - greater) / ties));
  let reciprocal = 0;
  for (let i = 1; i <= ties; i++) reciprocal += 1 / (greater + i);
  return { hit, reciprocal: reciprocal / ties };
}
