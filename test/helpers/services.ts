/**
 * Test helpers for the real Kafka and Redis: unique names per test, configuration pointing at
 * them, cleanup registered at creation, and waiting on conditions (never on fixed sleeps).
 */
import { randomUUID } from 'node:crypto';
import type { TestContext } from 'node:test';
import { Kafka, logLevel } from 'kafkajs';
import type { Admin, Message } from 'kafkajs';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import { loadConfig } from '../../src/config/config.js';

export const BROKERS = process.env['AFFINITY_KAFKA_BROKERS'] ?? '127.0.0.1:19092';
export const REDIS_URL = process.env['AFFINITY_REDIS_URL'] ?? 'redis://127.0.0.1:6379';

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** A configuration with its own topics, groups and key prefix; `env` overrides defaults. */
export function testConfig(env: Record<string, string> = {}): Config {
  const id = uniqueName('t');
  return loadConfig({
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

/** Creates the config's topics and registers their deletion, its groups' and its keys'. */
export async function provision(t: TestContext, config: Config, partitions = 1): Promise<Admin> {
  const admin = testKafka().admin();
  await admin.connect();
  await admin.createTopics({
    waitForLeaders: true,
    topics: [
      { topic: config.eventsTopic, numPartitions: partitions },
      { topic: config.deadLetterTopic },
      { topic: config.itemsTopic, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] },
    ],
  });
  t.after(async () => {
    const groups = [config.groupId, `${config.groupId}-items`, config.neuralGroupId];
    await admin.deleteGroups(groups).catch(() => undefined);
    await admin.deleteTopics({
      topics: [config.eventsTopic, config.deadLetterTopic, config.itemsTopic],
    });
    await admin.disconnect();
    await deleteKeys(config.keyPrefix);
  });
  return admin;
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

export async function produce(topic: string, messages: Message[]): Promise<void> {
  const producer = testKafka().producer();
  await producer.connect();
  try {
    for (let start = 0; start < messages.length; start += 500) {
      await producer.send({ topic, acks: -1, messages: messages.slice(start, start + 500) });
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
