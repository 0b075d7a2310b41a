/**
 * The neural worker against the real Kafka and Redis: the stored encoding equals the encoding
 * computed offline from the same history, and a model swap while events flow leaves every user
 * with one encoding made entirely by one named model version.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { LoadedModel } from '../../src/features/neural-encode.js';
import { saveModel } from '../../src/neural/files.js';
import { createConfig, initWeights } from '../../src/neural/model.js';
import { createLogger } from '../../src/ops/logger.js';
import { createRegistry } from '../../src/ops/metrics.js';
import { FeatureReader } from '../../src/reader/feature-reader.js';
import { NeuralStateStore } from '../../src/state/neural-state.js';
import { compareHistory } from '../../src/state/user-state.js';
import { NeuralMetrics, NeuralWorker } from '../../src/workers/neural-worker.js';
import { defer } from '../helpers/cleanup.js';
import {
  eventMessages,
  loadCatalogueIntoRedis,
  randomCatalogue,
  randomEvents,
} from '../helpers/fixtures.js';
import {
  REDIS_URL,
  checkNothingLeftBehind,
  produce,
  provision,
  testConfig,
  waitFor,
} from '../helpers/services.js';

checkNothingLeftBehind();

const DIM = 12;
const USERS = ['ann', 'ben', 'cat'];
const TYPES = ['click', 'like', 'purchase', 'dislike', 'skip'];

async function writeModel(dir: string, seed: number): Promise<LoadedModel> {
  const config = createConfig({
    inputDim: DIM,
    types: TYPES,
    modelDim: 8,
    heads: 2,
    historyLength: 100,
    version: `test-${seed}`,
  });
  const weights = initWeights(config, seed);
  await saveModel(dir, config, weights);
  return new LoadedModel(config, weights);
}

async function setUp(
  t: TestContext,
): Promise<{ config: Config; dir: string; redis: Redis; items: Map<string, Float32Array> }> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-model-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  const config = testConfig({ AFFINITY_NEURAL_MODEL_DIR: dir, AFFINITY_NEURAL_MODEL_POLL: '50ms' });
  await provision(t, config, 2);
  const items = randomCatalogue(30, DIM, 4);
  await loadCatalogueIntoRedis(config, items);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  return { config, dir, redis, items };
}

async function startNeuralWorker(t: TestContext, config: Config): Promise<NeuralWorker> {
  const worker = new NeuralWorker(
    config,
    createLogger('silent'),
    new NeuralMetrics(createRegistry(false)),
  );
  defer(t, () => worker.close());
  await worker.start();
  return worker;
}

/** The encoder input as the definition says: the newest N events, ascending. */
function offlineHistory(events: readonly InteractionEvent[], user: string) {
  return events
    .filter((event) => event.user === user)
    .map((event) => ({ item: event.item, ts: event.ts, type: event.type }))
    .sort(compareHistory)
    .slice(-100);
}

async function storedCount(store: NeuralStateStore): Promise<number> {
  const states = await store.loadMany(USERS);
  return [...states.values()].reduce((sum, state) => sum + state.history.length, 0);
}

test('the stored encoding equals the offline encoding of the same history', async (t) => {
  const { config, dir, redis, items } = await setUp(t);
  const model = await writeModel(dir, 1);
  const events = randomEvents(USERS, 20, 30, 3, Date.now());
  await produce(config.eventsTopic, eventMessages(events));
  await startNeuralWorker(t, config);

  const store = new NeuralStateStore(redis, { prefix: config.keyPrefix }, 0);
  await waitFor('every event encoded', async () => (await storedCount(store)) === events.length);
  const states = await store.loadMany(USERS);
  for (const user of USERS) {
    const state = states.get(user)!;
    assert.equal(state.model, 'test-1');
    const expected = model.encode(offlineHistory(events, user), (item) => items.get(item));
    assert.deepEqual([...state.encoding!], [...expected], `${user}: encoding`);
  }

  const reader = FeatureReader.fromConfig(config, createLogger('silent'));
  defer(t, () => reader.close());
  const { items: scored } = await reader.features('ann', ['i3'], Date.now());
  const itemVector = model.itemVector('i3', items.get('i3')!);
  const encoding = states.get('ann')!.encoding!;
  const score = encoding.reduce((sum, x, k) => sum + x * itemVector[k]!, 0);
  // float32 vectors, float64 sums: the reader's dot product equals this one to 1e-9.
  assert.ok(Math.abs(scored[0]!.features['neural.score']! - score) < 1e-9);
});

test('a model swap while events flow leaves no user with a mixed or missing encoding', async (t) => {
  const { config, dir, redis, items } = await setUp(t);
  const models = new Map<string, LoadedModel>();
  const first = await writeModel(dir, 1);
  models.set(first.version, first);
  const events = randomEvents(USERS, 40, 30, 9, Date.now());
  const messages = eventMessages(events);
  await produce(config.eventsTopic, messages.slice(0, 60));
  const worker = await startNeuralWorker(t, config);
  const store = new NeuralStateStore(redis, { prefix: config.keyPrefix }, 0);
  await waitFor('the first events encoded', async () => (await storedCount(store)) === 60);

  const second = await writeModel(dir, 2);
  models.set(second.version, second);
  for (let start = 60; start < messages.length; start += 10) {
    await produce(config.eventsTopic, messages.slice(start, start + 10));
  }
  await waitFor('every event encoded', async () => (await storedCount(store)) === events.length);
  await waitFor('the new model in use', () => worker.models.current?.version === 'test-2');

  const checkConsistent = async () => {
    const states = await store.loadMany(USERS);
    for (const user of USERS) {
      const state = states.get(user)!;
      const model = models.get(state.model ?? '');
      assert.ok(model, `${user}: encoding without a known model (${state.model})`);
      const expected = model.encode(state.history, (item) => items.get(item));
      assert.deepEqual(
        [...state.encoding!],
        [...expected],
        `${user}: encoding made by ${state.model}`,
      );
    }
    return states;
  };
  await checkConsistent();

  const before = await checkConsistent();
  const stale = USERS.filter((user) => before.get(user)!.model !== 'test-2').length;
  const summary = await worker.reencodeAll();
  assert.deepEqual(summary, { usersChecked: USERS.length, encodingsWritten: stale });
  const states = await checkConsistent();
  for (const user of USERS) assert.equal(states.get(user)!.model, 'test-2');
});
