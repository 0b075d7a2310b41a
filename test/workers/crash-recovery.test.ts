/**
 * A worker process killed with SIGKILL in the middle of a stream, then restarted, must end in
 * the same state as an uninterrupted run: every event applied exactly once. The kill lands
 * wherever it lands (between a Redis write and the offset commit is the interesting case, and
 * with small batches it is hit often); the assertion holds for every such point.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Message } from 'kafkajs';
import { Redis } from 'ioredis';
import { defer } from '../helpers/cleanup.js';
import {
  assertAppliedOnce,
  eventMessages,
  loadCatalogueIntoRedis,
  randomCatalogue,
  randomEvents,
} from '../helpers/fixtures.js';
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

checkNothingLeftBehind();

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const USERS = Array.from({ length: 40 }, (_, i) => `user-${i}`);
const DIM = 32;

/** Sends 40 messages every 20 ms, so the stream is still flowing when the kill lands. */
async function produceSteadily(topic: string, messages: Message[]): Promise<void> {
  for (let start = 0; start < messages.length; start += 40) {
    await produce(topic, messages.slice(start, start + 40));
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function spawnWorker(env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [CLI, 'worker'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

test('a worker killed with SIGKILL mid-stream and restarted applies every event exactly once', async (t) => {
  const config = testConfig({ AFFINITY_DUAL_ENABLED: 'false' });
  const admin = await provision(t, config, 1);
  const items = randomCatalogue(200, DIM, 21);
  await loadCatalogueIntoRedis(config, items);
  const events = randomEvents(USERS, 100, 200, 8, Date.now());
  const messages = eventMessages(events);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());

  // Small fetches make many batches, so the kill falls between batches' write and commit.
  const env = configEnv(config, {
    AFFINITY_DUAL_ENABLED: 'false',
    AFFINITY_FETCH_MAX_BYTES_PER_PARTITION: '4096',
    // The restarted worker waits for the killed member's session to expire before it rejoins.
    AFFINITY_KAFKA_SESSION_TIMEOUT: '6s',
  });
  const first = spawnWorker(env);
  defer(t, () => first.kill('SIGKILL'));
  const streaming = produceSteadily(config.eventsTopic, messages);
  await waitFor(
    'a first part of the stream applied',
    async () => (await appliedCount(redis, config, USERS)) >= 500,
  );
  first.kill('SIGKILL');
  await once(first, 'exit');
  const atKill = await appliedCount(redis, config, USERS);
  assert.ok(atKill < events.length, `the kill came too late to test anything (${atKill} applied)`);

  await streaming;
  const second = spawnWorker(env);
  defer(t, () => second.kill('SIGKILL'));
  await waitFor(
    'every event applied',
    async () => (await appliedCount(redis, config, USERS)) === events.length,
    120_000,
  );
  // SIGTERM: the worker finishes, flushes, commits and exits cleanly.
  second.kill('SIGTERM');
  const [exitCode] = (await once(second, 'exit')) as [number | null];
  assert.equal(exitCode, 0, 'graceful stop exits 0');
  const [committed] = await admin.fetchOffsets({
    groupId: config.groupId,
    topics: [config.eventsTopic],
  });
  assert.equal(
    committed?.partitions[0]?.offset,
    String(events.length),
    'offsets committed on stop',
  );

  await assertAppliedOnce(redis, config, USERS, events, items);
});
