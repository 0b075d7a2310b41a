/**
 * The events worker against the real Kafka and Redis: features equal a plain reference
 * computation, the dual vector equals the exact solve over terms built from the produced events,
 * and redelivered or re-sent events are applied once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Admin } from 'kafkajs';
import { Redis } from 'ioredis';
import { computeGramian } from '../../src/features/gramian.js';
import { FeatureReader } from '../../src/reader/feature-reader.js';
import { ItemStore } from '../../src/items/store.js';
import { UserStateStore } from '../../src/state/store.js';
import { defer } from '../helpers/cleanup.js';
import {
  DEFAULT_WEIGHTS,
  eventMessages,
  loadCatalogueIntoRedis,
  randomCatalogue,
  randomEvents,
  startWorker,
} from '../helpers/fixtures.js';
import {
  errorSlack,
  expectedDualTerms,
  referenceSolve,
  relativeError,
} from '../helpers/dual-reference.js';
import { referenceFeatures } from '../helpers/reference.js';
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

const DIM = 16;
const ITEM_COUNT = 40;
const USERS = ['alice', 'bob', 'carol', 'dan'];
const PER_USER = 60;

// Sums are stored as float32: features agree with the float64 reference to ~1e-6; 1e-5 is the bound.
const FEATURE_TOLERANCE = 1e-5;

function assertClose(
  actual: number | null | undefined,
  expected: number | null | undefined,
  label: string,
) {
  if (expected === null || actual === null) {
    assert.equal(actual, expected, label);
    return;
  }
  const scale = Math.max(1, Math.abs(expected!));
  assert.ok(
    Math.abs(actual! - expected!) <= FEATURE_TOLERANCE * scale,
    `${label}: ${actual} vs ${expected}`,
  );
}

test('features from events streamed through Kafka equal a plain reference computation', async (t) => {
  // A dual half-life of 2 days over events spread across 10: confidences decay by up to 1/32.
  const config = testConfig({
    AFFINITY_HISTORY_MAX_EVENTS: '20',
    AFFINITY_DUAL_TOLERANCE: '1e-9',
    AFFINITY_DUAL_HALF_LIFE: '2d',
  });
  await provision(t, config, 3);
  const items = randomCatalogue(ITEM_COUNT, DIM, 7);
  await loadCatalogueIntoRedis(config, items);
  const nowMs = Date.now();
  const events = randomEvents(USERS, PER_USER, ITEM_COUNT, 11, nowMs);
  await produce(config.eventsTopic, eventMessages(events));

  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  await waitFor(
    'all events applied',
    async () => (await appliedCount(redis, config, USERS)) === events.length,
  );

  const reader = FeatureReader.fromConfig(config);
  defer(t, () => reader.close());
  const candidates = ['i0', 'i5', 'i17', 'i39'];
  const settings = {
    halfLivesMs: [...config.halfLivesMs],
    historyMaxEvents: 20,
    historyHalfLifeMs: config.historyHalfLifeMs,
    thresholds: [...config.cosineThresholds],
    weights: DEFAULT_WEIGHTS,
  };
  for (const user of USERS) {
    const response = await reader.features(user, candidates, nowMs);
    const own = events.filter((event) => event.user === user);
    for (const { item, features } of response.items) {
      const expected = referenceFeatures(own, items.get(item)!, items, nowMs, settings);
      for (const [name, value] of Object.entries(expected))
        assertClose(features[name], value, `${user} ${item} ${name}`);
    }
  }

  // The dual vector against the exact solve over terms built here from the produced events:
  // nothing of the worker's own stored history enters the expectation.
  const store = new UserStateStore(redis, { prefix: config.keyPrefix }, 0);
  const stored = await new ItemStore(redis, { prefix: config.keyPrefix }).getMany(
    [...items.keys()],
    DIM,
  );
  const gramian = computeGramian(stored.values(), DIM);
  for (const user of USERS) {
    const state = await store.load(user, { dim: DIM, halfLivesMs: config.halfLivesMs });
    const own = events.filter((event) => event.user === user);
    const terms = expectedDualTerms(own, 20, config.dual.halfLifeMs, stored, DEFAULT_WEIGHTS);
    const reference = referenceSolve(gramian, gramian.count, terms, config.dual);
    const error = relativeError(state.dual!.vector, reference.solution);
    // Tolerance 1e-9 (AFFINITY_DUAL_TOLERANCE) plus errorSlack: the float32 storage of the
    // vector (2^-24) and float64 rounding.
    const slack = errorSlack(1e-9, DIM, reference.kappa, state.dual!.iterations);
    assert.ok(error <= 1e-9 + slack, `${user}: dual differs by ${error}`);
  }
});

test('redelivered and re-sent events are applied once', async (t) => {
  const config = testConfig({ AFFINITY_HISTORY_MAX_EVENTS: '50' });
  const admin = await provision(t, config, 2);
  const items = randomCatalogue(ITEM_COUNT, DIM, 3);
  await loadCatalogueIntoRedis(config, items);
  const events = randomEvents(USERS, 30, ITEM_COUNT, 5, Date.now());
  await produce(config.eventsTopic, eventMessages(events));

  const first = await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  await waitFor(
    'all events applied',
    async () => (await appliedCount(redis, config, USERS)) === events.length,
  );
  await first.close();
  const before = await snapshot(redis, config.keyPrefix, USERS);

  // Redelivery: the group starts over from the first offset. Re-send: producers repeat the
  // newest events (same ids) at new offsets.
  await admin.resetOffsets({ groupId: config.groupId, topic: config.eventsTopic, earliest: true });
  const resent = events.slice(-40);
  await produce(config.eventsTopic, eventMessages(resent));
  await startWorker(t, config);
  await waitFor('the group to reach the end of the topic', async () =>
    caughtUp(admin, config.groupId, config.eventsTopic),
  );

  const after = await snapshot(redis, config.keyPrefix, USERS);
  for (const user of USERS) {
    assert.equal(after.get(user)!.n, before.get(user)!.n, `${user}: event count`);
    assert.deepEqual(after.get(user)!.sums, before.get(user)!.sums, `${user}: decayed sums`);
  }
});

async function snapshot(redis: Redis, prefix: string, users: readonly string[]) {
  const result = new Map<string, { n: string; sums: Record<string, string> }>();
  for (const user of users) {
    const fields = await redis.hgetallBuffer(`${prefix}u:{${user}}`);
    const sums: Record<string, string> = {};
    for (const [name, value] of Object.entries(fields))
      if (name === 'sums' || name === 'weights') sums[name] = value.toString('hex');
    result.set(user, { n: fields['n']!.toString(), sums });
  }
  return result;
}

async function caughtUp(admin: Admin, groupId: string, topic: string): Promise<boolean> {
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const ends = await admin.fetchTopicOffsets(topic);
  return ends.every((end) => {
    const partition = committed?.partitions.find((p) => p.partition === end.partition);
    return partition !== undefined && partition.offset === end.high;
  });
}
