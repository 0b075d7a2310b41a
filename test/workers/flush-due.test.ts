/**
 * When a flush is due while a backlog is read (state-buffer.ts, flushDue): the stretch of the
 * interval follows the flush about to be made, its changed users times a flush's cost per user,
 * so the first flush of a backlog is not taken for a free one. 5,000 changed users at the prior
 * of 0.05 ms each make a 250 ms flush, which at share 0.1 waits 2,250 ms: long after the plain
 * 10 ms interval has passed, the flush is still not due, unless the consumer has caught up.
 */
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import type { EventColumns } from '../../src/workers/engine-link.js';
import { ColumnsBuilder, signalTypes } from '../../src/workers/engine-link.js';
import { defer } from '../helpers/cleanup.js';
import { loadCatalogueIntoRedis, randomCatalogue, testStateBuffer } from '../helpers/fixtures.js';
import { REDIS_URL, deleteKeys, testConfig, waitFor } from '../helpers/services.js';

const USERS = 5_000;
const PLAIN_INTERVAL_MS = 10;

test('a backlog flush of many users waits for its own cost, not for the plain interval', async (t) => {
  const { config, buffer } = await bufferOnRedis(t);
  const startedMs = performance.now();

  await buffer.apply(clicks(config, USERS, 0), 0);
  await waitFor(
    'the plain interval to pass',
    () => performance.now() - startedMs >= 3 * PLAIN_INTERVAL_MS,
    10_000,
    5,
  );

  const elapsedMs = performance.now() - startedMs;
  assert.ok(elapsedMs < 2_000, `this check ran within the stretched interval (${elapsedMs} ms)`);
  assert.equal(buffer.flushDue(true, false), false, 'reading a backlog: not due yet');
  assert.equal(buffer.flushDue(true, true), true, 'caught up: due on the plain interval');

  assert.deepEqual(await buffer.flush(), { users: USERS, applied: USERS });
});

test('a flush of a few users does not make the next backlog flush wait for the cap', async (t) => {
  // One user's flush costs a round trip and more: over a millisecond for its one user, twenty
  // times the figure per user of a large flush. Were it taken as the cost per user, 5,000
  // changed users would wait for the cap of the interval, 15 s; they wait about 2.25 s.
  const { config, buffer } = await bufferOnRedis(t);

  await buffer.apply(clicks(config, 1, 0), 0);
  assert.deepEqual(await buffer.flush(), { users: 1, applied: 1 });
  await buffer.apply(clicks(config, USERS, 1), 0);
  assert.equal(buffer.flushDue(true, false), false, 'not due at once');
  await waitFor('the backlog flush to be due', () => buffer.flushDue(true, false), 10_000, 20);
});

/** A buffer at the plain interval of 10 ms and share 0.1, on a catalogue in Redis. */
async function bufferOnRedis(t: TestContext) {
  const config = testConfig({
    AFFINITY_DUAL_ENABLED: 'false',
    AFFINITY_FLUSH_INTERVAL: `${PLAIN_INTERVAL_MS}ms`,
    AFFINITY_FLUSH_TIME_SHARE: '0.1',
  });
  defer(t, () => deleteKeys(config.keyPrefix));
  await loadCatalogueIntoRedis(config, randomCatalogue(20, 4, 3));
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  return { config, buffer: testStateBuffer(config, redis).buffer };
}

/** One click for each of `users` users, at consecutive offsets from `first`. */
function clicks(config: Config, users: number, first: number): EventColumns {
  const builder = new ColumnsBuilder(users, signalTypes(config.signals).index);
  for (let n = 0; n < users; n++) {
    const event = { user: `u${n}`, item: `i${n % 20}`, ts: Date.now() - 1_000, type: 'click' };
    builder.add(event, first + n);
  }
  return builder.build().columns;
}
