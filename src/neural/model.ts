/**
 * Method 3: the history attention encoder. A user's last N events become N tokens; H learned
 * queries attend over them and the pooled heads are projected to a D-dimensional encoding. Items
 * are projected to the same space, and a user's affinity for an item is the dot product of the
 * two. The full account, tensor by tensor and with a PyTorch sketch, is docs/neural-model.md.
 *
 *   token_j   = P e_j + b_p + T[type_j] + A[ageBucket(age_j)]                 (D)
 *   score_hj  = q_h · (K_h token_j) / sqrt(D/H)                               (K_h: rows of K)
 *   alpha_h   = softmax_j(score_h)
 *   pooled_h  = V_h Σ_j alpha_hj token_j                                      (D/H)
 *   encoding  = O concat_h(pooled_h) + b_o                                    (D)
 *   item      = Q e + b_q                                                     (D)
 *
 * Serving speed. The queries are learned constants, not functions of the input, so the key
 * projection folds into them: q_h · (K_h t) = (K_hᵀ q_h) · t. Values are linear, so V_h moves
 * out of the sum: Σ_j alpha_hj V_h t_j = V_h Σ_j alpha_hj t_j. With both folds an encoding costs
 * about 2 H D N multiply-adds for the attention plus 2 D² for V and O, instead of 2 D² N (the
 * folded queries are computed once per weights object). And P e + b_p depends only on the item,
 * so callers cache it per item and model version (`projectTokenInput`) and the encoder only adds
 * the type and age rows.
 *
 * There is no key or value bias: a key bias adds the same q_h · b_k to every score of a head,
 * which softmax cancels, and a value bias comes out of the weighted sum unchanged (the weights
 * sum to one) and would be absorbed by b_o.
 */
import { dot } from '../features/vector.js';

export const ARCHITECTURE = 'history-attention-encoder';
/** Bumped when the forward pass or the tensor set changes meaning. */
export const ARCHITECTURE_VERSION = 1;

/** One hour in milliseconds: the unit of the age buckets. */
export const HOUR_MS = 3_600_000;

/** Defaults for the dimensions a caller leaves out. */
export const DEFAULT_MODEL_DIM = 64;
export const DEFAULT_HEADS = 4;
export const DEFAULT_HISTORY_LENGTH = 100;
export const DEFAULT_AGE_BUCKETS = 16;

/** How the external embeddings were prepared before training; serving must do the same. */
export interface InputTransform {
  /** Catalogue mean subtracted from every embedding. */
  readonly center: boolean;
  /** Embedding scaled to unit L2 norm (after centring when both are set). */
  readonly normalize: boolean;
}

/** What training did, written to config.json. Holds no wall time, so reruns are identical. */
export interface TrainingSummary {
  readonly seed: number;
  readonly objective: 'next-positive-item';
  readonly loss: 'full-softmax' | 'sampled-softmax-logq';
  /** Candidates drawn per batch when the loss is sampled, else null. */
  readonly sampledNegatives: number | null;
  /** Which earlier events form a target's history. */
  readonly historyRule: 'strictly-earlier-timestamp';
  readonly optimizer: 'adam';
  readonly learningRate: number;
  readonly batchSize: number;
  readonly maxEpochs: number;
  readonly patience: number;
  readonly epochsRun: number;
  /** The epoch whose weights were kept (lowest validation loss); 0 means the initial weights. */
  readonly bestEpoch: number;
  readonly trainExamples: number;
  readonly validationExamples: number;
  /** Epoch ms of the first and last training target, and where validation and test start. */
  readonly trainFromTs: number | null;
  readonly trainToTs: number | null;
  readonly validationStartTs: number;
  readonly testCutoffTs: number | null;
}

/** Next-item metrics on the validation period: loss per example, recall@10 and mean reciprocal rank. */
export interface ValidationMetrics {
  readonly examples: number;
  readonly loss: number;
  readonly recallAt10: number;
  readonly mrr: number;
  /** Over how many items each target was ranked: the catalogue, or a fixed sample of it. */
  readonly candidates: number;
}

export interface NeuralConfig {
  readonly architecture: typeof ARCHITECTURE;
  readonly architectureVersion: typeof ARCHITECTURE_VERSION;
  /** Identifies these weights; caches of item projections are keyed by it. */
  readonly version: string;
  /** dIn: dimension of the external item embeddings. */
  readonly inputDim: number;
  /** D: dimension of tokens, encodings and item vectors. */
  readonly modelDim: number;
  /** H: attention heads; D must be a multiple of H. */
  readonly heads: number;
  /** N: the encoder reads at most the last N events. */
  readonly historyLength: number;
  /** Event types in embedding-row order: a history event's typeIndex indexes this list. */
  readonly types: readonly string[];
  /** Rows of the age table; the last row takes every older event. */
  readonly ageBuckets: number;
  readonly inputTransform: InputTransform;
  readonly training: TrainingSummary | null;
  readonly validation: ValidationMetrics | null;
}

/** The architectural part of a config; the rest gets defaults in `createConfig`. */
export interface ConfigOptions {
  readonly inputDim: number;
  readonly types: readonly string[];
  readonly modelDim?: number;
  readonly heads?: number;
  readonly historyLength?: number;
  readonly ageBuckets?: number;
  readonly inputTransform?: InputTransform;
  readonly version?: string;
}

/** Every tensor of the model, in file order. Shapes follow PyTorch Linear: [out, in]. */
export const TENSOR_NAMES = [
  'token.proj.weight',
  'token.proj.bias',
  'token.type.weight',
  'token.age.weight',
  'pool.queries',
  'pool.key.weight',
  'pool.value.weight',
  'out.proj.weight',
  'out.proj.bias',
  'item.proj.weight',
  'item.proj.bias',
] as const;

export type TensorName = (typeof TENSOR_NAMES)[number];

export interface Tensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

/** The weights of one model version. Treat as immutable once handed to the encoder. */
export type NeuralWeights = { readonly [K in TensorName]: Tensor };

/** One past event as the encoder sees it, with the item's raw external embedding (dIn). */
export interface EmbeddedHistoryEvent {
  readonly embedding: Float32Array;
  /** Index into `config.types`. */
  readonly typeIndex: number;
  /** Time from this event to the user's newest event, ms; negative or NaN counts as 0. */
  readonly ageMs: number;
}

/** The same event with the cached `projectTokenInput(weights, embedding)` instead (D). */
export interface ProjectedHistoryEvent {
  readonly projection: Float32Array;
  readonly typeIndex: number;
  readonly ageMs: number;
}

export type HistoryEvent = EmbeddedHistoryEvent | ProjectedHistoryEvent;

/** Fills the defaults and checks the cross-field rules; the result is frozen. */
export function createConfig(options: ConfigOptions): NeuralConfig {
  const config: NeuralConfig = {
    architecture: ARCHITECTURE,
    architectureVersion: ARCHITECTURE_VERSION,
    version: options.version ?? 'untrained',
    inputDim: options.inputDim,
    modelDim: options.modelDim ?? DEFAULT_MODEL_DIM,
    heads: options.heads ?? DEFAULT_HEADS,
    historyLength: options.historyLength ?? DEFAULT_HISTORY_LENGTH,
    types: Object.freeze([...options.types]),
    ageBuckets: options.ageBuckets ?? DEFAULT_AGE_BUCKETS,
    inputTransform: Object.freeze({ ...(options.inputTransform ?? NO_TRANSFORM) }),
    training: null,
    validation: null,
  };
  validateConfig(config);
  return Object.freeze(config);
}

const NO_TRANSFORM: InputTransform = { center: false, normalize: false };

/** Throws a RangeError naming the field and the rule when the config cannot describe a model. */
export function validateConfig(config: NeuralConfig): void {
  if (config.architecture !== ARCHITECTURE) {
    throw new RangeError(
      `architecture is "${String(config.architecture)}", expected "${ARCHITECTURE}"`,
    );
  }
  if (config.architectureVersion !== ARCHITECTURE_VERSION) {
    throw new RangeError(
      `architectureVersion is ${String(config.architectureVersion)}; this code reads ${ARCHITECTURE_VERSION}`,
    );
  }
  for (const field of ['inputDim', 'modelDim', 'heads', 'historyLength', 'ageBuckets'] as const) {
    const value = config[field];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`${field} must be a positive integer, got ${String(value)}`);
    }
  }
  if (config.modelDim % config.heads !== 0) {
    throw new RangeError(
      `modelDim (${config.modelDim}) must be a multiple of heads (${config.heads})`,
    );
  }
  if (typeof config.version !== 'string' || config.version === '') {
    throw new RangeError('version must be a non-empty string');
  }

  if (!Array.isArray(config.types) || config.types.length === 0) {
    throw new RangeError('types must list at least one event type');
  }
  const seen = new Set<string>();
  for (const type of config.types) {
    if (typeof type !== 'string' || type === '')
      throw new RangeError('types must be non-empty strings');
    if (seen.has(type)) throw new RangeError(`type "${type}" is listed twice in types`);
    seen.add(type);
  }
}

/** The shape of every tensor for a config, in `TENSOR_NAMES` order. */
export function tensorShapes(config: NeuralConfig): Record<TensorName, readonly number[]> {
  const { inputDim, modelDim: d, heads, ageBuckets, types } = config;
  return {
    'token.proj.weight': [d, inputDim],
    'token.proj.bias': [d],
    'token.type.weight': [types.length, d],
    'token.age.weight': [ageBuckets, d],
    'pool.queries': [heads, d / heads],
    'pool.key.weight': [d, d],
    'pool.value.weight': [d, d],
    'out.proj.weight': [d, d],
    'out.proj.bias': [d],
    'item.proj.weight': [d, inputDim],
    'item.proj.bias': [d],
  };
}

/** Number of entries of a tensor of this shape. */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((product, extent) => product * extent, 1);
}

/**
 * Age bucket of an event: floor(log2(1 + age in hours)), capped at the last bucket. With 16
 * buckets: 0 is the first hour, 1 up to 3 h, 2 up to 7 h, 4 up to 31 h, 7 up to 10.6 days,
 * 10 up to 85 days, 13 up to 1.9 years, and 15 is 3.7 years or more. Computed in float64.
 */
export function ageBucket(ageMs: number, ageBuckets: number): number {
  if (!(ageMs > 0)) return 0;
  const bucket = Math.floor(Math.log2(1 + ageMs / HOUR_MS));
  return bucket < ageBuckets ? bucket : ageBuckets - 1;
}

/**
 * A seeded generator: mulberry32 (Tommy Ettinger, public domain), 32 bits of state, uniform
 * floats in [0, 1) with 32 bits each. Small and fast; the same seed always gives the same
 * sequence, which is all training needs from it.
 */
export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Standard normal (Box-Muller). */
  normal(): number;
}

export function createRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };

  return {
    next,
    int: (n) => Math.floor(next() * n),
    normal: () => {
      const u = 1 - next();
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
    },
  };
}

/** A seed for an independent stream (`stream` 1, 2, ...) derived from a run seed (splitmix32 mix). */
export function deriveSeed(seed: number, stream: number): number {
  let z = (seed + Math.imul(stream, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * Initial weights, the same for the same config and seed. Matrices are normal with standard
 * deviation 1/sqrt(fan-in) (LeCun); queries 1/sqrt(D/H), which with the folded key gives near-
 * uniform attention at the start, i.e. mean pooling. Biases, type and age rows start at zero,
 * so a type the training data never shows stays neutral instead of adding noise.
 */
export function initWeights(config: NeuralConfig, seed: number): NeuralWeights {
  validateConfig(config);
  const random = createRandom(deriveSeed(seed, 1));
  const shapes = tensorShapes(config);
  const headDim = config.modelDim / config.heads;
  const std: Record<TensorName, number> = {
    'token.proj.weight': 1 / Math.sqrt(config.inputDim),
    'token.proj.bias': 0,
    'token.type.weight': 0,
    'token.age.weight': 0,
    'pool.queries': 1 / Math.sqrt(headDim),
    'pool.key.weight': 1 / Math.sqrt(config.modelDim),
    'pool.value.weight': 1 / Math.sqrt(config.modelDim),
    'out.proj.weight': 1 / Math.sqrt(config.modelDim),
    'out.proj.bias': 0,
    'item.proj.weight': 1 / Math.sqrt(config.inputDim),
    'item.proj.bias': 0,
  };

  const weights = {} as Record<TensorName, Tensor>;
  for (const name of TENSOR_NAMES) {
    const shape = shapes[name];
    const data = new Float32Array(shapeSize(shape));
    if (std[name] > 0) for (let i = 0; i < data.length; i++) data[i] = std[name] * random.normal();
    weights[name] = { shape, data };
  }
  return weights;
}

/** y = W x + b for a row-major W [rows, x.length]; accumulated in float64, returned as float32. */
function affine(weight: Float32Array, bias: Float32Array, x: Float32Array): Float32Array {
  const rows = bias.length;
  const cols = x.length;
  if (weight.length !== rows * cols) {
    throw new RangeError(`embedding has length ${cols}; the model expects ${weight.length / rows}`);
  }

  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = bias[r]!;
    const offset = r * cols;
    for (let c = 0; c < cols; c++) sum += weight[offset + c]! * x[c]!;
    out[r] = sum;
  }
  return out;
}

/** P e + b_p: the item's part of its tokens. Cache it per item and model version. */
export function projectTokenInput(weights: NeuralWeights, embedding: Float32Array): Float32Array {
  return affine(weights['token.proj.weight'].data, weights['token.proj.bias'].data, embedding);
}

/** Q e + b_q: the item vector an encoding is scored against. Cache it per item and model version. */
export function projectItem(weights: NeuralWeights, embedding: Float32Array): Float32Array {
  return affine(weights['item.proj.weight'].data, weights['item.proj.bias'].data, embedding);
}

/** The affinity of a user (encoding) for an item (projected item vector): their dot product. */
export function score(encoding: Float32Array, itemVector: Float32Array): number {
  if (encoding.length !== itemVector.length) {
    throw new RangeError(
      `encoding has length ${encoding.length}, item vector ${itemVector.length}`,
    );
  }
  return dot(encoding, itemVector);
}

/**
 * Scratch for the encoder, grown on demand; the encoder is synchronous, so one set suffices.
 * Hot loops read these through local constants: a module-level `let` costs a context load and
 * a hole check on every access.
 */
const scratch = {
  tokens: new Float64Array(0),
  /** Scores, then attention weights: head h of event j at h * n + j. */
  alphas: new Float64Array(0),
  pooled: new Float64Array(0),
  concat: new Float64Array(0),
};

function ensureScratch(n: number, d: number, heads: number): void {
  if (scratch.tokens.length < n * d) scratch.tokens = new Float64Array(n * d);
  if (scratch.alphas.length < n * heads) scratch.alphas = new Float64Array(n * heads);
  if (scratch.pooled.length < heads * d) scratch.pooled = new Float64Array(heads * d);
  if (scratch.concat.length < d) scratch.concat = new Float64Array(d);
}

/**
 * What the encoder derives from a weights object, computed on first use and kept while the
 * object lives: the folded queries K_hᵀ q_h / sqrt(D/H) (H x D), every sum T[type] + A[bucket]
 * (types x buckets x D, so a token costs one addition per component) and float64 copies of V
 * and O. This is why weights must not change once encoded with.
 */
interface Prepared {
  readonly queries: Float64Array;
  readonly typeAge: Float64Array;
  readonly value: Float64Array;
  readonly out: Float64Array;
}

const preparedWeights = new WeakMap<NeuralWeights, Prepared>();

function prepare(weights: NeuralWeights, d: number, heads: number): Prepared {
  const cached = preparedWeights.get(weights);
  if (cached !== undefined && cached.queries.length === heads * d) return cached;

  const headDim = d / heads;
  const q = weights['pool.queries'].data;
  const key = weights['pool.key.weight'].data;
  const scale = 1 / Math.sqrt(headDim);
  const queries = new Float64Array(heads * d);
  for (let h = 0; h < heads; h++) {
    for (let r = 0; r < headDim; r++) {
      const weight = q[h * headDim + r]! * scale;
      const row = (h * headDim + r) * d;
      for (let i = 0; i < d; i++) queries[h * d + i]! += weight * key[row + i]!;
    }
  }

  const prepared = {
    queries,
    typeAge: typeAgeSums(weights, d),
    value: Float64Array.from(weights['pool.value.weight'].data),
    out: Float64Array.from(weights['out.proj.weight'].data),
  };
  preparedWeights.set(weights, prepared);
  return prepared;
}

/** T[t] + A[b] at (t * buckets + b) * D. */
function typeAgeSums(weights: NeuralWeights, d: number): Float64Array {
  const typeRows = weights['token.type.weight'].data;
  const ageRows = weights['token.age.weight'].data;
  const types = typeRows.length / d;
  const buckets = ageRows.length / d;
  const sums = new Float64Array(types * buckets * d);
  for (let t = 0; t < types; t++) {
    for (let b = 0; b < buckets; b++) {
      const out = (t * buckets + b) * d;
      for (let i = 0; i < d; i++) sums[out + i] = typeRows[t * d + i]! + ageRows[b * d + i]!;
    }
  }
  return sums;
}

/**
 * The encoding of a history (events in time order, oldest first); only the last
 * `config.historyLength` events are read. An empty history gives b_o, the encoding of "nothing
 * known": its scores are the learned item prior b_o · (Q e + b_q). Events may carry the raw
 * embedding or, much faster, the cached `projectTokenInput`; both give the same encoding up to
 * float32 rounding of the cache. Throws RangeError on a type index or vector length that does
 * not fit the config. `weights` must not be modified after the first call with them (derived
 * values are cached per weights object).
 */
export function encodeHistory(
  weights: NeuralWeights,
  config: NeuralConfig,
  history: readonly HistoryEvent[],
): Float32Array {
  const d = config.modelDim;
  const heads = config.heads;
  const n = Math.min(history.length, config.historyLength);
  if (n === 0) return Float32Array.from(weights['out.proj.bias'].data);

  const prepared = prepare(weights, d, heads);
  ensureScratch(n, d, heads);
  fillTokens(weights, config, prepared, history, history.length - n, n);
  attend(prepared.queries, n, d, heads);
  return project(prepared, weights['out.proj.bias'].data, d, heads);
}

/**
 * tokens[j] = (cached or computed P e + b_p) + T[type] + A[bucket] for the last n events; with
 * four heads or more, also the scores of heads 0..3 while each token is in registers.
 */
function fillTokens(
  weights: NeuralWeights,
  config: NeuralConfig,
  prepared: Prepared,
  history: readonly HistoryEvent[],
  first: number,
  n: number,
): void {
  const d = config.modelDim;
  const { queries, typeAge } = prepared;
  const { tokens, alphas } = scratch;
  const fused = config.heads >= 4;

  for (let j = 0; j < n; j++) {
    const event = history[first + j]!;
    const base = tokenBase(weights, config, event, first + j);
    const bucket = ageBucket(event.ageMs, config.ageBuckets);
    const sum = (event.typeIndex * config.ageBuckets + bucket) * d;
    const offset = j * d;
    if (!fused) {
      for (let i = 0; i < d; i++) tokens[offset + i] = base[i]! + typeAge[sum + i]!;
      continue;
    }

    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let i = 0; i < d; i++) {
      const t = base[i]! + typeAge[sum + i]!;
      tokens[offset + i] = t;
      s0 += queries[i]! * t;
      s1 += queries[d + i]! * t;
      s2 += queries[2 * d + i]! * t;
      s3 += queries[3 * d + i]! * t;
    }
    alphas[j] = s0;
    alphas[n + j] = s1;
    alphas[2 * n + j] = s2;
    alphas[3 * n + j] = s3;
  }
}

/** The event's P e + b_p, checked against the config. */
function tokenBase(
  weights: NeuralWeights,
  config: NeuralConfig,
  event: HistoryEvent,
  index: number,
): Float32Array {
  const typeIndex = event.typeIndex;
  if (!Number.isInteger(typeIndex) || typeIndex < 0 || typeIndex >= config.types.length) {
    throw new RangeError(
      `history event ${index}: typeIndex ${typeIndex} is not in 0..${config.types.length - 1}`,
    );
  }
  const base =
    'projection' in event ? event.projection : projectTokenInput(weights, event.embedding);
  if (base.length !== config.modelDim) {
    throw new RangeError(
      `history event ${index}: projection has length ${base.length}, expected ${config.modelDim}`,
    );
  }
  return base;
}

/**
 * Scores, softmax over the events per head, and pooled[h] = Σ_j alpha_hj tokens[j]. Heads go
 * four at a time through one read of each token and the pooling keeps its sums in registers:
 * on V8 both are two to three times faster than one head at a time, these loops being bound by
 * loads and stores rather than by multiplications.
 */
function attend(queries: Float64Array, n: number, d: number, heads: number): void {
  const { tokens, alphas, pooled } = scratch;

  let h = heads >= 4 ? 4 : 0; // fillTokens scored heads 0..3
  for (; h + 4 <= heads; h += 4) scoreFourHeads(queries, tokens, alphas, h, n, d);
  for (; h < heads; h++) scoreHead(queries, tokens, alphas, h, n, d);
  for (h = 0; h < heads; h++) softmaxInPlace(alphas, h * n, n);

  for (h = 0; h + 4 <= heads; h += 4) poolFourHeads(tokens, alphas, pooled, h, n, d);
  for (; h < heads; h++) poolHead(tokens, alphas, pooled, h, n, d);
}

function scoreFourHeads(
  queries: Float64Array,
  tokens: Float64Array,
  scores: Float64Array,
  h: number,
  n: number,
  d: number,
): void {
  const q0 = h * d;
  const q1 = q0 + d;
  const q2 = q1 + d;
  const q3 = q2 + d;
  for (let j = 0; j < n; j++) {
    const offset = j * d;
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let i = 0; i < d; i++) {
      const t = tokens[offset + i]!;
      s0 += queries[q0 + i]! * t;
      s1 += queries[q1 + i]! * t;
      s2 += queries[q2 + i]! * t;
      s3 += queries[q3 + i]! * t;
    }
    scores[h * n + j] = s0;
    scores[(h + 1) * n + j] = s1;
    scores[(h + 2) * n + j] = s2;
    scores[(h + 3) * n + j] = s3;
  }
}

function scoreHead(
  queries: Float64Array,
  tokens: Float64Array,
  scores: Float64Array,
  h: number,
  n: number,
  d: number,
): void {
  const q = h * d;
  for (let j = 0; j < n; j++) {
    const offset = j * d;
    let sum = 0;
    for (let i = 0; i < d; i++) sum += queries[q + i]! * tokens[offset + i]!;
    scores[h * n + j] = sum;
  }
}

/** values[from .. from + n) = softmax of themselves (max subtracted first). */
function softmaxInPlace(values: Float64Array, from: number, n: number): void {
  let max = -Infinity;
  for (let j = from; j < from + n; j++) if (values[j]! > max) max = values[j]!;
  let total = 0;
  for (let j = from; j < from + n; j++) {
    const weight = Math.exp(values[j]! - max);
    values[j] = weight;
    total += weight;
  }
  const inverse = 1 / total;
  for (let j = from; j < from + n; j++) values[j]! *= inverse;
}

/** pooled[h + k][i] for k < 4, two dimensions at a time (eight sums in registers). */
function poolFourHeads(
  tokens: Float64Array,
  alphas: Float64Array,
  pooled: Float64Array,
  h: number,
  n: number,
  d: number,
): void {
  const a0 = h * n;
  const a1 = a0 + n;
  const a2 = a1 + n;
  const a3 = a2 + n;
  const p0 = h * d;
  let i = 0;
  for (; i + 2 <= d; i += 2) {
    let s00 = 0;
    let s01 = 0;
    let s10 = 0;
    let s11 = 0;
    let s20 = 0;
    let s21 = 0;
    let s30 = 0;
    let s31 = 0;
    for (let j = 0; j < n; j++) {
      const offset = j * d + i;
      const t0 = tokens[offset]!;
      const t1 = tokens[offset + 1]!;
      const w0 = alphas[a0 + j]!;
      const w1 = alphas[a1 + j]!;
      const w2 = alphas[a2 + j]!;
      const w3 = alphas[a3 + j]!;
      s00 += w0 * t0;
      s01 += w0 * t1;
      s10 += w1 * t0;
      s11 += w1 * t1;
      s20 += w2 * t0;
      s21 += w2 * t1;
      s30 += w3 * t0;
      s31 += w3 * t1;
    }
    pooled[p0 + i] = s00;
    pooled[p0 + i + 1] = s01;
    pooled[p0 + d + i] = s10;
    pooled[p0 + d + i + 1] = s11;
    pooled[p0 + 2 * d + i] = s20;
    pooled[p0 + 2 * d + i + 1] = s21;
    pooled[p0 + 3 * d + i] = s30;
    pooled[p0 + 3 * d + i + 1] = s31;
  }
  for (let k = 0; k < 4 && i < d; k++) {
    let sum = 0;
    for (let j = 0; j < n; j++) sum += alphas[a0 + k * n + j]! * tokens[j * d + i]!;
    pooled[p0 + k * d + i] = sum;
  }
}

function poolHead(
  tokens: Float64Array,
  alphas: Float64Array,
  pooled: Float64Array,
  h: number,
  n: number,
  d: number,
): void {
  const out = h * d;
  pooled.fill(0, out, out + d);
  for (let j = 0; j < n; j++) {
    const alpha = alphas[h * n + j]!;
    const offset = j * d;
    for (let i = 0; i < d; i++) pooled[out + i]! += alpha * tokens[offset + i]!;
  }
}

/** encoding = O concat_h(V_h pooled[h]) + b_o. */
function project(prepared: Prepared, bias: Float32Array, d: number, heads: number): Float32Array {
  const headDim = d / heads;
  const { pooled, concat } = scratch;
  const { value, out } = prepared;

  for (let r = 0; r < d; r++) {
    concat[r] = rowDot(value, r * d, pooled, Math.floor(r / headDim) * d, d);
  }
  const encoding = new Float32Array(d);
  for (let r = 0; r < d; r++) encoding[r] = bias[r]! + rowDot(out, r * d, concat, 0, d);
  return encoding;
}

/** Σ_i matrix[row + i] · vector[from + i] for i < d, with four partial sums. */
function rowDot(
  matrix: Float64Array,
  row: number,
  vector: Float64Array,
  from: number,
  d: number,
): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 4 <= d; i += 4) {
    s0 += matrix[row + i]! * vector[from + i]!;
    s1 += matrix[row + i + 1]! * vector[from + i + 1]!;
    s2 += matrix[row + i + 2]! * vector[from + i + 2]!;
    s3 += matrix[row + i + 3]! * vector[from + i + 3]!;
  }
  for (; i < d; i++) s0 += matrix[row + i]! * vector[from + i]!;
  return s0 + s1 + s2 + s3;
}

/**
 * A short content hash of the weights, 16 hex digits: FNV-1a (32 bits) and a second 32-bit
 * multiplicative hash with another prime and seed, both over the float32 bytes in tensor order.
 * Not cryptographic; the same weights always get the same digest, and two different models a
 * different one with odds of about 2^-64 of a collision.
 */
export function weightsDigest(weights: NeuralWeights): string {
  let fnv = 0x811c9dc5;
  let other = 0x9747b28c;
  for (const name of TENSOR_NAMES) {
    const { buffer, byteOffset, byteLength } = weights[name].data;
    const bytes = new Uint8Array(buffer, byteOffset, byteLength);
    for (let i = 0; i < bytes.length; i++) {
      fnv = Math.imul(fnv ^ bytes[i]!, 0x01000193);
      other = Math.imul(other ^ bytes[i]!, 0x5bd1e995);
      other ^= other >>> 15;
    }
  }
  const hex = (value: number): string => (value >>> 0).toString(16).padStart(8, '0');
  return hex(fnv) + hex(other);
}
