/**
 * StateBuffer solves each changed user's dual vector once per flush, however many events the
 * user had in the batches since the last one, and reports every solve in the dual metrics:
 * affinity_dual_solves_total counts solves and the iteration, residual and time histograms get
 * one observation per solve. A user whose events were all duplicates is not re-solved.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import { EmbeddingCache } from '../../src/items/cache.js';
import { ItemStore } from '../../src/items/store.js';
import { createLogger } from '../../src/ops/logger.js';
import { WorkerMetrics, createRegistry } from '../../src/ops/metrics.js';
import { UserStateStore } from '../../src/state/store.js';
import type { SequencedEvent } from '../../src/state/user-state.js';
import type { Config } from '../../src/config/config.js';
import type { EventColumns } from '../../src/workers/engine-link.js';
import { ColumnsBuilder, signalTypes } from '../../src/workers/engine-link.js';
import { StateBuffer } from '../../src/workers/state-buffer.js';
import { loadCatalogueIntoRedis, randomCatalogue } from '../helpers/fixtures.js';
import { REDIS_URL, deleteKeys, testConfig } from '../helpers/services.js';

const DIM = 6;
const USERS = ['ann', 'ben', 'cid'];

test('one dual solve per changed user and flush, each one in the dual metrics', async (t) => {
  const config = testConfig();
  t.after(() => deleteKeys(config.keyPrefix));
  await loadCatalogueIntoRedis(config, randomCatalogue(20, DIM, 4));
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.quit());
  const keys = { prefix: config.keyPrefix };
  const cache = new EmbeddingCache(new ItemStore(redis, keys), 1000, counters(), true);
  const registry = createRegistry(false);
  const store = new UserStateStore(redis, keys, 0);
  const buffer = new StateBuffer(
    config,
    store,
    cache,
    new WorkerMetrics(registry),
    createLogger('silent'),
  );

  // Two batches before one flush, four events per user in each.
  const first = batch(0, 4);
  const second = batch(4, 4);
  await buffer.apply(...columnsOf(first, config));
  await buffer.apply(...columnsOf(second, config));
  const outcome = await buffer.flush();
  assert.deepEqual(outcome, { users: USERS.length, applied: 2 * 4 * USERS.length });
  assert.deepEqual(await dualCounts(registry), expectedCounts(USERS.length));
  const layout = { dim: DIM, halfLivesMs: config.halfLivesMs };
  for (const [user, state] of await store.loadMany(USERS, layout)) {
    // The one solve saw all eight events of the two batches.
    assert.equal(state.dual?.terms, 8, user);
  }

  // Redelivered events change nothing and solve nothing; one new event solves one user.
  await buffer.apply(...columnsOf(second, config));
  await buffer.flush();
  assert.deepEqual(await dualCounts(registry), expectedCounts(USERS.length));
  const late = [{ ...sequenced('ben', 8), position: { partition: 0, offset: 1_000 } }];
  await buffer.apply(...columnsOf(late, config));
  await buffer.flush();
  assert.deepEqual(await dualCounts(registry), expectedCounts(USERS.length + 1));
});

/** Events of partition 0 as the engine receives them. */
function columnsOf(events: readonly SequencedEvent[], config: Config): [EventColumns, number] {
  const builder = new ColumnsBuilder(events.length, signalTypes(config.signals).index);
  for (const { event, position } of events) builder.add(event, position!.offset);
  return [builder.build().columns, 0];
}

function counters() {
  return { hit: () => {}, miss: () => {} };
}

/** `perUser` events for every user, at offsets from `start` on, users interleaved. */
function batch(start: number, perUser: number): SequencedEvent[] {
  const events: SequencedEvent[] = [];
  for (let n = start; n < start + perUser; n++) {
    USERS.forEach((user, u) => {
      events.push({
        ...sequenced(user, n),
        position: { partition: 0, offset: n * USERS.length + u },
      });
    });
  }
  return events;
}

function sequenced(user: string, n: number): SequencedEvent {
  const types = ['click', 'like', 'purchase', 'dislike'];
  const event = {
    user,
    item: `i${(n * 7 + user.length) % 20}`,
    ts: 1_700_000_000_000 + n * 60_000,
    type: types[n % types.length]!,
  };
  return { event };
}

function expectedCounts(solves: number) {
  return { solves, iterations: solves, residuals: solves, seconds: solves };
}

/** The solve counter and the observation count of each dual histogram. */
async function dualCounts(registry: Registry) {
  const value = async (metric: string, sample: string): Promise<number> => {
    // Histograms name each sample (_bucket, _sum, _count); a counter's one value has no name.
    const values: { value: number; metricName?: string }[] = (
      await registry.getSingleMetric(metric)!.get()
    ).values;
    return values.find((entry) => (entry.metricName ?? metric) === sample)?.value ?? 0;
  };
  return {
    solves: await value('affinity_dual_solves_total', 'affinity_dual_solves_total'),
    iterations: await value('affinity_dual_iterations', 'affinity_dual_iterations_count'),
    residuals: await value(
      'affinity_dual_relative_residual',
      'affinity_dual_relative_residual_count',
    ),
    seconds: await value('affinity_dual_solve_seconds', 'affinity_dual_solve_seconds_count'),
  };
}
