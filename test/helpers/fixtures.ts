import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { ItemStore } from '../../src/items/store.js';
import { createLogger } from '../../src/ops/logger.js';
import { WorkerMetrics, createRegistry } from '../../src/ops/metrics.js';
import { AffinityWorker } from '../../src/workers/events-worker.js';
import { defer } from './cleanup.js';
import { REDIS_URL, seededRandom } from './services.js';

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
