/**
 * The item-embeddings topic: embeddings are materialised into Redis with the catalogue's
 * transform, the Gramian follows every add, change and removal exactly as a recomputation
 * would, bad values are dead-lettered, and an event that arrived before its item's embedding
 * is used once the embedding arrives.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { computeGramian } from '../../src/features/gramian.js';
import { ItemStore } from '../../src/items/store.js';
import { FeatureReader } from '../../src/reader/feature-reader.js';
import { defer } from '../helpers/cleanup.js';
import { loadCatalogueIntoRedis, randomCatalogue, startWorker } from '../helpers/fixtures.js';
import {
  REDIS_URL,
  appliedCount,
  checkNothingLeftBehind,
  produce,
  provision,
  readDeadLetters,
  testConfig,
  waitFor,
} from '../helpers/services.js';

checkNothingLeftBehind();

const DIM = 8;

function bytes(vector: Float32Array): Buffer {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
}

test('item changes from the topic keep the catalogue and its Gramian exact', async (t) => {
  const config = testConfig();
  await provision(t, config);
  const initial = randomCatalogue(10, DIM, 5);
  await loadCatalogueIntoRedis(config, initial);
  const extra = randomCatalogue(14, DIM, 99);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const store = new ItemStore(redis, { prefix: config.keyPrefix });
  const startVersion = (await store.requireMeta()).version;

  // i10..i13 are added (one as JSON), i0 changes, i1 is removed, one message is bad.
  await produce(config.itemsTopic, [
    { key: 'i10', value: bytes(extra.get('i10')!) },
    { key: 'i11', value: JSON.stringify([...extra.get('i11')!]) },
    { key: 'i12', value: bytes(extra.get('i12')!) },
    { key: 'i13', value: bytes(extra.get('i13')!) },
    { key: 'i0', value: bytes(extra.get('i0')!) },
    { key: 'i1', value: null },
    { key: 'bad', value: JSON.stringify([1, 2, 3]) },
  ]);
  await startWorker(t, config);
  await waitFor(
    '6 item changes applied',
    async () =>
      (await store.readVersion()) >= startVersion + 1 && (await store.requireMeta()).count === 13,
  );

  const final = new Map(initial);
  for (const id of ['i10', 'i11', 'i12', 'i13', 'i0']) final.set(id, extra.get(id)!);
  final.delete('i1');
  const stored = await store.getMany([...final.keys(), 'i1', 'bad'], DIM);
  assert.equal(stored.has('i1'), false);
  assert.equal(stored.has('bad'), false);
  const expected = computeGramian(
    [...final.keys()].map((id) => stored.get(id)!),
    DIM,
  );
  const actual = await store.readGramian(DIM);
  assert.equal(actual.count, 13);
  const scale = Math.max(...expected.values.map(Math.abs));
  // Rank-one updates versus one recomputation: float64 rounding only, far below 1e-12 relative.
  for (let k = 0; k < expected.values.length; k++) {
    assert.ok(Math.abs(actual.values[k]! - expected.values[k]!) <= 1e-12 * scale, `entry ${k}`);
  }
  // Stored embeddings are normalised, as the catalogue says.
  assert.ok(Math.abs(Math.hypot(...stored.get('i11')!) - 1) < 1e-6);
});

test('an event whose item has no embedding yet is counted, kept, and used once it arrives', async (t) => {
  const config = testConfig();
  await provision(t, config);
  await loadCatalogueIntoRedis(config, randomCatalogue(5, DIM, 1));
  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());

  const nowMs = Date.now();
  await produce(config.eventsTopic, [
    {
      key: 'u',
      value: JSON.stringify({ user: 'u', item: 'late', ts: nowMs - 1_000, type: 'like' }),
    },
  ]);
  await waitFor('the event applied', async () => (await appliedCount(redis, config, ['u'])) === 1);
  const reader = FeatureReader.fromConfig(config);
  defer(t, () => reader.close());
  const before = await reader.features('u', ['i0'], nowMs);
  assert.equal(before.items[0]!.features['agg.pos.6h.weight'], 0);
  assert.equal(before.items[0]!.features['agg.pos.6h.cos'], null);

  const embedding = Float32Array.from({ length: DIM }, (_, k) => (k === 0 ? 1 : 0));
  await produce(config.itemsTopic, [{ key: 'late', value: bytes(embedding) }]);
  await waitFor('the embedding materialised', async () =>
    (await new ItemStore(redis, { prefix: config.keyPrefix }).getMany(['late'], DIM)).has('late'),
  );
  const after = await reader.features('u', ['late'], nowMs);
  // Weight 3 (like) decayed by 1 s over the 6-hour half-life; the candidate is the item itself.
  const weight = after.items[0]!.features['agg.pos.6h.weight']!;
  assert.ok(Math.abs(weight - 3 * 2 ** (-1_000 / 21_600_000)) < 1e-9);
  assert.ok(Math.abs(after.items[0]!.features['agg.pos.6h.cos']! - 1) < 1e-6);
});

test('a catalogue created from the topic alone is normalised and not centred', async (t) => {
  const config = testConfig();
  await provision(t, config);
  const raw = new Map([
    ['a', Float32Array.from([3, 4, 0, 0, 0, 0, 0, 0])],
    ['b', Float32Array.from([0, 0, 2, 0, 0, 0, 0, 0])],
  ]);
  // One value as float32 bytes, one as a JSON array; a tombstone then removes a third item.
  await produce(config.itemsTopic, [
    { key: 'a', value: bytes(raw.get('a')!) },
    { key: 'b', value: JSON.stringify([...raw.get('b')!]) },
    { key: 'c', value: JSON.stringify([1, 1, 1, 1, 1, 1, 1, 1]) },
    { key: 'c', value: null },
  ]);
  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const store = new ItemStore(redis, { prefix: config.keyPrefix });
  await waitFor('the catalogue created from the topic', async () => {
    const meta = await store.readMeta();
    return meta !== null && (await store.getMany(['c'], DIM)).size === 0 && meta.count === 2;
  });

  const meta = await store.requireMeta();
  assert.equal(meta.dim, DIM);
  assert.equal(meta.centered, false);
  assert.equal(meta.normalized, true);
  assert.equal(meta.mean, null);
  const stored = await store.getMany(['a', 'b', 'c'], DIM);
  assert.deepEqual([...stored.keys()].sort(), ['a', 'b']);
  // Scaled to unit length and nothing subtracted: exact in float32 for these vectors.
  assert.deepEqual([...stored.get('a')!], [0.6, 0.8, 0, 0, 0, 0, 0, 0].map(Math.fround));
  assert.deepEqual([...stored.get('b')!], [0, 0, 1, 0, 0, 0, 0, 0]);
});

test('without a catalogue, the first embedding fixes the dimension; others are dead-lettered', async (t) => {
  const config = testConfig();
  await provision(t, config);
  await produce(config.itemsTopic, [
    { key: 'a', value: JSON.stringify([1, 0, 0, 0, 0, 0, 0, 0]) },
    { key: 'short', value: JSON.stringify([1, 2, 3, 4, 5]) },
    { key: 'b', value: JSON.stringify([0, 1, 0, 0, 0, 0, 0, 0]) },
  ]);
  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const store = new ItemStore(redis, { prefix: config.keyPrefix });
  await waitFor('the catalogue created from the topic', async () => {
    return (await store.readMeta())?.count === 2;
  });

  assert.equal((await store.requireMeta()).dim, DIM);
  const [letter] = await readDeadLetters(config, 1);
  assert.equal(letter?.key?.toString(), 'short');
  assert.equal(letter?.headers?.['affinity-reason']?.toString(), 'item_invalid');
});
