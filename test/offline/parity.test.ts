/**
 * Parity of the backfill with the online path, against the real Kafka and Redis: the same events
 * are streamed through the events worker into Redis in three phases, and after each phase the
 * reader's `features(user, items, t_k)` must equal the backfill's answer to request rows at t_k
 * (every event produced so far is strictly before t_k, every later one at or after it).
 *
 * Bounds. Method 1 (`agg.*`): the worker sums in Kafka order over several batches and the
 * backfill in time order, both into float32 sums: each of the ~60 additions per user rounds by
 * at most 2^-24 of the running sum, so features agree to about 60 x 6e-8 = 4e-6 relative; 1e-5
 * (relative to max(1, |value|)) is the bound. Method 2 (`dual.*`): each side stops CG at a
 * relative residual of AFFINITY_DUAL_TOLERANCE = 1e-9 from a different warm start, so the two
 * vectors differ by at most cond(A) x 2e-9 relative (cond(A) < 1e3 here, with lambda_u >= 1 and
 * a 40-item catalogue), plus float32 storage of the vector (6e-8): 1e-5 |u| is the bound for
 * `dual.score` and `dual.norm`, 1e-5 for `dual.cos`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import type { InteractionEvent } from '../../src/events/types.js';
import { runBackfill } from '../../src/offline/backfill.js';
import { methodSettings } from '../../src/offline/settings.js';
import { FeatureReader } from '../../src/reader/feature-reader.js';
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

test('features from Kafka, the worker and Redis equal the backfill at the same times', async (t) => {
  const config = testConfig({
    AFFINITY_HISTORY_MAX_EVENTS: '25',
    AFFINITY_DUAL_TOLERANCE: '1e-9',
  });
  await provision(t, config, 3);
  const items = randomCatalogue(ITEM_COUNT, DIM, 21);
  await loadCatalogueIntoRedis(config, items);
  const nowMs = Date.now();
  const events = randomEvents(USERS, PER_USER, ITEM_COUNT, 17, nowMs, 10 * DAY_MS);
  const checkpoints = [nowMs - 6 * DAY_MS, nowMs - 2 * DAY_MS + 1, nowMs + 1];

  const dir = await mkdtemp(join(tmpdir(), 'affinity-parity-'));
  defer(t, () => rm(dir, { recursive: true, force: true }));
  await writeInputs(dir, events, items, checkpoints);
  const backfill = await backfillAnswers(dir, config);

  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
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
      async () => (await appliedCount(redis, config, USERS)) === produced,
    );
    for (const user of USERS) {
      const online = await reader.features(user, CANDIDATES, atMs);
      for (const { item, features } of online.items) {
        compare(features, backfill.get(`${user}|${item}|${atMs}`)!, `${user} ${item} at ${atMs}`);
      }
    }
    previousMs = atMs;
  }
});

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
async function backfillAnswers(dir: string, config: ReturnType<typeof testConfig>) {
  await runBackfill({
    events: { path: join(dir, 'events.jsonl'), timestampUnit: 'ms' },
    itemsPath: join(dir, 'items.jsonl'),
    // The test catalogue is stored as given (already unit length): no transform, same bits.
    catalogue: { center: false, normalize: false },
    requestsPath: join(dir, 'requests.csv'),
    outPath: join(dir, 'features.jsonl'),
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
    if (expected === null || actual === null) {
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
