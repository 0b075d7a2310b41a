/**
 * The reader's neural features against a real Redis (no Kafka: the encodings are written the
 * way the neural worker writes them). Two races of a live system: an item's embedding changes
 * after its item vector was cached, and the neural worker swaps to a new model before the
 * reader's own poll comes round.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import { LoadedModel } from '../../src/features/neural-encode.js';
import { ItemStore } from '../../src/items/store.js';
import { saveModel } from '../../src/neural/files.js';
import { ModelHolder } from '../../src/neural/model-holder.js';
import { createConfig, initWeights } from '../../src/neural/model.js';
import { createLogger } from '../../src/ops/logger.js';
import { FeatureReader } from '../../src/reader/feature-reader.js';
import { RedisNeuralSource } from '../../src/reader/neural-source.js';
import { NeuralStateStore } from '../../src/state/neural-state.js';
import { loadCatalogueIntoRedis, randomCatalogue } from '../helpers/fixtures.js';
import { defer } from '../helpers/cleanup.js';
import { REDIS_URL, checkNothingLeftBehind, deleteKeys, testConfig } from '../helpers/services.js';

checkNothingLeftBehind();

const DIM = 12;
const HOUR_MS = 3_600_000;
const HISTORY = [
  { item: 'i1', ts: 1_000 * HOUR_MS, type: 'click' },
  { item: 'i5', ts: 1_002 * HOUR_MS, type: 'like' },
  { item: 'i7', ts: 1_003 * HOUR_MS, type: 'purchase' },
];

async function writeModel(dir: string, seed: number): Promise<LoadedModel> {
  const config = createConfig({
    inputDim: DIM,
    types: ['click', 'like', 'purchase', 'dislike', 'skip'],
    modelDim: 8,
    heads: 2,
    historyLength: 100,
    inputTransform: { center: false, normalize: true },
    version: `test-${seed}`,
  });
  const weights = initWeights(config, seed);
  await saveModel(dir, config, weights);
  return new LoadedModel(config, weights);
}

async function setUp(t: TestContext) {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-model-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  // The reader's own poll is far away: only the fixes under test can bring a new model in.
  const config = testConfig({ AFFINITY_NEURAL_MODEL_DIR: dir, AFFINITY_NEURAL_MODEL_POLL: '10m' });
  defer(t, () => deleteKeys(config.keyPrefix));
  const items = randomCatalogue(30, DIM, 4);
  await loadCatalogueIntoRedis(config, items);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  return { config, dir, items, redis };
}

/** Stores `model`'s encoding of HISTORY for `user` under `version`, as the neural worker does. */
async function storeEncoding(
  redis: Redis,
  config: Config,
  user: string,
  model: LoadedModel,
  items: ReadonlyMap<string, Float32Array>,
  version = model.version,
): Promise<Float32Array> {
  const store = new NeuralStateStore(redis, { prefix: config.keyPrefix }, 0);
  const state = (await store.loadMany([user])).get(user)!;
  state.history = [...HISTORY];
  state.encoding = model.encode(state.history, (item) => items.get(item));
  state.model = version;
  assert.deepEqual(await store.writeMany(new Map([[user, state]])), []);
  return state.encoding;
}

function dot(a: Float32Array, b: Float32Array): number {
  return a.reduce((sum, x, k) => sum + x * b[k]!, 0);
}

async function neuralScore(reader: FeatureReader, user: string, item: string) {
  const { items } = await reader.features(user, [item], Date.now());
  return items[0]!.features['neural.score'] ?? null;
}

// float32 vectors, float64 sums in the same order: the reader's dot product equals ours to 1e-9.
const TOLERANCE = 1e-9;

test('an item whose embedding changes is scored with the new embedding', async (t) => {
  const { config, dir, items, redis } = await setUp(t);
  const model = await writeModel(dir, 1);
  const encoding = await storeEncoding(redis, config, 'ann', model, items);
  const reader = FeatureReader.fromConfig(config, createLogger('silent'));
  defer(t, () => reader.close());

  const before = await neuralScore(reader, 'ann', 'i3');
  assert.ok(
    Math.abs(before! - dot(encoding, model.itemVector('i3', items.get('i3')!))) < TOLERANCE,
  );

  const itemStore = new ItemStore(redis, { prefix: config.keyPrefix });
  const replacement = randomCatalogue(1, DIM, 99).get('i0')!;
  await itemStore.applyChanges([{ item: 'i3', embedding: replacement }], true);
  const stored = (await itemStore.getMany(['i3'], DIM)).get('i3')!;
  // A fresh LoadedModel has no cache: this is the projection of the embedding now stored.
  const fresh = new LoadedModel(model.config, model.weights).itemVector('i3', stored);

  const after = await neuralScore(reader, 'ann', 'i3');
  const expected = dot(encoding, fresh);
  assert.ok(Math.abs(expected - before!) > 1e-3, 'the change must move the score');
  assert.ok(Math.abs(after! - expected) < TOLERANCE, `score ${after}, expected ${expected}`);
});

test('an encoding of a model the reader has not loaded yet makes it load that model', async (t) => {
  const { config, dir, items, redis } = await setUp(t);
  const first = await writeModel(dir, 1);
  await storeEncoding(redis, config, 'ann', first, items);
  const reader = FeatureReader.fromConfig(config, createLogger('silent'));
  defer(t, () => reader.close());
  assert.notEqual(await neuralScore(reader, 'ann', 'i3'), null);

  // The neural worker swaps and re-encodes ann long before the reader's next poll.
  const second = await writeModel(dir, 2);
  const encoding = await storeEncoding(redis, config, 'ann', second, items);
  const score = await neuralScore(reader, 'ann', 'i3');
  const expected = dot(encoding, second.itemVector('i3', items.get('i3')!));
  assert.ok(score !== null, 'no null while the reader waits for its poll');
  assert.ok(Math.abs(score - expected) < TOLERANCE, `score ${score}, expected ${expected}`);
});

test('refreshes for an unknown model version are rate-limited to one a second', async (t) => {
  const { config, dir, items, redis } = await setUp(t);
  const model = await writeModel(dir, 1);
  const keys = { prefix: config.keyPrefix };
  const models = new ModelHolder(dir, createLogger('silent'));
  let refreshes = 0;
  const refresh = models.refresh.bind(models);
  models.refresh = (catalogue) => {
    refreshes++;
    return refresh(catalogue);
  };
  let nowMs = 0;
  const source = new RedisNeuralSource({
    redis,
    keys,
    models,
    pollMs: 600_000,
    nowMs: () => nowMs,
  });
  // An encoding of a version long gone from the folder: no refresh can make it scorable.
  await storeEncoding(redis, config, 'old', model, items, 'gone');

  const embeddings = new Map([['i3', items.get('i3')!]]);
  const nulls = { encoding: null, itemVector: null };
  assert.deepEqual(await source.inputs('old', ['i3'], embeddings), [nulls]);
  assert.equal(refreshes, 2, 'the first poll, then one refresh for the unknown version');
  nowMs = 999;
  assert.deepEqual(await source.inputs('old', ['i3'], embeddings), [nulls]);
  assert.equal(refreshes, 2, 'within a second: no refresh');
  nowMs = 1_000;
  await source.inputs('old', ['i3'], embeddings);
  assert.equal(refreshes, 3, 'a second later: one more');
});
