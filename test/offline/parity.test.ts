/**
 * Parity of the backfill with the online path, against the real Kafka and Redis: the same events
 * are streamed through the events worker (and, with a model, the neural worker) into Redis in
 * three phases, and after each phase the reader's `features(user, items, t_k)` must equal the
 * backfill's answer to request rows at t_k. Every event produced so far is strictly before t_k,
 * every later one at or after it; some events sit exactly at t_1 and t_2, so they are online only
 * from the next phase on, and the backfill must leave them out at t_k ("strictly before").
 *
 * Bounds. Method 1 (`agg.*`): the worker sums in Kafka order over several batches and the
 * backfill in time order, both into float32 sums: each of the ~60 additions per user rounds by
 * at most 2^-24 of the running sum, so features agree to about 60 x 6e-8 = 4e-6 relative; 1e-5
 * (relative to max(1, |value|)) is the bound. Method 2 (`dual.*`): each side stops CG at a
 * relative residual of AFFINITY_DUAL_TOLERANCE = 1e-9 from a different warm start, so the two
 * vectors differ by at most cond(A) x 2e-9 relative (cond(A) < 1e3 here, with lambda_u >= 1 and
 * a 40-item catalogue), plus float32 storage of the vector (6e-8): 1e-5 |u| is the bound for
 * `dual.score` and `dual.norm`, 1e-5 for `dual.cos`. Method 3 (`neural.*`): both sides run
 * `LoadedModel.encode` on the same neural history into a float32 encoding (stored as float32, so
 * the same bits) and take the same float64 dot product with the same item vector: equal exactly.
 * The model reads 40 events, more than AFFINITY_HISTORY_MAX_EVENTS = 25, and not the `skip`
 * type, so a replay that encoded the method-1 history would differ.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import type { Admin } from 'kafkajs';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { saveModel } from '../../src/neural/files.js';
import { createConfig, initWeights } from '../../src/neural/model.js';
import { runBackfill } from '../../src/offline/backfill.js';
import { methodSettings } from '../../src/offline/settings.js';
import { createLogger } from '../../src/ops/logger.js';
import { createRegistry } from '../../src/ops/metrics.js';
import { FeatureReader } from '../../src/reader/feature-reader.js';
import { NeuralStateStore } from '../../src/state/neural-state.js';
import { NeuralMetrics, NeuralWorker } from '../../src/workers/neural-worker.js';
import { defer } from '../helpers/cleanup.js';
import {
  eventMessages,
  loadCatalogueIntoRedis,
  randomCatalogue,
  randomEvents,
  startWorker,
} from '../helpers/fixtures.js';
import {
  REDIS_URL,
  appliedCount,
  checkNothingLeftBehind,
  produce,
  provision,
  testConfig,
  waitFor,
} from '../helpers/services.js';

checkNothingLeftBehind();

const DIM = 16;
const ITEM_COUNT = 40;
const USERS = ['ann', 'ben', 'cat', 'dov', 'eve'];
const PER_USER = 60;
const DAY_MS = 86_400_000;
const CANDIDATES = ['i0', 'i3', 'i17', 'i28', 'i39', 'no-such-item'];
const RELATIVE_BOUND = 1e-5;

const MODEL_HISTORY_LENGTH = 40;
const MODEL_TYPES = ['click', 'like', 'purchase', 'dislike'];

test('features from Kafka, the worker and Redis equal the backfill at the same times', async (t) => {
  await checkParity(t, { neural: false });
});

test('with a model, neural.* from the neural worker equal the backfill at the same times', async (t) => {
  await checkParity(t, { neural: true });
});

async function checkParity(t: TestContext, options: { neural: boolean }): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-parity-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  const modelDir = join(dir, 'model');
  const config = testConfig({
    AFFINITY_HISTORY_MAX_EVENTS: '25',
    AFFINITY_DUAL_TOLERANCE: '1e-9',
    ...(options.neural ? { AFFINITY_NEURAL_MODEL_DIR: modelDir } : {}),
  });
  const admin = await provision(t, config, 3);
  const items = randomCatalogue(ITEM_COUNT, DIM, 21);
  // Stored as given and declared untransformed, as the backfill below reads it: same bits.
  await loadCatalogueIntoRedis(config, items, false);
  if (options.neural) await writeModel(modelDir);
  const nowMs = Date.now();
  const checkpoints = [nowMs - 6 * DAY_MS, nowMs - 2 * DAY_MS + 1, nowMs + 1];
  const events = [
    ...randomEvents(USERS, PER_USER, ITEM_COUNT, 17, nowMs, 10 * DAY_MS),
    ...eventsAtCheckpoints(checkpoints),
  ];

  await writeInputs(dir, events, items, checkpoints);
  const backfill = await backfillAnswers(dir, config, options.neural ? modelDir : undefined);

  await startWorker(t, config);
  if (options.neural) await startNeuralWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const caughtUp = options.neural ? neuralCaughtUp(redis, admin, config) : async () => true;
  const reader = FeatureReader.fromConfig(config);
  defer(t, () => reader.close());

  let previousMs = Number.NEGATIVE_INFINITY;
  let produced = 0;
  for (const atMs of checkpoints) {
    const phase = events.filter((event) => event.ts >= previousMs && event.ts < atMs);
    await produce(config.eventsTopic, eventMessages(phase));
    produced += phase.length;
    await waitFor(
      `the ${produced} events before ${atMs} applied`,
      async () => (await appliedCount(redis, config, USERS)) === produced && (await caughtUp()),
    );
    for (const user of USERS) {
      const online = await reader.features(user, CANDIDATES, atMs);
      for (const { item, features } of online.items) {
        const label = `${user} ${item} at ${atMs}`;
        const offline = backfill.get(`${user}|${item}|${atMs}`)!;
        assert.equal('neural.score' in offline, options.neural, `${label}: neural.* present`);
        compare(features, offline, label);
      }
    }
    previousMs = atMs;
  }
}

/**
 * A like exactly at the first two checkpoints for two users, each on an item they may not have
 * yet: produced in the phase after that checkpoint, so not online when it is read.
 */
function eventsAtCheckpoints(checkpoints: readonly number[]): InteractionEvent[] {
  return checkpoints.slice(0, 2).flatMap((ts, k) =>
    ['ann', 'ben'].map((user, u) => ({
      user,
      item: `i${5 + 10 * k + u}`,
      ts,
      type: 'like',
      id: `${user}-at-checkpoint-${k}`,
    })),
  );
}

/** A random (untrained) model; the test catalogue is stored as given, so no input transform. */
async function writeModel(dir: string): Promise<void> {
  const config = createConfig({
    inputDim: DIM,
    types: MODEL_TYPES,
    modelDim: 8,
    heads: 2,
    historyLength: MODEL_HISTORY_LENGTH,
    version: 'parity-1',
  });
  await saveModel(dir, config, initWeights(config, 7));
}

async function startNeuralWorker(t: TestContext, config: Config): Promise<void> {
  const metrics = new NeuralMetrics(createRegistry(false));
  const worker = new NeuralWorker(config, createLogger('silent'), metrics);
  defer(t, () => worker.close());
  await worker.start();
}

/**
 * Whether the neural worker has written every event produced so far: for each partition, some
 * user's neural state holds the partition's last offset (a partition is consumed in order and
 * each batch is written before the next one is read, so every earlier offset is written too).
 */
function neuralCaughtUp(redis: Redis, admin: Admin, config: Config): () => Promise<boolean> {
  const store = new NeuralStateStore(redis, { prefix: config.keyPrefix }, 0);
  return async () => {
    const ends = await admin.fetchTopicOffsets(config.eventsTopic);
    const states = [...(await store.loadMany(USERS)).values()];
    return ends.every(({ partition, high }) => {
      const last = Number(high) - 1;
      return last < 0 || states.some((state) => state.offsets.get(partition) === last);
    });
  };
}

async function writeInputs(
  dir: string,
  events: readonly InteractionEvent[],
  items: ReadonlyMap<string, Float32Array>,
  checkpoints: readonly number[],
): Promise<void> {
  const itemLines = [...items].map(([id, vector]) =>
    JSON.stringify({ id, embedding: [...vector] }),
  );
  await writeFile(join(dir, 'items.jsonl'), itemLines.join('\n'));
  await writeFile(
    join(dir, 'events.jsonl'),
    events.map((event) => JSON.stringify(event)).join('\n'),
  );
  const requests = checkpoints.flatMap((atMs) =>
    USERS.flatMap((user) => CANDIDATES.map((item) => `${user},${item},${atMs}`)),
  );
  // Reversed, so the backfill does not get its rows in time order.
  await writeFile(join(dir, 'requests.csv'), requests.reverse().join('\n'));
}

/** The backfill's features keyed by `user|item|ts`. */
async function backfillAnswers(dir: string, config: Config, modelDir: string | undefined) {
  await runBackfill({
    events: { path: join(dir, 'events.jsonl'), timestampUnit: 'ms' },
    itemsPath: join(dir, 'items.jsonl'),
    // The test catalogue is stored as given (already unit length): no transform, same bits.
    catalogue: { center: false, normalize: false },
    requestsPath: join(dir, 'requests.csv'),
    outPath: join(dir, 'features.jsonl'),
    ...(modelDir === undefined ? {} : { modelDir }),
    settings: methodSettings(config),
  });
  const lines = (await readFile(join(dir, 'features.jsonl'), 'utf8')).trim().split('\n');
  const answers = new Map<string, Record<string, number | null>>();
  for (const line of lines) {
    const row = JSON.parse(line) as { user: string; item: string; ts: number; features: never };
    answers.set(`${row.user}|${row.item}|${row.ts}`, row.features);
  }
  return answers;
}

function compare(
  online: Record<string, number | null>,
  offline: Record<string, number | null>,
  label: string,
): void {
  assert.deepEqual(Object.keys(online).sort(), Object.keys(offline).sort(), `${label}: names`);
  const dualNorm = Math.max(1, Math.abs(offline['dual.norm'] ?? 0));
  for (const [name, expected] of Object.entries(offline)) {
    const actual = online[name] ?? null;
    if (expected === null || actual === null || name.startsWith('neural.')) {
      assert.equal(actual, expected, `${label} ${name}`);
      continue;
    }
    const scale =
      name === 'dual.score' || name === 'dual.norm' ? dualNorm : Math.max(1, Math.abs(expected));
    assert.ok(
      Math.abs(actual - expected) <= RELATIVE_BOUND * scale,
      `${label} ${name}: online ${actual}, backfill ${expected}`,
    );
  }
}
