/**
 * Test helpers for the real Kafka and Redis: unique names per test, configuration pointing at
 * them, cleanup registered at creation, and waiting on conditions (never on fixed sleeps).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after } from 'node:test';
import type { TestContext } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import type { Admin, KafkaMessage, Message } from 'kafkajs';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import { loadConfig } from '../../src/config/config.js';
import { defer } from './cleanup.js';

export const BROKERS = process.env['AFFINITY_KAFKA_BROKERS'] ?? '127.0.0.1:19092';
export const REDIS_URL = process.env['AFFINITY_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

/**
 * Every topic, group and key prefix a test file creates starts with this, one per test file
 * (node:test runs each file in its own process): `t-run-<start time, base 36>-<random>`. The
 * time lets scripts/test-leftovers.mjs tell an abandoned run's names from a running one's.
 */
export const RUN_PREFIX = `t-run-${Date.now().toString(36)}-${randomUUID().slice(0, 4)}`;

/** `<RUN_PREFIX>-<role>-<random>`: for a name outside a testConfig, which its creator deletes. */
export function uniqueName(role: string): string {
  return `${RUN_PREFIX}-${role}-${randomUUID().slice(0, 8)}`;
}

/** A configuration with its own topics, groups and key prefix; `env` overrides defaults. */
export function testConfig(env: Record<string, string> = {}): Config {
  const id = `${RUN_PREFIX}-${randomUUID().slice(0, 8)}`;
  const config = loadConfig({
    AFFINITY_KAFKA_BROKERS: BROKERS,
    AFFINITY_REDIS_URL: REDIS_URL,
    AFFINITY_EVENTS_TOPIC: `${id}-events`,
    AFFINITY_DEAD_LETTER_TOPIC: `${id}-dead-letter`,
    AFFINITY_ITEMS_TOPIC: `${id}-items`,
    AFFINITY_GROUP_ID: `${id}-worker`,
    AFFINITY_NEURAL_GROUP_ID: `${id}-neural`,
    AFFINITY_KEY_PREFIX: `${id}:`,
    AFFINITY_HTTP_PORT: '0',
    AFFINITY_HTTP_HOST: '127.0.0.1',
    AFFINITY_LOG_LEVEL: 'silent',
    ...env,
  });
  testIds.set(config, id);
  return config;
}

const testIds = new WeakMap<Config, string>();

/** The id that starts every topic, group and key prefix of a config from `testConfig`. */
export function testId(config: Config): string {
  const id = testIds.get(config);
  if (id === undefined) throw new Error('the config does not come from testConfig()');
  return id;
}

/** The environment a child `affinity` process needs to share `config`'s names. */
export function configEnv(
  config: Config,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    AFFINITY_KAFKA_BROKERS: config.kafkaBrokers.join(','),
    AFFINITY_REDIS_URL: config.redisUrl,
    AFFINITY_EVENTS_TOPIC: config.eventsTopic,
    AFFINITY_DEAD_LETTER_TOPIC: config.deadLetterTopic,
    AFFINITY_ITEMS_TOPIC: config.itemsTopic,
    AFFINITY_GROUP_ID: config.groupId,
    AFFINITY_NEURAL_GROUP_ID: config.neuralGroupId,
    AFFINITY_KEY_PREFIX: config.keyPrefix,
    AFFINITY_HTTP_PORT: '0',
    AFFINITY_HTTP_HOST: '127.0.0.1',
    AFFINITY_LOG_LEVEL: 'warn',
    ...extra,
  };
}

export function testKafka(): Kafka {
  return new Kafka({
    clientId: 'affinity-test',
    brokers: BROKERS.split(','),
    logLevel: logLevel.NOTHING,
  });
}

/** Creates the config's topics; the cleanup it defers deletes everything named after them. */
export async function provision(t: TestContext, config: Config, partitions = 1): Promise<Admin> {
  const admin = testKafka().admin();
  await admin.connect();
  defer(t, () => admin.disconnect());
  await admin.createTopics({
    waitForLeaders: true,
    topics: [
      { topic: config.eventsTopic, numPartitions: partitions },
      { topic: config.deadLetterTopic },
      { topic: config.itemsTopic, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] },
    ],
  });
  // Deferred after the admin's disconnect, so it runs first; everything started later
  // (workers, readers, clients) has been closed by then.
  defer(t, () => deleteEverything(admin, config));
  return admin;
}

/** Deletes the groups, topics and keys named after `config`'s test id. */
async function deleteEverything(admin: Admin, config: Config): Promise<void> {
  const id = testId(config);
  await deleteGroups(admin, id, config.kafkaSessionTimeoutMs);
  const topics = (await admin.listTopics()).filter((topic) => topic.startsWith(`${id}-`));
  if (topics.length > 0) await admin.deleteTopics({ topics });
  await deleteKeys(config.keyPrefix);
}

/**
 * A group can be deleted only once it has no members; a member that was killed rather than
 * closed stays in it until its session times out, so this waits up to that long.
 */
async function deleteGroups(admin: Admin, id: string, sessionTimeoutMs: number): Promise<void> {
  const { groups } = await admin.listGroups();
  const ids = groups.map((group) => group.groupId).filter((group) => group.startsWith(`${id}-`));
  if (ids.length === 0) return;
  await waitFor(
    `no members left in ${ids.join(', ')}`,
    async () => (await admin.describeGroups(ids)).groups.every((g) => g.members.length === 0),
    sessionTimeoutMs + 10_000,
    200,
  );
  await admin.deleteGroups(ids);
}

export async function deleteKeys(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    await redis.quit();
  }
}

/** Sends `messages` in order, `perSend` at a time (each send makes one record batch). */
export async function produce(topic: string, messages: Message[], perSend = 500): Promise<void> {
  const producer = testKafka().producer();
  await producer.connect();
  try {
    for (let start = 0; start < messages.length; start += perSend) {
      const chunk = messages.slice(start, start + perSend);
      await producer.send({ topic, acks: -1, messages: chunk });
    }
  } finally {
    await producer.disconnect();
  }
}

/** Polls `condition` until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  condition: () => Promise<boolean> | boolean,
  timeoutMs = 60_000,
  pollMs = 50,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** Sum of the `n` (events applied) field over the given users' states. */
export async function appliedCount(
  redis: Redis,
  config: Config,
  users: readonly string[],
): Promise<number> {
  const pipeline = redis.pipeline();
  for (const user of users) pipeline.hget(`${config.keyPrefix}u:{${user}}`, 'n');
  const replies = (await pipeline.exec()) ?? [];
  return replies.reduce((sum, [, value]) => sum + Number(value ?? 0), 0);
}

/** A port that was just free: nothing listens there, so a connection is refused at once. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/** Deterministic PRNG (mulberry32) so that a failing case can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/**
 * Registers, for the whole test file, a final check that its tests left no topic, consumer
 * group or Redis key behind (everything under RUN_PREFIX). Call once at the top of every file
 * that touches Kafka or Redis.
 */
export function checkNothingLeftBehind(): void {
  after(async () => {
    const left = await leftovers(RUN_PREFIX);
    assert.deepEqual(left, { topics: [], groups: [], keys: [] }, `left behind by ${RUN_PREFIX}`);
  });
}

/** The topics, groups and Redis keys whose names start with `prefix`, sorted. */
export async function leftovers(
  prefix: string,
): Promise<{ topics: string[]; groups: string[]; keys: string[] }> {
  const admin = testKafka().admin();
  await admin.connect();
  try {
    const topics = (await admin.listTopics()).filter((name) => name.startsWith(prefix));
    const { groups } = await admin.listGroups();
    return {
      topics: topics.sort(),
      groups: groups
        .map((group) => group.groupId)
        .filter((id) => id.startsWith(prefix))
        .sort(),
      keys: (await scanKeys(`${prefix}*`)).sort(),
    };
  } finally {
    await admin.disconnect();
  }
}

async function scanKeys(pattern: string): Promise<string[]> {
  const redis = new Redis(REDIS_URL);
  const found: string[] = [];
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      found.push(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    await redis.quit();
  }
  return found;
}

/** Reads `count` dead letters of `config`, in a group its test's cleanup deletes. */
export async function readDeadLetters(config: Config, count: number): Promise<KafkaMessage[]> {
  const consumer = testKafka().consumer({ groupId: `${testId(config)}-dlq-reader` });
  const received: KafkaMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic: config.deadLetterTopic, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => void received.push(message) });
    await waitFor(`${count} dead letters`, () => received.length >= count);
  } finally {
    await consumer.disconnect();
  }
  return received;
}
