/**
 * SIGTERM on a worker that holds applied events not yet written: the graceful stop must write
 * them and commit their offsets before it exits 0. The flush interval is set far beyond the
 * test's length, so only the stop can have written anything; the test checks that Redis held
 * none of the events when the signal was sent, or it would prove nothing.
 *
 * The worker is a child process; it is caught up when its consumer lag metric reads 0.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import {
  eventMessages,
  loadCatalogueIntoRedis,
  randomCatalogue,
  randomEvents,
} from '../helpers/fixtures.js';
import { defer } from '../helpers/cleanup.js';
import {
  REDIS_URL,
  appliedCount,
  checkNothingLeftBehind,
  configEnv,
  produce,
  provision,
  testConfig,
  waitFor,
} from '../helpers/services.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const USERS = Array.from({ length: 10 }, (_, i) => `user-${i}`);

checkNothingLeftBehind();

test('SIGTERM writes the applied events and commits their offsets before exiting', async (t) => {
  const config = testConfig();
  const admin = await provision(t, config, 1);
  const items = randomCatalogue(50, 8, 5);
  await loadCatalogueIntoRedis(config, items);
  const events = randomEvents(USERS, 20, 50, 6, Date.now());
  await produce(config.eventsTopic, eventMessages(events));
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());

  const port = await freePort();
  const worker = spawn(process.execPath, [CLI, 'worker'], {
    env: {
      ...process.env,
      ...configEnv(config, {
        AFFINITY_HTTP_PORT: String(port),
        AFFINITY_FLUSH_INTERVAL: '55s',
        AFFINITY_KAFKA_SESSION_TIMEOUT: '60s',
      }),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  defer(t, () => worker.kill('SIGKILL'));
  await waitFor('the worker to consume the whole topic', async () => {
    const lag = await metricValue(port, 'affinity_consumer_lag_messages');
    const consumed = await metricValue(port, 'affinity_events_consumed_total');
    return lag === 0 && consumed === events.length;
  });

  const beforeStop = await appliedCount(redis, config, USERS);
  assert.equal(beforeStop, 0, 'nothing was written before the stop, so the stop is tested');
  worker.kill('SIGTERM');
  const [exitCode] = (await once(worker, 'exit')) as [number | null];

  assert.equal(exitCode, 0, 'graceful stop exits 0');
  assert.equal(await appliedCount(redis, config, USERS), events.length, 'every event written');
  const [committed] = await admin.fetchOffsets({
    groupId: config.groupId,
    topics: [config.eventsTopic],
  });
  assert.equal(committed?.partitions[0]?.offset, String(events.length), 'offsets committed');
});

/** A port nobody listens on at the time of asking. */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  if (address === null || typeof address === 'string') throw new Error('no TCP address');
  return address.port;
}

/** The sum of a metric's samples from the worker's /metrics, or null while it is not up. */
async function metricValue(port: number, name: string): Promise<number | null> {
  let text: string;
  try {
    text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  } catch {
    return null;
  }
  const samples = text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .map((line) => Number(line.slice(line.lastIndexOf(' ') + 1)));
  return samples.length === 0 ? null : samples.reduce((sum, value) => sum + value, 0);
}
