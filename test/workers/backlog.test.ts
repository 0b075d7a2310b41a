/**
 * A backlog read in many small fetches: the worker hands its events to the engine in batches
 * larger than a fetch (events-worker.ts, MIN_ENGINE_BATCH_EVENTS), but never holds them back for
 * long: with far fewer events than that minimum, the open batch still goes to the engine after
 * about two fetch waits, so states are written while the backlog is being read, not only at its
 * end. Every event is then applied once and its offset committed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { defer } from '../helpers/cleanup.js';
import {
  assertAppliedOnce,
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

const USERS = Array.from({ length: 20 }, (_, i) => `user-${i}`);

test('a backlog goes to the engine in batches, and its states are written before its end', async (t) => {
  // Record batches of 20 events, one per fetch: 800 fetches for the backlog; flushes every
  // 50 ms.
  const config = testConfig({
    AFFINITY_FETCH_MAX_BYTES_PER_PARTITION: '2048',
    AFFINITY_FLUSH_INTERVAL: '50ms',
  });
  const admin = await provision(t, config, 1);
  const items = randomCatalogue(50, 8, 9);
  await loadCatalogueIntoRedis(config, items);
  const events = randomEvents(USERS, 800, 50, 10, Date.now());
  await produce(config.eventsTopic, eventMessages(events), 20);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());

  await startWorker(t, config);
  let firstWritten = 0;
  await waitFor(
    'the first states written',
    async () => (firstWritten = await appliedCount(redis, config, USERS)) > 0,
    60_000,
    10,
  );
  assert.ok(
    firstWritten < events.length,
    `states were written while the backlog was read (${firstWritten} of ${events.length})`,
  );

  await waitFor('every event applied', async () => {
    return (await appliedCount(redis, config, USERS)) === events.length;
  });
  await waitFor('every offset committed', async () => {
    const [committed] = await admin.fetchOffsets({
      groupId: config.groupId,
      topics: [config.eventsTopic],
    });
    return committed?.partitions[0]?.offset === String(events.length);
  });
  await assertAppliedOnce(redis, config, USERS, events, items);
});
