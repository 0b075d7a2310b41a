/**
 * The hand-written gradients of backward.ts against central finite differences, for every entry
 * of every tensor of a tiny model (dIn 5, D 4, H 2, 3 types, 6 age buckets, 6 items, a batch of
 * five histories of 1 to 5 events), and again with D 6, H 3 so that the blocked kernels' odd
 * remainders (an odd batch, an odd number of candidates, D not a multiple of 4) are covered.
 * Forward and backward run in float64, so the check can be tight:
 *
 *   |numeric - analytic| ≤ 1e-7 + 1e-6 · max(|numeric|, |analytic|)      with step h = 1e-5.
 *
 * The truncation error of the central difference is O(h²) ≈ 1e-10 for these smooth functions and
 * the rounding error about ε · loss / h ≈ 1e-10, both well inside the bound; a wrong term in a
 * gradient is off by the size of the term, orders of magnitude outside it.
 *
 * The same file checks that the serving encoder of model.ts (float32 weights, folded key and
 * value) computes what the training forward pass computes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Candidates, EmbeddingMatrix, Params, TokenBatch } from '../../src/neural/backward.js';
import {
  Workspace,
  encodeBatch,
  lossAndGradients,
  paramsFromWeights,
  weightsFromParams,
  zerosLike,
} from '../../src/neural/backward.js';
import type { HistoryEvent, NeuralConfig, NeuralWeights } from '../../src/neural/model.js';
import { batchCandidates, popularitySampler } from '../../src/neural/train.js';
import {
  TENSOR_NAMES,
  ageBucket,
  createConfig,
  createRandom,
  encodeHistory,
  initWeights,
  projectTokenInput,
} from '../../src/neural/model.js';

const STEP = 1e-5;
const ABSOLUTE_TOLERANCE = 1e-7;
const RELATIVE_TOLERANCE = 1e-6;

const config = createConfig({
  inputDim: 5,
  types: ['click', 'like', 'dislike'],
  modelDim: 4,
  heads: 2,
  historyLength: 5,
  ageBuckets: 6,
});

/** The same with D = 6 and 3 heads of 3. */
const wideConfig = createConfig({ ...config, modelDim: 6, heads: 3 });

/** Params with every entry random (the zero-initialised rows too), so no gradient is trivially 0. */
function randomParams(seed: number, config: NeuralConfig): Params {
  const params = paramsFromWeights(initWeights(config, seed));
  const random = createRandom(seed + 100);
  for (const name of TENSOR_NAMES) {
    const p = params[name];
    for (let i = 0; i < p.length; i++) p[i] = 0.8 * random.normal();
  }
  return params;
}

function randomEmbeddings(rows: number, dim: number, seed: number): EmbeddingMatrix {
  const random = createRandom(seed);
  return { rows, dim, vectors: Float32Array.from({ length: rows * dim }, () => random.normal()) };
}

/** Five histories of 1, 3, 5, 2 and 4 events touching every type and every age bucket. */
function fixedBatch(): TokenBatch {
  const offsets = Int32Array.from([0, 1, 4, 9, 11, 15]);
  const items = Int32Array.from([2, 0, 5, 2, 1, 3, 3, 4, 0, 5, 1, 4, 4, 0, 2]);
  const types = Int32Array.from([0, 1, 2, 0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 1, 0]);
  const buckets = Int32Array.from([0, 5, 1, 0, 3, 2, 4, 1, 0, 2, 5, 3, 3, 0, 1]);
  return { size: 5, offsets, items, types, buckets };
}

function checkAllGradients(config: NeuralConfig, candidates: Candidates): void {
  const params = randomParams(3, config);
  const embeddings = randomEmbeddings(6, config.inputDim, 11);
  const batch = fixedBatch();
  const grads = zerosLike(config);
  lossAndGradients(params, config, embeddings, batch, candidates, grads, new Workspace());
  const loss = (): number =>
    lossAndGradients(params, config, embeddings, batch, candidates, null, new Workspace());

  for (const name of TENSOR_NAMES) {
    const p = params[name];
    let largest = 0;
    for (let i = 0; i < p.length; i++) {
      const saved = p[i]!;
      p[i] = saved + STEP;
      const plus = loss();
      p[i] = saved - STEP;
      const minus = loss();
      p[i] = saved;

      const numeric = (plus - minus) / (2 * STEP);
      const analytic = grads[name][i]!;
      const bound =
        ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * Math.max(Math.abs(numeric), Math.abs(analytic));
      assert.ok(
        Math.abs(numeric - analytic) <= bound,
        `${name}[${i}]: analytic ${analytic}, numeric ${numeric}, bound ${bound}`,
      );
      largest = Math.max(largest, Math.abs(analytic));
    }
    if (name === 'item.proj.bias') {
      // x · (Q e + b_q) adds the same x · b_q to every logit of an example, which softmax
      // cancels: this gradient is exactly zero in theory, and the check above confirms it.
      assert.ok(largest < 1e-9, `item.proj.bias: gradient ${largest}, expected 0 (invariance)`);
    } else {
      assert.ok(largest > 1e-4, `${name}: every gradient entry is ~0, the check would be vacuous`);
    }
  }
}

const FULL_SOFTMAX: Candidates = {
  items: Int32Array.from([0, 1, 2, 3, 4, 5]),
  logQ: null,
  targetColumns: Int32Array.from([4, 0, 2, 4, 1]),
};

/** Three of the six items (an odd count), the log of their sampling probabilities subtracted. */
const SAMPLED: Candidates = {
  items: Int32Array.from([4, 1, 3]),
  logQ: Float64Array.from([-0.7, -2.1, -1.3]),
  targetColumns: Int32Array.from([0, 2, 1, 0, 1]),
};

test('gradients match central differences for every entry of every tensor (full softmax)', () => {
  checkAllGradients(config, FULL_SOFTMAX);
});

/**
 * Candidates as training builds them: the batch's targets plus 3 popularity draws (repeats
 * removed) with their log inclusion probabilities, so the check runs on the sampler's own
 * corrections. With this seed the draws bring in items 0 and 5 and leave item 2 out.
 */
function drawnCandidates(): Candidates {
  const setup = popularitySampler(Float64Array.from([1, 2, 4, 3, 20, 1]));
  const targets = Int32Array.from([4, 1, 3, 4, 1]);
  const drawn = batchCandidates(6, targets, setup, 3, createRandom(7));
  assert.ok(drawn.items.length < 6, 'a sample, not the whole catalogue');
  assert.ok(drawn.logQ !== null && drawn.logQ.every((x) => x < 0 && Number.isFinite(x)));
  return drawn;
}

test('gradients match central differences with sampled candidates and log-Q correction', () => {
  checkAllGradients(config, SAMPLED);
  checkAllGradients(config, drawnCandidates());
});

test('gradients match central differences with D = 6, H = 3 (kernel remainders)', () => {
  checkAllGradients(wideConfig, FULL_SOFTMAX);
  checkAllGradients(wideConfig, SAMPLED);
  checkAllGradients(wideConfig, drawnCandidates());
});

/**
 * Regression: the workspace keeps a map from catalogue row to the batch's token bases and must
 * clear it between batches, also when its buffers grow. A reused workspace stale from a smaller
 * batch gave some tokens the base of another item.
 */
test('a workspace reused across batches of growing size gives the results of a fresh one', () => {
  const params = randomParams(4, config);
  const embeddings = randomEmbeddings(6, config.inputDim, 14);
  const small: TokenBatch = {
    size: 1,
    offsets: Int32Array.from([0, 2]),
    items: Int32Array.from([5, 3]),
    types: Int32Array.from([0, 1]),
    buckets: Int32Array.from([1, 0]),
  };
  const reused = new Workspace();
  const sink = zerosLike(config);
  const smallCandidates = { ...FULL_SOFTMAX, targetColumns: Int32Array.from([2]) };
  lossAndGradients(params, config, embeddings, small, smallCandidates, sink, reused);

  const fresh = zerosLike(config);
  const again = zerosLike(config);
  const batch = fixedBatch();
  const expected = lossAndGradients(
    params,
    config,
    embeddings,
    batch,
    FULL_SOFTMAX,
    fresh,
    new Workspace(),
  );
  const actual = lossAndGradients(params, config, embeddings, batch, FULL_SOFTMAX, again, reused);
  assert.equal(actual, expected);
  for (const name of TENSOR_NAMES) assert.deepEqual(again[name], fresh[name], name);
});

/** The encoding of one history by the training forward pass (float64). */
function trainingEncoding(
  params: Params,
  cfg: NeuralConfig,
  embeddings: EmbeddingMatrix,
  rows: number[],
  types: number[],
  ages: number[],
): Float64Array {
  const batch: TokenBatch = {
    size: 1,
    offsets: Int32Array.from([0, rows.length]),
    items: Int32Array.from(rows),
    types: Int32Array.from(types),
    buckets: Int32Array.from(ages, (age) => ageBucket(age, cfg.ageBuckets)),
  };
  const ws = new Workspace();
  encodeBatch(params, cfg, embeddings, batch, ws);
  return ws.encodings.slice(0, cfg.modelDim);
}

function history(
  embeddings: EmbeddingMatrix,
  rows: number[],
  types: number[],
  ages: number[],
  projected: NeuralWeights | null,
): HistoryEvent[] {
  const dim = embeddings.dim;
  return rows.map((row, j) => {
    const embedding = embeddings.vectors.subarray(row * dim, (row + 1) * dim);
    const common = { typeIndex: types[j]!, ageMs: ages[j]! };
    return projected === null
      ? { ...common, embedding }
      : { ...common, projection: projectTokenInput(projected, embedding) };
  });
}

/**
 * H = 2 takes the one-head-at-a-time paths of the serving encoder, H = 4 the four-head paths,
 * H = 5 with D = 5 both, plus the odd-dimension remainder of the pooling.
 */
const SERVING_CONFIGS = [
  config,
  createConfig({ ...config, modelDim: 8, heads: 4 }),
  createConfig({ ...config, modelDim: 5, heads: 5 }),
];

test('the serving encoder equals the training forward pass, from embeddings and from cached projections', () => {
  for (const cfg of SERVING_CONFIGS) {
    const weights = weightsFromParams(randomParams(5, cfg), cfg);
    const params = paramsFromWeights(weights);
    const embeddings = randomEmbeddings(6, cfg.inputDim, 12);
    const rows = [3, 1, 4, 1, 5];
    const types = [0, 2, 1, 1, 0];
    const ages = [90 * 86_400_000, 5 * 3_600_000, 3_600_000, 1_000, 0];

    const expected = trainingEncoding(params, cfg, embeddings, rows, types, ages);
    for (const projected of [null, weights]) {
      const actual = encodeHistory(weights, cfg, history(embeddings, rows, types, ages, projected));
      for (let i = 0; i < cfg.modelDim; i++) {
        // float32 output and float32 cached projections: a few float32 ulps of the scale.
        assert.ok(
          Math.abs(actual[i]! - expected[i]!) <= 1e-5 * (1 + Math.abs(expected[i]!)),
          `D ${cfg.modelDim}, H ${cfg.heads}, component ${i}: ${actual[i]} vs ${expected[i]}`,
        );
      }
    }
  }
});

test('only the last historyLength events count, and an empty history encodes as b_o', () => {
  const weights = weightsFromParams(randomParams(6, config), config);
  const embeddings = randomEmbeddings(6, config.inputDim, 13);
  const rows = [0, 1, 2, 3, 4, 5, 0];
  const types = [0, 1, 2, 0, 1, 2, 0];
  const ages = [7e8, 6e8, 5e8, 4e8, 3e8, 2e8, 0];

  const long = encodeHistory(weights, config, history(embeddings, rows, types, ages, null));
  const last = encodeHistory(
    weights,
    config,
    history(embeddings, rows.slice(2), types.slice(2), ages.slice(2), null),
  );
  assert.deepEqual(long, last);

  const empty = encodeHistory(weights, config, []);
  assert.deepEqual(empty, weights['out.proj.bias'].data);
  assert.notEqual(empty, weights['out.proj.bias'].data, 'a copy, not the weights themselves');
});

test('age buckets follow floor(log2(1 + hours)) and clamp', () => {
  const hour = 3_600_000;
  assert.equal(ageBucket(0, 16), 0);
  assert.equal(ageBucket(-5, 16), 0);
  assert.equal(ageBucket(Number.NaN, 16), 0);
  assert.equal(ageBucket(hour - 1, 16), 0);
  assert.equal(ageBucket(hour, 16), 1);
  assert.equal(ageBucket(3 * hour, 16), 2);
  assert.equal(ageBucket(7 * hour, 16), 3);
  assert.equal(ageBucket(24 * hour, 16), 4);
  assert.equal(ageBucket(10 * 365 * 24 * hour, 16), 15);
  assert.equal(ageBucket(Infinity, 16), 15);
});
