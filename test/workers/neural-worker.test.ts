/**
 * The neural worker against the real Kafka and Redis: the stored encoding equals the encoding
 * computed offline from the same history (the last N events the model can read, as training
 * builds them); a model swap while events flow leaves every user, in the store and through
 * the reader, with one encoding made entirely by one named model version, and reencode then
 * refreshes exactly the users the swap left behind; a model that does not fit the catalogue
 * is refused; an idle worker still picks up a new model.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import type { Config } from '../../src/config/config.js';
import { AffinityError } from '../../src/errors.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { LoadedModel } from '../../src/features/neural-encode.js';
import { saveModel } from '../../src/neural/files.js';
import { createConfig, initWeights } from '../../src/neural/model.js';
import { createLogger } from '../../src/ops/logger.js';
import { createRegistry } from '../../src/ops/metrics.js';
import { FeatureReader } from '../../src/reader/feature-reader.js';
import type { NeuralUserState } from '../../src/state/neural-state.js';
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
  deleteKeys,
  produce,
  provision,
  testConfig,
  testKafka,
  waitFor,
} from '../helpers/services.js';

checkNothingLeftBehind();

const DIM = 12;
const CATALOGUE_ITEMS = 30;
const USERS = ['ann', 'ben', 'cat'];
const TYPES = ['click', 'like', 'purchase', 'dislike', 'skip'];

interface ModelShape {
  readonly inputDim?: number;
  readonly types?: readonly string[];
  readonly historyLength?: number;
}

async function writeModel(dir: string, seed: number, shape: ModelShape = {}): Promise<LoadedModel> {
  const config = createConfig({
    inputDim: shape.inputDim ?? DIM,
    types: shape.types ?? TYPES,
    modelDim: 8,
    heads: 2,
    historyLength: shape.historyLength ?? 100,
    // As randomCatalogue's vectors are loaded: unit length, not centred.
    inputTransform: { center: false, normalize: true },
    version: `test-${seed}`,
  });
  const weights = initWeights(config, seed);
  await saveModel(dir, config, weights);
  return new LoadedModel(config, weights);
}

interface Setup {
  config: Config;
  dir: string;
  redis: Redis;
  items: Map<string, Float32Array>;
  store: NeuralStateStore;
}

async function setUp(t: TestContext, kafka = true): Promise<Setup> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-model-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  const config = testConfig({ AFFINITY_NEURAL_MODEL_DIR: dir, AFFINITY_NEURAL_MODEL_POLL: '50ms' });
  if (kafka) await provision(t, config, 2);
  else defer(t, () => deleteKeys(config.keyPrefix));
  const items = randomCatalogue(CATALOGUE_ITEMS, DIM, 4);
  await loadCatalogueIntoRedis(config, items);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const store = new NeuralStateStore(redis, { prefix: config.keyPrefix }, 0);
  return { config, dir, redis, items, store };
}

function newWorker(t: TestContext, config: Config, registry = createRegistry(false)) {
  const worker = new NeuralWorker(config, createLogger('silent'), new NeuralMetrics(registry));
  defer(t, () => worker.close());
  return worker;
}

async function startNeuralWorker(
  t: TestContext,
  config: Config,
  registry?: Registry,
): Promise<NeuralWorker> {
  const worker = newWorker(t, config, registry);
  await worker.start();
  return worker;
}

async function counterValue(registry: Registry, name: string): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return Number.NaN;
  return (await metric.get()).values.reduce((sum, { value }) => sum + value, 0);
}

/**
 * The encoder input as training builds it (src/neural/train.ts): the user's events of a type
 * the model knows and with an item in the catalogue, in time order, the last N of them.
 */
function offlineHistory(
  events: readonly InteractionEvent[],
  user: string,
  model: LoadedModel,
  items: ReadonlyMap<string, Float32Array>,
) {
  return events
    .filter((event) => event.user === user)
    .filter((event) => model.config.types.includes(event.type) && items.has(event.item))
    .map((event) => ({ item: event.item, ts: event.ts, type: event.type }))
    .sort(compareHistory)
    .slice(-model.config.historyLength);
}

async function storedCount(store: NeuralStateStore, users = USERS): Promise<number> {
  const states = await store.loadMany(users);
  return [...states.values()].reduce((sum, state) => sum + state.history.length, 0);
}

function dot(a: Float32Array, b: Float32Array): number {
  return a.reduce((sum, x, k) => sum + x * b[k]!, 0);
}

test('the stored encoding equals the offline encoding of the same history', async (t) => {
  const { config, dir, items, store } = await setUp(t);
  const model = await writeModel(dir, 1);
  const events = randomEvents(USERS, 20, CATALOGUE_ITEMS, 3, Date.now());
  await produce(config.eventsTopic, eventMessages(events));
  await startNeuralWorker(t, config);

  await waitFor('every event encoded', async () => (await storedCount(store)) === events.length);
  const states = await store.loadMany(USERS);
  for (const user of USERS) {
    const state = states.get(user)!;
    assert.equal(state.model, 'test-1');
    const expected = model.encode(offlineHistory(events, user, model, items), (item) =>
      items.get(item),
    );
    assert.deepEqual([...state.encoding!], [...expected], `${user}: encoding`);
  }

  const reader = FeatureReader.fromConfig(config, createLogger('silent'));
  defer(t, () => reader.close());
  const { items: scored } = await reader.features('ann', ['i3'], Date.now());
  const score = dot(states.get('ann')!.encoding!, model.itemVector('i3', items.get('i3')!));
  // float32 vectors, float64 sums: the reader's dot product equals this one to 1e-9.
  assert.ok(Math.abs(scored[0]!.features['neural.score']! - score) < 1e-9);
});

/**
 * Serving reads the last N events the model can read, as training does: newer events of a type
 * the model lacks, or of items without an embedding, must not push readable ones out.
 */
test('the encoding reads N usable events when others are of unknown types or items', async (t) => {
  const { config, dir, items, store } = await setUp(t);
  const model = await writeModel(dir, 1, { types: ['click', 'like', 'dislike'], historyLength: 5 });
  // Items i30 .. i33 have no embedding; purchase and skip are types this model lacks.
  const events = randomEvents(USERS, 30, CATALOGUE_ITEMS + 4, 5, Date.now());
  await produce(config.eventsTopic, eventMessages(events));
  const worker = await startNeuralWorker(t, config);

  await waitFor('the consumer caught up', async () => (await lag(config)) === 0);
  const states = await store.loadMany(USERS);
  for (const user of USERS) {
    const expectedHistory = offlineHistory(events, user, model, items);
    assert.equal(expectedHistory.length, 5, `${user}: the fixture gives 5 usable events`);
    const expected = model.encode(expectedHistory, (item) => items.get(item));
    assert.deepEqual([...states.get(user)!.encoding!], [...expected], `${user}: encoding`);
  }
  assert.equal(worker.models.current?.version, 'test-1');
});

/** Messages on the events topic not yet committed by the neural group. */
async function lag(config: Config): Promise<number> {
  const admin = testKafka().admin();
  await admin.connect();
  try {
    const ends = await admin.fetchTopicOffsets(config.eventsTopic);
    const [committed] = await admin.fetchOffsets({
      groupId: config.neuralGroupId,
      topics: [config.eventsTopic],
    });
    return ends.reduce((sum, end) => {
      const at = committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? '-1';
      return sum + Number(end.high) - Math.max(0, Number(at));
    }, 0);
  } finally {
    await admin.disconnect();
  }
}

/** Active users get events all through the swap; quiet users only before it. */
const ACTIVE = ['ann', 'ben', 'cat'];
const QUIET = ['dan', 'eve', 'fay'];
const EVERYONE = [...ACTIVE, ...QUIET];

/**
 * Sends rounds of one event per user, one round per request, from its own producer, until
 * `stopped()`; returns the rounds sent. Times increase by round, so each round is the users'
 * newest event.
 */
async function produceRounds(
  config: Config,
  users: readonly string[],
  startMs: number,
  stopped: () => boolean,
): Promise<number> {
  const producer = testKafka().producer();
  await producer.connect();
  let round = 0;
  try {
    while (!stopped()) {
      const events = roundEvents(users, round, startMs);
      await producer.send({ topic: config.eventsTopic, acks: -1, messages: eventMessages(events) });
      round++;
    }
  } finally {
    await producer.disconnect();
  }
  return round;
}

function roundEvents(users: readonly string[], round: number, startMs: number): InteractionEvent[] {
  return users.map((user, u) => ({
    user,
    item: `i${(round * 7 + u * 3) % CATALOGUE_ITEMS}`,
    ts: startMs + round * 1_000 + u,
    type: TYPES[(round + u) % TYPES.length]!,
    id: `${user}-round-${round}`,
  }));
}

/**
 * Checks every user's stored encoding against the model its `model` field names, recomputed
 * from the stored history: present, made by a known version, and by that version alone.
 */
function checkConsistent(
  states: Map<string, NeuralUserState>,
  models: ReadonlyMap<string, LoadedModel>,
  items: ReadonlyMap<string, Float32Array>,
): Set<string> {
  const versions = new Set<string>();
  for (const [user, state] of states) {
    assert.ok(state.encoding, `${user}: no encoding`);
    const model = models.get(state.model ?? '');
    assert.ok(model, `${user}: encoding without a known model (${state.model})`);
    const expected = model.encode(state.history, (item) => items.get(item));
    assert.deepEqual(
      [...state.encoding],
      [...expected],
      `${user}: encoding made by ${state.model}`,
    );
    versions.add(model.version);
  }
  return versions;
}

/**
 * The reader's score of `item` for `user` must never be null, and must be the score of the
 * encoding stored just before or just after the call (when at most one write fell between).
 */
async function checkReader(
  reader: FeatureReader,
  store: NeuralStateStore,
  user: string,
  before: NeuralUserState,
  models: ReadonlyMap<string, LoadedModel>,
  items: ReadonlyMap<string, Float32Array>,
): Promise<void> {
  const { items: scored } = await reader.features(user, ['i3'], Date.now());
  const score = scored[0]!.features['neural.score'] ?? null;
  assert.ok(score !== null, `${user}: the reader shows no neural score (stored ${before.model})`);

  const after = (await store.loadMany([user])).get(user)!;
  if (after.revision - before.revision > 1) return; // two writes in between: either could be seen
  const scoreOf = (state: NeuralUserState) =>
    dot(state.encoding!, models.get(state.model!)!.itemVector('i3', items.get('i3')!));
  const expected = [scoreOf(before), scoreOf(after)];
  assert.ok(
    expected.some((value) => Math.abs(value - score) < 1e-9),
    `${user}: reader score ${score}, stored encodings score ${expected.join(' and ')}`,
  );
}

test('a model swap while events flow leaves no user with a mixed or missing encoding', async (t) => {
  const { config, dir, items, store } = await setUp(t);
  const models = new Map<string, LoadedModel>();
  const first = await writeModel(dir, 1);
  models.set(first.version, first);
  const startMs = Date.now() - 86_400_000;
  const initial = randomEvents(EVERYONE, 20, CATALOGUE_ITEMS, 9, startMs, 86_400_000);
  await produce(config.eventsTopic, eventMessages(initial));
  const worker = await startNeuralWorker(t, config);
  await waitFor(
    'the first events encoded',
    async () => (await storedCount(store, EVERYONE)) === initial.length,
  );

  // Only the reader's immediate refresh on an unknown version can bring the new model in.
  const reader = FeatureReader.fromConfig(
    { ...config, neuralModelPollMs: 600_000 },
    createLogger('silent'),
  );
  defer(t, () => reader.close());

  // Sample store and reader continuously from here on; a failed check ends every wait below.
  let failure: unknown = null;
  let stopSampling = false;
  const seen = { samples: 0, mixed: 0 };
  const sampling = (async () => {
    while (!stopSampling) {
      const states = await store.loadMany(EVERYONE);
      const versions = checkConsistent(states, models, items);
      for (const user of EVERYONE)
        await checkReader(reader, store, user, states.get(user)!, models, items);
      seen.samples++;
      if (versions.size > 1) seen.mixed++;
    }
  })().catch((err: unknown) => {
    failure = err;
  });
  const healthy = (condition: () => boolean) => () => {
    if (failure) throw failure;
    return condition();
  };

  let stopProducing = false;
  const producing = produceRounds(config, ACTIVE, startMs + 86_400_000, () => stopProducing);
  await waitFor(
    'samples of the first model under load',
    healthy(() => seen.samples >= 3),
  );

  const second = await writeModel(dir, 2);
  models.set(second.version, second);
  await waitFor(
    'the new model in use',
    healthy(() => worker.models.current?.version === 'test-2'),
  );
  // Both versions side by side in the store, sampled while the events still flow.
  await waitFor(
    'samples during the swap',
    healthy(() => seen.mixed >= 3),
  );
  stopProducing = true;
  const rounds = await producing;

  // One last event per active user, sent after the swap: each ends on the new model.
  const last = roundEvents(ACTIVE, rounds, startMs + 86_400_000);
  await produce(config.eventsTopic, eventMessages(last));
  await waitFor('the last events encoded by the new model', async () => {
    if (failure) throw failure;
    const states = await store.loadMany(ACTIVE);
    return last.every(({ user, ts }) => {
      const state = states.get(user)!;
      return state.history.at(-1)?.ts === ts && state.model === 'test-2';
    });
  });
  stopSampling = true;
  await sampling;
  if (failure) throw failure;

  // The quiet users got no event since the swap: only reencode brings them to the new model.
  const before = await store.loadMany(EVERYONE);
  const stale = EVERYONE.filter((user) => before.get(user)!.model !== 'test-2');
  assert.deepEqual(stale, QUIET);
  const summary = await worker.reencodeAll();
  assert.deepEqual(summary, { usersChecked: EVERYONE.length, encodingsWritten: stale.length });
  const after = await store.loadMany(EVERYONE);
  assert.deepEqual([...checkConsistent(after, models, items)], ['test-2']);
});

test('an idle worker picks up a new model on its poll timer', async (t) => {
  const { config, dir, store } = await setUp(t);
  await writeModel(dir, 1);
  const events = randomEvents(USERS, 5, CATALOGUE_ITEMS, 3, Date.now());
  await produce(config.eventsTopic, eventMessages(events));
  const worker = await startNeuralWorker(t, config);
  await waitFor('every event encoded', async () => (await storedCount(store)) === events.length);

  await writeModel(dir, 2);
  await waitFor('the new model in use without an event', () => {
    return worker.models.current?.version === 'test-2';
  });
});

test('a model that does not fit the catalogue is refused; the one in use keeps serving', async (t) => {
  const { config, dir, store } = await setUp(t);
  await writeModel(dir, 1);
  const registry = createRegistry(false);
  const worker = await startNeuralWorker(t, config, registry);

  await writeModel(dir, 2, { inputDim: DIM + 1 });
  await waitFor(
    'the refusal counted',
    async () => (await counterValue(registry, 'affinity_neural_models_refused_total')) === 1,
  );
  const events = randomEvents(USERS, 5, CATALOGUE_ITEMS, 3, Date.now());
  await produce(config.eventsTopic, eventMessages(events));
  await waitFor('every event encoded', async () => (await storedCount(store)) === events.length);
  const states = await store.loadMany(USERS);
  for (const user of USERS) assert.equal(states.get(user)!.model, 'test-1');
  assert.equal(worker.models.current?.version, 'test-1');
});

test('start-up without a model that fits the catalogue fails naming the mismatch', async (t) => {
  const { config, dir } = await setUp(t, false);
  await writeModel(dir, 1, { inputDim: DIM + 4 });
  await assert.rejects(
    newWorker(t, config).start(),
    (err: unknown) =>
      err instanceof AffinityError &&
      err.code === 'CATALOGUE_MISMATCH' &&
      err.message.includes(dir) &&
      /inputDim 16.*dimension 12/.test(err.message),
  );
});

test('reencode without a loadable model fails naming the folder', async (t) => {
  const { config, dir, store, items } = await setUp(t, false);
  // A stored user, so that reencode has something to do.
  const model = await writeModel(join(dir, 'elsewhere'), 1);
  const state = (await store.loadMany(['ann'])).get('ann')!;
  state.encoding = model.encode([], (item) => items.get(item));
  state.model = 'test-1';
  await store.writeMany(new Map([['ann', state]]));

  await assert.rejects(
    newWorker(t, config).reencodeAll(),
    (err: unknown) =>
      err instanceof AffinityError && err.code === 'CONFIG_INVALID' && err.message.includes(dir),
  );
});

test('an encoding that lost a write race and was redone is counted once', async (t) => {
  const { config, dir, redis, store, items } = await setUp(t, false);
  const model = await writeModel(dir, 2);
  const state = (await store.loadMany(['ann'])).get('ann')!;
  state.history = [{ item: 'i1', ts: 1_000, type: 'click' }];
  state.encoding = model.encode([], (item) => items.get(item));
  state.model = 'test-1';
  await store.writeMany(new Map([['ann', state]]));

  const registry = createRegistry(false);
  const worker = newWorker(t, config, registry);
  // Another writer gets in between the worker's first read and its write, once.
  const workerStore = (worker as unknown as { store: NeuralStateStore }).store;
  const loadMany = workerStore.loadMany.bind(workerStore);
  let raced = false;
  workerStore.loadMany = async (users) => {
    const states = await loadMany(users);
    if (!raced) {
      raced = true;
      await redis.hincrby(`${config.keyPrefix}u:{ann}:neural`, 'rev', 1);
    }
    return states;
  };

  const summary = await worker.reencodeAll();
  assert.ok(raced);
  assert.deepEqual(summary, { usersChecked: 1, encodingsWritten: 1 });
  assert.equal(await counterValue(registry, 'affinity_neural_encodings_total'), 1);
  assert.equal((await store.loadMany(['ann'])).get('ann')!.model, 'test-2');
});
