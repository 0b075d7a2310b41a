/**
 * The training side of the history attention encoder: a batched forward pass in float64 that
 * keeps what the backward pass needs, the softmax cross-entropy over a set of candidate items,
 * and hand-written gradients for every tensor. The maths is that of `model.ts` (same folded
 * queries, same pooling), checked against central differences in test/neural/gradcheck.test.ts.
 *
 * Notation per example b with tokens t_j (j over its history), heads h, D/H = dh:
 *   f_h      = K_hᵀ q_h / sqrt(dh)                       folded query (D)
 *   s_hj     = f_h · t_j,   a_h = softmax_j(s_h)
 *   u_h      = Σ_j a_hj t_j                               pooled tokens (D)
 *   c        = concat_h(V_h u_h),  x_b = O c + b_o        encoding (D)
 *   v_k      = Q e_k + b_q                                item vector of candidate k (D)
 *   z_bk     = x_b · v_k - logQ_k,  loss_b = logsumexp_k z_bk - z_b,target
 * Backward, with g = dloss/dz = (softmax(z_b) - onehot) / B:
 *   dx_b = Σ_k g_bk v_k,  dv_k = Σ_b g_bk x_b,  dQ += dv_k e_kᵀ,  db_q += dv_k
 *   db_o += dx,  dO += dx cᵀ,  dc = Oᵀ dx,  dV_h += dc_h u_hᵀ,  du_h = V_hᵀ dc_h
 *   da_hj = du_h · t_j,  ds_hj = a_hj (da_hj - Σ_i a_hi da_hi)
 *   dt_j = Σ_h (a_hj du_h + ds_hj f_h),  df_h += Σ_j ds_hj t_j
 *   dq_h = K_h df_h / sqrt(dh),  dK_h += q_h df_hᵀ / sqrt(dh)
 *   dt_j flows to d(P e + b_p) of its item, T[type_j] and A[bucket_j]; dP += d(Pe) eᵀ.
 */
import type { NeuralConfig, NeuralWeights, Tensor, TensorName } from './model.js';
import { TENSOR_NAMES, shapeSize, tensorShapes } from './model.js';

/** Training copy of the weights in float64, one flat row-major array per tensor. */
export type Params = Record<TensorName, Float64Array>;

/** Item embeddings as one row-major matrix: row k is the embedding of catalogue item k. */
export interface EmbeddingMatrix {
  readonly rows: number;
  readonly dim: number;
  readonly vectors: Float32Array;
}

/**
 * A batch of histories, flattened: example b owns tokens offsets[b] .. offsets[b + 1] - 1,
 * oldest first, each with its catalogue row, type index and age bucket. Every example has at
 * least one token.
 */
export interface TokenBatch {
  readonly size: number;
  readonly offsets: Int32Array;
  readonly items: Int32Array;
  readonly types: Int32Array;
  readonly buckets: Int32Array;
}

/**
 * The items each example's softmax runs over (catalogue rows, no repeats) with the correction
 * subtracted from their logits (log of the sampling probability; null for the full softmax),
 * and per example the column of its target in `items`.
 */
export interface Candidates {
  readonly items: Int32Array;
  readonly logQ: Float64Array | null;
  readonly targetColumns: Int32Array;
}

export function zerosLike(config: NeuralConfig): Params {
  const shapes = tensorShapes(config);
  const params = {} as Params;
  for (const name of TENSOR_NAMES) params[name] = new Float64Array(shapeSize(shapes[name]));
  return params;
}

export function paramsFromWeights(weights: NeuralWeights): Params {
  const params = {} as Params;
  for (const name of TENSOR_NAMES) params[name] = Float64Array.from(weights[name].data);
  return params;
}

export function weightsFromParams(params: Params, config: NeuralConfig): NeuralWeights {
  const shapes = tensorShapes(config);
  const weights = {} as Record<TensorName, Tensor>;
  for (const name of TENSOR_NAMES) {
    weights[name] = { shape: shapes[name], data: Float32Array.from(params[name]) };
  }
  return weights;
}

/** Grows a float64 buffer to at least `length`; contents are not kept. */
function sized(buffer: Float64Array<ArrayBuffer>, length: number): Float64Array<ArrayBuffer> {
  return buffer.length >= length ? buffer : new Float64Array(Math.max(length, buffer.length * 2));
}

/**
 * Buffers reused across batches. One workspace per training run; not shared between threads.
 * `slot[k]` maps catalogue row k to its row in the per-batch token bases (or -1).
 */
export class Workspace {
  slot: Int32Array = new Int32Array(0);
  unique: Int32Array = new Int32Array(0);
  uniqueCount = 0;
  bases = new Float64Array(0);
  baseGrads = new Float64Array(0);
  tokens = new Float64Array(0);
  tokenGrads = new Float64Array(0);
  alphas = new Float64Array(0);
  pooled = new Float64Array(0);
  concat = new Float64Array(0);
  encodings = new Float64Array(0);
  encodingGrads = new Float64Array(0);
  folded = new Float64Array(0);
  foldedGrads = new Float64Array(0);
  itemVectors = new Float64Array(0);
  itemGrads = new Float64Array(0);
  logits = new Float64Array(0);
  scratch = new Float64Array(0);
}

/**
 * Mean loss of a batch; when `grads` is given, adds d(mean loss)/d(param) into it. The
 * encodings stay in `ws.encodings` (size x D) for callers that rank with them.
 */
export function lossAndGradients(
  params: Params,
  config: NeuralConfig,
  embeddings: EmbeddingMatrix,
  batch: TokenBatch,
  candidates: Candidates,
  grads: Params | null,
  ws: Workspace,
): number {
  encodeBatch(params, config, embeddings, batch, ws);
  projectCandidates(params, config, embeddings, candidates.items, ws);
  const loss = softmaxLoss(ws, batch.size, config.modelDim, candidates, grads !== null);
  if (grads === null) return loss;

  candidateBackward(config, embeddings, candidates.items, batch.size, grads, ws);
  encoderBackward(params, config, embeddings, batch, grads, ws);
  return loss;
}

/** Forward pass of the encoder for a batch; fills ws.encodings and the caches for backward. */
export function encodeBatch(
  params: Params,
  config: NeuralConfig,
  embeddings: EmbeddingMatrix,
  batch: TokenBatch,
  ws: Workspace,
): void {
  const d = config.modelDim;
  const heads = config.heads;
  const tokenCount = batch.offsets[batch.size]!;

  foldQueries(params, config, ws);
  projectTokenBases(params, config, embeddings, batch, tokenCount, ws);
  ws.tokens = sized(ws.tokens, tokenCount * d);
  ws.alphas = sized(ws.alphas, tokenCount * heads);
  ws.pooled = sized(ws.pooled, batch.size * heads * d);
  ws.concat = sized(ws.concat, batch.size * d);
  ws.encodings = sized(ws.encodings, batch.size * d);

  for (let b = 0; b < batch.size; b++) {
    buildTokens(params, d, batch, b, ws);
    attendExample(d, heads, batch.offsets[b]!, batch.offsets[b + 1]!, b, ws);
    outputExample(params, d, heads, b, ws);
  }
}

/** ws.folded[h] = K_hᵀ q_h / sqrt(D/H). */
function foldQueries(params: Params, config: NeuralConfig, ws: Workspace): void {
  const d = config.modelDim;
  const heads = config.heads;
  const headDim = d / heads;
  const scale = 1 / Math.sqrt(headDim);
  const q = params['pool.queries'];
  const key = params['pool.key.weight'];
  ws.folded = sized(ws.folded, heads * d);
  const folded = ws.folded;

  folded.fill(0, 0, heads * d);
  for (let h = 0; h < heads; h++) {
    for (let r = 0; r < headDim; r++) {
      const weight = q[h * headDim + r]! * scale;
      const row = (h * headDim + r) * d;
      for (let i = 0; i < d; i++) folded[h * d + i]! += weight * key[row + i]!;
    }
  }
}

/** P e + b_p once per distinct item of the batch, in order of first appearance. */
function projectTokenBases(
  params: Params,
  config: NeuralConfig,
  embeddings: EmbeddingMatrix,
  batch: TokenBatch,
  tokenCount: number,
  ws: Workspace,
): void {
  // Clear the previous batch's slots first, while ws.unique still lists them.
  for (let u = 0; u < ws.uniqueCount; u++) ws.slot[ws.unique[u]!] = -1;
  if (ws.slot.length < embeddings.rows) ws.slot = new Int32Array(embeddings.rows).fill(-1);
  if (ws.unique.length < tokenCount) {
    ws.unique = new Int32Array(Math.max(tokenCount, 2 * ws.unique.length));
  }

  let count = 0;
  for (let t = 0; t < tokenCount; t++) {
    const item = batch.items[t]!;
    if (ws.slot[item] === -1) {
      ws.slot[item] = count;
      ws.unique[count++] = item;
    }
  }
  ws.uniqueCount = count;

  const d = config.modelDim;
  ws.bases = sized(ws.bases, count * d);
  affineRows(
    params['token.proj.weight'],
    params['token.proj.bias'],
    embeddings,
    ws.unique,
    count,
    ws.bases,
  );
}

/**
 * out[u] = W e_rows[u] + b for u < count; W is [D, dIn] row-major. Four rows of W at a time
 * share each load of e (five loads per four multiply-adds instead of eight).
 */
function affineRows(
  weight: Float64Array,
  bias: Float64Array,
  embeddings: EmbeddingMatrix,
  rows: Int32Array,
  count: number,
  out: Float64Array,
): void {
  const d = bias.length;
  const dim = embeddings.dim;
  const vectors = embeddings.vectors;

  for (let u = 0; u < count; u++) {
    const e = rows[u]! * dim;
    const target = u * d;
    let r = 0;
    for (; r + 4 <= d; r += 4) {
      const w0 = r * dim;
      const w1 = w0 + dim;
      const w2 = w1 + dim;
      const w3 = w2 + dim;
      let s0 = bias[r]!;
      let s1 = bias[r + 1]!;
      let s2 = bias[r + 2]!;
      let s3 = bias[r + 3]!;
      for (let c = 0; c < dim; c++) {
        const x = vectors[e + c]!;
        s0 += weight[w0 + c]! * x;
        s1 += weight[w1 + c]! * x;
        s2 += weight[w2 + c]! * x;
        s3 += weight[w3 + c]! * x;
      }
      out[target + r] = s0;
      out[target + r + 1] = s1;
      out[target + r + 2] = s2;
      out[target + r + 3] = s3;
    }
    for (; r < d; r++) {
      let sum = bias[r]!;
      for (let c = 0; c < dim; c++) sum += weight[r * dim + c]! * vectors[e + c]!;
      out[target + r] = sum;
    }
  }
}

function buildTokens(params: Params, d: number, batch: TokenBatch, b: number, ws: Workspace): void {
  const typeRows = params['token.type.weight'];
  const ageRows = params['token.age.weight'];
  const tokens = ws.tokens;
  const bases = ws.bases;

  for (let t = batch.offsets[b]!; t < batch.offsets[b + 1]!; t++) {
    const base = ws.slot[batch.items[t]!]! * d;
    const type = batch.types[t]! * d;
    const age = batch.buckets[t]! * d;
    const out = t * d;
    for (let i = 0; i < d; i++)
      tokens[out + i] = bases[base + i]! + typeRows[type + i]! + ageRows[age + i]!;
  }
}

/** alphas[t * H + h] = softmax over the example's tokens; pooled[b, h] = Σ_t alpha t_t. */
function attendExample(
  d: number,
  heads: number,
  first: number,
  end: number,
  b: number,
  ws: Workspace,
): void {
  const tokens = ws.tokens;
  const folded = ws.folded;
  const alphas = ws.alphas;

  for (let t = first; t < end; t++) {
    for (let h = 0; h < heads; h++) {
      let sum = 0;
      for (let i = 0; i < d; i++) sum += folded[h * d + i]! * tokens[t * d + i]!;
      alphas[t * heads + h] = sum;
    }
  }

  const pooled = ws.pooled;
  for (let h = 0; h < heads; h++) {
    let max = -Infinity;
    for (let t = first; t < end; t++)
      if (alphas[t * heads + h]! > max) max = alphas[t * heads + h]!;
    let total = 0;
    for (let t = first; t < end; t++) {
      const weight = Math.exp(alphas[t * heads + h]! - max);
      alphas[t * heads + h] = weight;
      total += weight;
    }

    const out = (b * heads + h) * d;
    pooled.fill(0, out, out + d);
    for (let t = first; t < end; t++) {
      const alpha = alphas[t * heads + h]! / total;
      alphas[t * heads + h] = alpha;
      for (let i = 0; i < d; i++) pooled[out + i]! += alpha * tokens[t * d + i]!;
    }
  }
}

/** concat[b] = (V_h pooled[b, h])_h, encodings[b] = O concat[b] + b_o. */
function outputExample(params: Params, d: number, heads: number, b: number, ws: Workspace): void {
  const headDim = d / heads;
  const value = params['pool.value.weight'];
  const out = params['out.proj.weight'];
  const bias = params['out.proj.bias'];
  const pooled = ws.pooled;
  const concat = ws.concat;
  const encodings = ws.encodings;

  for (let r = 0; r < d; r++) {
    const source = (b * heads + Math.floor(r / headDim)) * d;
    let sum = 0;
    for (let i = 0; i < d; i++) sum += value[r * d + i]! * pooled[source + i]!;
    concat[b * d + r] = sum;
  }
  for (let r = 0; r < d; r++) {
    let sum = bias[r]!;
    for (let i = 0; i < d; i++) sum += out[r * d + i]! * concat[b * d + i]!;
    encodings[b * d + r] = sum;
  }
}

/** ws.itemVectors[k] = Q e_items[k] + b_q. */
export function projectCandidates(
  params: Params,
  config: NeuralConfig,
  embeddings: EmbeddingMatrix,
  items: Int32Array,
  ws: Workspace,
): void {
  ws.itemVectors = sized(ws.itemVectors, items.length * config.modelDim);
  affineRows(
    params['item.proj.weight'],
    params['item.proj.bias'],
    embeddings,
    items,
    items.length,
    ws.itemVectors,
  );
}

/** Items per block of the logits products: 64 rows of 64 float64 stay in a 32 kB L1 cache. */
const ITEM_BLOCK = 64;

/**
 * ws.logits[b, k] = encodings[b] · itemVectors[k] (size x count), item block by item block,
 * two examples by two items per pass (four loads feed four multiply-adds).
 */
export function computeLogits(ws: Workspace, size: number, count: number, d: number): void {
  ws.logits = sized(ws.logits, size * count);
  const logits = ws.logits;
  const x = ws.encodings;
  const v = ws.itemVectors;

  for (let start = 0; start < count; start += ITEM_BLOCK) {
    const end = Math.min(count, start + ITEM_BLOCK);
    let b = 0;
    for (; b + 2 <= size; b += 2) {
      const x0 = b * d;
      const x1 = x0 + d;
      const r0 = b * count;
      const r1 = r0 + count;
      let k = start;
      for (; k + 2 <= end; k += 2) {
        const v0 = k * d;
        const v1 = v0 + d;
        let s00 = 0;
        let s01 = 0;
        let s10 = 0;
        let s11 = 0;
        for (let i = 0; i < d; i++) {
          const a0 = x[x0 + i]!;
          const a1 = x[x1 + i]!;
          const c0 = v[v0 + i]!;
          const c1 = v[v1 + i]!;
          s00 += a0 * c0;
          s01 += a0 * c1;
          s10 += a1 * c0;
          s11 += a1 * c1;
        }
        logits[r0 + k] = s00;
        logits[r0 + k + 1] = s01;
        logits[r1 + k] = s10;
        logits[r1 + k + 1] = s11;
      }
      if (k < end) {
        logits[r0 + k] = dotRows(x, x0, v, k * d, d);
        logits[r1 + k] = dotRows(x, x1, v, k * d, d);
      }
    }
    if (b < size) {
      for (let k = start; k < end; k++) logits[b * count + k] = dotRows(x, b * d, v, k * d, d);
    }
  }
}

/** Σ_i a[ao + i] · b[bo + i] for i < d. */
function dotRows(a: Float64Array, ao: number, b: Float64Array, bo: number, d: number): number {
  let sum = 0;
  for (let i = 0; i < d; i++) sum += a[ao + i]! * b[bo + i]!;
  return sum;
}

/**
 * Mean cross-entropy over the batch; with `gradients`, replaces the logits by
 * (softmax - onehot) / size, the gradient of the mean loss with respect to them.
 */
function softmaxLoss(
  ws: Workspace,
  size: number,
  d: number,
  candidates: Candidates,
  gradients: boolean,
): number {
  const count = candidates.items.length;
  computeLogits(ws, size, count, d);
  const logits = ws.logits;
  const logQ = candidates.logQ;

  let total = 0;
  for (let b = 0; b < size; b++) {
    const row = b * count;
    if (logQ !== null) for (let k = 0; k < count; k++) logits[row + k]! -= logQ[k]!;
    let max = -Infinity;
    for (let k = 0; k < count; k++) if (logits[row + k]! > max) max = logits[row + k]!;

    const target = row + candidates.targetColumns[b]!;
    const targetLogit = logits[target]!;
    let sum = 0;
    for (let k = 0; k < count; k++) {
      const e = Math.exp(logits[row + k]! - max);
      logits[row + k] = e;
      sum += e;
    }
    total += max + Math.log(sum) - targetLogit;

    if (gradients) {
      const scale = 1 / (sum * size);
      for (let k = 0; k < count; k++) logits[row + k]! *= scale;
      logits[target]! -= 1 / size;
    }
  }
  return total / size;
}

/**
 * From the logit gradients g (in ws.logits): dx_b = Σ_k g_bk v_k into ws.encodingGrads,
 * dv_k = Σ_b g_bk x_b, then dQ and db_q through the item side. Both products keep their sums
 * in registers, item block by item block; for dv the block of g is first transposed so that
 * the sum over examples reads it contiguously.
 */
function candidateBackward(
  config: NeuralConfig,
  embeddings: EmbeddingMatrix,
  items: Int32Array,
  size: number,
  grads: Params,
  ws: Workspace,
): void {
  const d = config.modelDim;
  const count = items.length;
  ws.encodingGrads = sized(ws.encodingGrads, size * d);
  ws.itemGrads = sized(ws.itemGrads, count * d);
  ws.scratch = sized(ws.scratch, ITEM_BLOCK * size);
  ws.encodingGrads.fill(0, 0, size * d);

  for (let start = 0; start < count; start += ITEM_BLOCK) {
    const end = Math.min(count, start + ITEM_BLOCK);
    encodingGradsBlock(ws, size, count, d, start, end);
    itemGradsBlock(ws, size, count, d, start, end);
  }

  affineBackward(
    grads['item.proj.weight'],
    grads['item.proj.bias'],
    embeddings,
    items,
    count,
    ws.itemGrads,
  );
}

/**
 * dx_b += Σ_{k in block} g_bk v_k: two examples by four dimensions per pass over the block
 * (six loads feed eight multiply-adds, the sums stay in registers).
 */
function encodingGradsBlock(
  ws: Workspace,
  size: number,
  count: number,
  d: number,
  start: number,
  end: number,
): void {
  const g = ws.logits;
  const v = ws.itemVectors;
  const dx = ws.encodingGrads;

  let b = 0;
  for (; b + 2 <= size; b += 2) {
    const r0 = b * count;
    const r1 = r0 + count;
    const x0 = b * d;
    const x1 = x0 + d;
    let i = 0;
    for (; i + 4 <= d; i += 4) {
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      let c0 = 0;
      let c1 = 0;
      let c2 = 0;
      let c3 = 0;
      for (let k = start; k < end; k++) {
        const w0 = g[r0 + k]!;
        const w1 = g[r1 + k]!;
        const vk = k * d + i;
        const v0 = v[vk]!;
        const v1 = v[vk + 1]!;
        const v2 = v[vk + 2]!;
        const v3 = v[vk + 3]!;
        a0 += w0 * v0;
        a1 += w0 * v1;
        a2 += w0 * v2;
        a3 += w0 * v3;
        c0 += w1 * v0;
        c1 += w1 * v1;
        c2 += w1 * v2;
        c3 += w1 * v3;
      }
      dx[x0 + i]! += a0;
      dx[x0 + i + 1]! += a1;
      dx[x0 + i + 2]! += a2;
      dx[x0 + i + 3]! += a3;
      dx[x1 + i]! += c0;
      dx[x1 + i + 1]! += c1;
      dx[x1 + i + 2]! += c2;
      dx[x1 + i + 3]! += c3;
    }
    for (; i < d; i++) {
      dx[x0 + i]! += stridedDot(g, r0, v, i, d, start, end);
      dx[x1 + i]! += stridedDot(g, r1, v, i, d, start, end);
    }
  }
  if (b < size) {
    for (let i = 0; i < d; i++) dx[b * d + i]! += stridedDot(g, b * count, v, i, d, start, end);
  }
}

/** Σ_k a[ao + k] · m[k * stride + column] for k in [start, end). */
function stridedDot(
  a: Float64Array,
  ao: number,
  m: Float64Array,
  column: number,
  stride: number,
  start: number,
  end: number,
): number {
  let sum = 0;
  for (let k = start; k < end; k++) sum += a[ao + k]! * m[k * stride + column]!;
  return sum;
}

/**
 * dv_k = Σ_b g_bk x_b for k in the block, from a transposed copy of the block of g (so the sum
 * over examples reads it contiguously); two items by four dimensions per pass.
 */
function itemGradsBlock(
  ws: Workspace,
  size: number,
  count: number,
  d: number,
  start: number,
  end: number,
): void {
  const g = ws.logits;
  const x = ws.encodings;
  const dv = ws.itemGrads;
  const gt = ws.scratch;
  for (let b = 0; b < size; b++) {
    for (let k = start; k < end; k++) gt[(k - start) * size + b] = g[b * count + k]!;
  }

  let k = start;
  for (; k + 2 <= end; k += 2) {
    const g0 = (k - start) * size;
    const g1 = g0 + size;
    const out0 = k * d;
    const out1 = out0 + d;
    let i = 0;
    for (; i + 4 <= d; i += 4) {
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      let c0 = 0;
      let c1 = 0;
      let c2 = 0;
      let c3 = 0;
      for (let b = 0; b < size; b++) {
        const w0 = gt[g0 + b]!;
        const w1 = gt[g1 + b]!;
        const xb = b * d + i;
        const x0 = x[xb]!;
        const x1 = x[xb + 1]!;
        const x2 = x[xb + 2]!;
        const x3 = x[xb + 3]!;
        a0 += w0 * x0;
        a1 += w0 * x1;
        a2 += w0 * x2;
        a3 += w0 * x3;
        c0 += w1 * x0;
        c1 += w1 * x1;
        c2 += w1 * x2;
        c3 += w1 * x3;
      }
      dv[out0 + i] = a0;
      dv[out0 + i + 1] = a1;
      dv[out0 + i + 2] = a2;
      dv[out0 + i + 3] = a3;
      dv[out1 + i] = c0;
      dv[out1 + i + 1] = c1;
      dv[out1 + i + 2] = c2;
      dv[out1 + i + 3] = c3;
    }
    for (; i < d; i++) {
      dv[out0 + i] = stridedDot(gt, g0, x, i, d, 0, size);
      dv[out1 + i] = stridedDot(gt, g1, x, i, d, 0, size);
    }
  }
  if (k < end) {
    const g0 = (k - start) * size;
    for (let i = 0; i < d; i++) dv[k * d + i] = stridedDot(gt, g0, x, i, d, 0, size);
  }
}

/**
 * dW += Σ_u dOut[u] e_rows[u]ᵀ and db += Σ_u dOut[u], four rows u at a time so that each
 * entry of dW is loaded and stored once per four rows.
 */
function affineBackward(
  weightGrad: Float64Array,
  biasGrad: Float64Array,
  embeddings: EmbeddingMatrix,
  rows: Int32Array,
  count: number,
  outGrads: Float64Array,
): void {
  const d = biasGrad.length;
  const dim = embeddings.dim;
  const vectors = embeddings.vectors;

  let u = 0;
  for (; u + 4 <= count; u += 4) {
    const e0 = rows[u]! * dim;
    const e1 = rows[u + 1]! * dim;
    const e2 = rows[u + 2]! * dim;
    const e3 = rows[u + 3]! * dim;
    for (let r = 0; r < d; r++) {
      const g0 = outGrads[u * d + r]!;
      const g1 = outGrads[(u + 1) * d + r]!;
      const g2 = outGrads[(u + 2) * d + r]!;
      const g3 = outGrads[(u + 3) * d + r]!;
      biasGrad[r]! += g0 + g1 + g2 + g3;
      const w = r * dim;
      for (let c = 0; c < dim; c++) {
        weightGrad[w + c]! +=
          g0 * vectors[e0 + c]! +
          g1 * vectors[e1 + c]! +
          g2 * vectors[e2 + c]! +
          g3 * vectors[e3 + c]!;
      }
    }
  }
  for (; u < count; u++) {
    const e = rows[u]! * dim;
    for (let r = 0; r < d; r++) {
      const g = outGrads[u * d + r]!;
      biasGrad[r]! += g;
      const w = r * dim;
      for (let c = 0; c < dim; c++) weightGrad[w + c]! += g * vectors[e + c]!;
    }
  }
}

/** Backward through the encoder for every example, from ws.encodingGrads. */
function encoderBackward(
  params: Params,
  config: NeuralConfig,
  embeddings: EmbeddingMatrix,
  batch: TokenBatch,
  grads: Params,
  ws: Workspace,
): void {
  const d = config.modelDim;
  const heads = config.heads;
  ws.baseGrads = sized(ws.baseGrads, ws.uniqueCount * d);
  ws.baseGrads.fill(0, 0, ws.uniqueCount * d);
  ws.foldedGrads = sized(ws.foldedGrads, heads * d);
  ws.foldedGrads.fill(0, 0, heads * d);
  ws.scratch = sized(ws.scratch, 2 * d + heads * d + config.historyLength * heads);

  for (let b = 0; b < batch.size; b++) {
    outputBackward(params, grads, d, heads, b, ws);
    attentionBackward(grads, d, heads, batch, b, ws);
  }

  affineBackward(
    grads['token.proj.weight'],
    grads['token.proj.bias'],
    embeddings,
    ws.unique,
    ws.uniqueCount,
    ws.baseGrads,
  );
  foldBackward(params, grads, config, ws);
}

/**
 * Through encodings = O concat + b_o and concat = V_h pooled_h: accumulates dO, db_o, dV and
 * leaves du_h (the gradient of the pooled tokens) in scratch[2D .. 2D + H D).
 */
function outputBackward(
  params: Params,
  grads: Params,
  d: number,
  heads: number,
  b: number,
  ws: Workspace,
): void {
  const headDim = d / heads;
  const out = params['out.proj.weight'];
  const value = params['pool.value.weight'];
  const dOut = grads['out.proj.weight'];
  const dBias = grads['out.proj.bias'];
  const dValue = grads['pool.value.weight'];
  const dx = ws.encodingGrads;
  const concat = ws.concat;
  const pooled = ws.pooled;
  const dc = ws.scratch;
  const du = 2 * d;

  dc.fill(0, 0, d);
  for (let r = 0; r < d; r++) {
    const g = dx[b * d + r]!;
    dBias[r]! += g;
    for (let i = 0; i < d; i++) {
      dOut[r * d + i]! += g * concat[b * d + i]!;
      dc[i]! += out[r * d + i]! * g;
    }
  }

  dc.fill(0, du, du + heads * d);
  for (let r = 0; r < d; r++) {
    const g = dc[r]!;
    const h = Math.floor(r / headDim);
    const source = (b * heads + h) * d;
    for (let i = 0; i < d; i++) {
      dValue[r * d + i]! += g * pooled[source + i]!;
      dc[du + h * d + i]! += g * value[r * d + i]!;
    }
  }
}

/** Through the softmax pooling down to the token sums: d(Pe + b_p), dT, dA and df. */
function attentionBackward(
  grads: Params,
  d: number,
  heads: number,
  batch: TokenBatch,
  b: number,
  ws: Workspace,
): void {
  const first = batch.offsets[b]!;
  const end = batch.offsets[b + 1]!;
  const tokens = ws.tokens;
  const alphas = ws.alphas;
  const folded = ws.folded;
  const df = ws.foldedGrads;
  const scratch = ws.scratch;
  const du = 2 * d;
  const ds = 2 * d + heads * d;

  for (let h = 0; h < heads; h++) {
    let mean = 0;
    for (let t = first; t < end; t++) {
      let sum = 0;
      for (let i = 0; i < d; i++) sum += scratch[du + h * d + i]! * tokens[t * d + i]!;
      scratch[ds + (t - first) * heads + h] = sum;
      mean += alphas[t * heads + h]! * sum;
    }
    for (let t = first; t < end; t++) {
      const k = ds + (t - first) * heads + h;
      scratch[k] = alphas[t * heads + h]! * (scratch[k]! - mean);
    }
  }

  const dTypes = grads['token.type.weight'];
  const dAges = grads['token.age.weight'];
  const dBases = ws.baseGrads;
  const dt = scratch;
  for (let t = first; t < end; t++) {
    dt.fill(0, d, 2 * d);
    for (let h = 0; h < heads; h++) {
      const alpha = alphas[t * heads + h]!;
      const gs = scratch[ds + (t - first) * heads + h]!;
      for (let i = 0; i < d; i++) {
        dt[d + i]! += alpha * scratch[du + h * d + i]! + gs * folded[h * d + i]!;
        df[h * d + i]! += gs * tokens[t * d + i]!;
      }
    }

    const base = ws.slot[batch.items[t]!]! * d;
    const type = batch.types[t]! * d;
    const age = batch.buckets[t]! * d;
    for (let i = 0; i < d; i++) {
      const g = dt[d + i]!;
      dBases[base + i]! += g;
      dTypes[type + i]! += g;
      dAges[age + i]! += g;
    }
  }
}

/** f_h = K_hᵀ q_h / sqrt(dh): dq_h = K_h df_h / sqrt(dh), dK_h += q_h df_hᵀ / sqrt(dh). */
function foldBackward(params: Params, grads: Params, config: NeuralConfig, ws: Workspace): void {
  const d = config.modelDim;
  const heads = config.heads;
  const headDim = d / heads;
  const scale = 1 / Math.sqrt(headDim);
  const q = params['pool.queries'];
  const key = params['pool.key.weight'];
  const dq = grads['pool.queries'];
  const dKey = grads['pool.key.weight'];
  const df = ws.foldedGrads;

  for (let h = 0; h < heads; h++) {
    for (let r = 0; r < headDim; r++) {
      const row = (h * headDim + r) * d;
      const qr = q[h * headDim + r]! * scale;
      let sum = 0;
      for (let i = 0; i < d; i++) {
        sum += key[row + i]! * df[h * d + i]!;
        dKey[row + i]! += qr * df[h * d + i]!;
      }
      dq[h * headDim + r]! += sum * scale;
    }
  }
}
