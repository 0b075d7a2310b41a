/**
 * A write that lost a race: a consumer that took the partition over (B) wrote a user in between,
 * so the old owner's (A's) next write of that user finds a newer revision. A must read the user
 * again and apply once more every event it applied since its last confirmed write, the newer
 * state skipping those it already holds by their offsets. The states Redis ends with must equal
 * one plain pass over the events, each applied once, whichever consumer applied it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import type { WorkerMetrics } from '../../src/ops/metrics.js';
import type { SequencedEvent, UserState } from '../../src/state/user-state.js';
import { applyEvents, emptyUserState } from '../../src/state/user-state.js';
import type { EventColumns } from '../../src/workers/engine-link.js';
import { ColumnsBuilder, signalTypes } from '../../src/workers/engine-link.js';
import { ItemStore } from '../../src/items/store.js';
import { defer } from '../helpers/cleanup.js';
import { loadCatalogueIntoRedis, randomCatalogue, testStateBuffer } from '../helpers/fixtures.js';
import { REDIS_URL, deleteKeys, testConfig } from '../helpers/services.js';

const DIM = 6;
const USERS = ['ann', 'ben'];
/** Sums are float32: the same additions in the same order, so equal to well within this. */
const SUM_TOLERANCE = 1e-6;

test('a write that lost a race is redone on the newer state, every event applied once', async (t) => {
  const { config, catalogue, a, b } = await twoConsumers(t, 5);

  // Offsets 0-19, the users taking turns. A applies and writes 0-9, then applies 10-19 without
  // writing them.
  await a.buffer.apply(...columnsOf(events(0, 10), config));
  await a.buffer.flush();
  await a.buffer.apply(...columnsOf(events(10, 10), config));
  // B takes over from offset 5 (A's commit lagged): 5-9 are skipped, 10-14 applied, written.
  await b.buffer.apply(...columnsOf(events(5, 10), config));
  await b.buffer.flush();
  // A's write of 10-19 finds B's revision: it reads B's state and applies 15-19 on top.
  const outcome = await a.buffer.flush();

  assert.deepEqual(outcome, { users: USERS.length, applied: 5 }, 'offsets 15-19 applied again');
  assert.equal(await counter(a.metrics, 'stateConflicts'), USERS.length);
  const applied =
    (await counter(a.metrics, 'eventsApplied')) + (await counter(b.metrics, 'eventsApplied'));
  assert.equal(applied, 20, 'each event applied once over both consumers');
  assert.equal(await counter(a.metrics, 'freshness'), 20, "each of A's events in freshness once");

  const stored = await a.store.loadMany(USERS, layoutOf(config));
  for (const user of USERS) {
    const expected = plainPass(config, events(0, 20), user, catalogue);
    assertSameState(stored.get(user)!, expected, user);
  }
});

test('a redone write folds in what the newer state waits for, once its embedding exists', async (t) => {
  const { config, catalogue, redis, a, b } = await twoConsumers(t, 6);
  // Offset 3 (ben's) is of an item without embedding: it waits in every state written below,
  // and none of the events A holds when its write is redone names that item.
  const stream = (start: number, count: number) =>
    events(start, count).map((sequenced) =>
      sequenced.position!.offset === 3
        ? { ...sequenced, event: { ...sequenced.event, item: 'late' } }
        : sequenced,
    );

  await a.buffer.apply(...columnsOf(stream(0, 10), config));
  await a.buffer.flush();
  await a.buffer.apply(...columnsOf(stream(10, 10), config));
  await b.buffer.apply(...columnsOf(stream(5, 10), config));
  await b.buffer.flush();
  const layout = layoutOf(config);
  assert.equal((await a.store.load('ben', layout)).pending.length, 1, "B's state waits");
  const late = randomCatalogue(1, DIM, 7).get('i0')!;
  await new ItemStore(redis, { prefix: config.keyPrefix }).applyChanges(
    [{ item: 'late', embedding: late }],
    true,
  );
  await a.buffer.flush();

  const stored = await a.store.loadMany(USERS, layout);
  const withLate = new Map([...catalogue, ['late', late]]);
  for (const user of USERS) {
    const expected = plainPass(config, stream(0, 20), user, withLate);
    assert.deepEqual(stored.get(user)!.pending, [], `${user}: nothing waits`);
    assertSameState(stored.get(user)!, expected, user, 1e-12);
  }
});

/** The old owner (A) and the new one (B) of partition 0, on one Redis, over one catalogue. */
async function twoConsumers(t: TestContext, seed: number) {
  const config = testConfig({ AFFINITY_DUAL_ENABLED: 'false' });
  defer(t, () => deleteKeys(config.keyPrefix));
  const catalogue = randomCatalogue(20, DIM, seed);
  await loadCatalogueIntoRedis(config, catalogue);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const a = testStateBuffer(config, redis);
  const b = testStateBuffer(config, redis);
  return { config, catalogue, redis, a, b };
}

function layoutOf(config: Config) {
  return { dim: DIM, halfLivesMs: config.halfLivesMs };
}

/** `user`'s state after one plain pass over the stream, every embedding there from the start. */
function plainPass(
  config: Config,
  stream: readonly SequencedEvent[],
  user: string,
  embeddings: ReadonlyMap<string, Float32Array>,
): UserState {
  const layout = layoutOf(config);
  const expected = emptyUserState(layout);
  applyEvents(
    expected,
    stream.filter(({ event }) => event.user === user),
    {
      signals: config.signals,
      layout,
      historyMaxEvents: config.historyMaxEvents,
      pendingMaxEvents: config.pendingMaxEvents,
      embedding: (item) => embeddings.get(item),
    },
  );
  return expected;
}

/** `count` offsets from `start` of partition 0, users taking turns, a minute apart. */
function events(start: number, count: number): SequencedEvent[] {
  const types = ['click', 'like', 'dislike', 'purchase', 'skip'];
  return Array.from({ length: count }, (_, k) => {
    const n = start + k;
    const event = {
      user: USERS[n % USERS.length]!,
      item: `i${(n * 7) % 20}`,
      ts: 1_700_000_000_000 + n * 60_000,
      type: types[n % types.length]!,
    };
    return { event, position: { partition: 0, offset: n } };
  });
}

function columnsOf(batch: readonly SequencedEvent[], config: Config): [EventColumns, number] {
  const builder = new ColumnsBuilder(batch.length, signalTypes(config.signals).index);
  for (const { event, position } of batch) builder.add(event, position!.offset);
  return [builder.build().columns, 0];
}

async function counter(
  metrics: WorkerMetrics,
  name: 'stateConflicts' | 'eventsApplied' | 'freshness',
): Promise<number> {
  if (name === 'freshness') {
    const { values } = await metrics.freshnessSeconds.get();
    return values.find((sample) => sample.metricName?.endsWith('_count'))?.value ?? 0;
  }
  const { values } = await metrics[name].get();
  return values.reduce((sum, sample) => sum + sample.value, 0);
}

/**
 * `weightTolerance`: relative, 0 where both added the same weights in the same order; a waiting
 * event folded in later adds its weight after the others (float64 rounding, about 1e-16).
 */
function assertSameState(
  actual: UserState,
  expected: UserState,
  user: string,
  weightTolerance = 0,
): void {
  assert.equal(actual.eventCount, expected.eventCount, `${user}: events`);
  assert.deepEqual(actual.history, expected.history, `${user}: history`);
  assert.deepEqual([...actual.offsets], [...expected.offsets], `${user}: offsets`);
  assert.equal(actual.aggregates.anchorMs, expected.aggregates.anchorMs, `${user}: anchor`);
  const weights = expected.aggregates.weights;
  actual.aggregates.weights.forEach((value, i) => {
    const allowed = weightTolerance * Math.abs(weights[i]!);
    assert.ok(Math.abs(value - weights[i]!) <= allowed, `${user}: weight ${i}`);
  });
  const { sums } = expected.aggregates;
  actual.aggregates.sums.forEach((value, i) => {
    assert.ok(Math.abs(value - sums[i]!) <= SUM_TOLERANCE, `${user}: sum ${i}`);
  });
}
