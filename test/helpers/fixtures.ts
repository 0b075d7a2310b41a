import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { DEFAULT_SIGNALS_SPEC, parseSignals } from '../../src/events/types.js';
import type { DecodeLimits } from '../../src/stream/decode.js';
import type { AggregateLayout } from '../../src/features/aggregate.js';
import { ItemStore } from '../../src/items/store.js';
import { createLogger } from '../../src/ops/logger.js';
import { WorkerMetrics, createRegistry } from '../../src/ops/metrics.js';
import { UserStateStore } from '../../src/state/store.js';
import type { SequencedEvent, UpdateContext } from '../../src/state/user-state.js';
import { applyEvents, emptyUserState } from '../../src/state/user-state.js';
import { AffinityWorker } from '../../src/workers/events-worker.js';
import { StateBuffer } from '../../src/workers/state-buffer.js';
import { EmbeddingCache } from '../../src/items/cache.js';
import { defer } from './cleanup.js';
import { REDIS_URL, seededRandom } from './services.js';

/**
 * The limits the stream tests decode with: the default signals, values up to 1,000, events up
 * to a year old and an hour ahead, messages up to `maxMessageBytes`.
 */
export function testDecodeLimits(maxMessageBytes: number): DecodeLimits {
  return {
    maxMessageBytes,
    maxEventValue: 1_000,
    maxEventAgeMs: 365 * 86_400_000,
    maxEventFutureMs: 3_600_000,
    signals: parseSignals(DEFAULT_SIGNALS_SPEC),
  };
}

export const TYPES = ['click', 'like', 'purchase', 'dislike', 'skip'] as const;
export const DEFAULT_WEIGHTS: Record<string, number> = {
  click: 1,
  like: 3,
  purchase: 5,
  dislike: -3,
  skip: -0.5,
};

/** Random unit vectors, one per item id `i0`, `i1`, ... */
export function randomCatalogue(
  count: number,
  dim: number,
  seed: number,
): Map<string, Float32Array> {
  const random = seededRandom(seed);
  const items = new Map<string, Float32Array>();
  for (let i = 0; i < count; i++) {
    const vector = Float32Array.from({ length: dim }, () => random() * 2 - 1);
    const length = Math.hypot(...vector);
    items.set(
      `i${i}`,
      vector.map((x) => x / length),
    );
  }
  return items;
}

/**
 * Stores `items` as the catalogue, as given. `normalized` is what the catalogue's meta says of
 * them (the fixtures are unit vectors either way); a neural model must declare the same.
 */
export async function loadCatalogueIntoRedis(
  config: Config,
  items: ReadonlyMap<string, Float32Array>,
  normalized = true,
): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    const ids = [...items.keys()];
    const dim = items.get(ids[0]!)!.length;
    const vectors = new Float32Array(ids.length * dim);
    ids.forEach((id, row) => vectors.set(items.get(id)!, row * dim));
    await new ItemStore(redis, { prefix: config.keyPrefix }).replaceAll(ids, vectors, {
      dim,
      centered: false,
      normalized,
      mean: null,
    });
  } finally {
    await redis.quit();
  }
}

/** Events with times spread over the last `spanMs`, deliberately out of time order. */
export function randomEvents(
  users: readonly string[],
  perUser: number,
  itemCount: number,
  seed: number,
  nowMs: number,
  spanMs = 10 * 86_400_000,
): InteractionEvent[] {
  const random = seededRandom(seed);
  const events: InteractionEvent[] = [];
  for (let n = 0; n < perUser; n++) {
    for (const user of users) {
      const type = TYPES[Math.floor(random() * TYPES.length)]!;
      const event: InteractionEvent = {
        user,
        item: `i${Math.floor(random() * itemCount)}`,
        ts: Math.round(nowMs - random() * spanMs),
        type,
        ...(random() < 0.2 ? { value: Math.round(random() * 300) / 100 } : {}),
        id: `${user}-${n}`,
      };
      events.push(event);
    }
  }
  return events;
}

export function eventMessages(events: readonly InteractionEvent[]) {
  return events.map((event) => ({ key: event.user, value: JSON.stringify(event) }));
}

export async function startWorker(t: TestContext, config: Config): Promise<AffinityWorker> {
  const worker = new AffinityWorker(
    config,
    createLogger('silent'),
    new WorkerMetrics(createRegistry(false)),
  );
  defer(t, () => worker.close());
  await worker.start();
  return worker;
}

/**
 * A StateBuffer on `redis`, as the engine thread makes one (no dual solves unless `config` asks),
 * with its store and metrics, for tests that drive the buffer without Kafka.
 */
export function testStateBuffer(config: Config, redis: Redis) {
  const keys = { prefix: config.keyPrefix };
  const counters = { hit: () => {}, miss: () => {} };
  const cache = new EmbeddingCache(new ItemStore(redis, keys), 1000, counters, false);
  const metrics = new WorkerMetrics(createRegistry(false));
  const store = new UserStateStore(redis, keys, 0);
  const buffer = new StateBuffer(config, store, cache, metrics, createLogger('silent'));
  return { buffer, store, metrics };
}

/**
 * Asserts that each user's state in Redis is the one an uninterrupted worker would have written:
 * the events (all on partition 0, at the offsets of their order) applied once each, in order.
 * Exact: counts, history, the float32 sums and scales, and the applied offsets.
 */
export async function assertAppliedOnce(
  redis: Redis,
  config: Config,
  users: readonly string[],
  events: readonly InteractionEvent[],
  items: ReadonlyMap<string, Float32Array>,
): Promise<void> {
  const dim = items.values().next().value!.length;
  const layout: AggregateLayout = { dim, halfLivesMs: config.halfLivesMs };
  const context: UpdateContext = {
    signals: config.signals,
    layout,
    historyMaxEvents: config.historyMaxEvents,
    pendingMaxEvents: config.pendingMaxEvents,
    embedding: (item) => items.get(item),
  };
  const store = new UserStateStore(redis, { prefix: config.keyPrefix }, 0);
  for (const user of users) {
    const uninterrupted = emptyUserState(layout);
    const own: SequencedEvent[] = [];
    events.forEach((event, offset) => {
      if (event.user === user) own.push({ event, position: { partition: 0, offset } });
    });
    applyEvents(uninterrupted, own, context);

    const stored = await store.load(user, layout);
    assert.equal(stored.eventCount, uninterrupted.eventCount, `${user}: event count`);
    assert.deepEqual(stored.history, uninterrupted.history, `${user}: history`);
    assert.deepEqual(stored.aggregates, uninterrupted.aggregates, `${user}: decayed sums`);
    assert.deepEqual(stored.offsets, uninterrupted.offsets, `${user}: applied offsets`);
  }
}
