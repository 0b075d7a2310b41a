/**
 * The embedding cache against a catalogue that changes while it reads: the meta and the
 * Gramian it holds must describe one catalogue version. Before they were read in one
 * transaction, a writer committing between the two reads left the cache with the Gramian of
 * version v + 1 and the meta of v, and the dual solves of that batch used a catalogue size that
 * did not match their Gramian.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { EmbeddingCache } from '../../src/items/cache.js';
import { ItemStore } from '../../src/items/store.js';
import { loadCatalogueIntoRedis, randomCatalogue } from '../helpers/fixtures.js';
import { REDIS_URL, deleteKeys, testConfig } from '../helpers/services.js';

const DIM = 4;
const TOGGLES = 300;

test('meta and Gramian are read as one version while a writer keeps changing them', async (t) => {
  const config = testConfig();
  t.after(() => deleteKeys(config.keyPrefix));
  await loadCatalogueIntoRedis(config, randomCatalogue(6, DIM, 3));
  // Two connections, so the writer's commands can land between any two of the reader's.
  const writerRedis = new Redis(REDIS_URL);
  const readerRedis = new Redis(REDIS_URL);
  t.after(() => Promise.all([writerRedis.quit(), readerRedis.quit()]));
  const keys = { prefix: config.keyPrefix };
  const writer = new ItemStore(writerRedis, keys);
  const reader = new ItemStore(readerRedis, keys);
  const cache = new EmbeddingCache(reader, 100, { hit: () => {}, miss: () => {} }, true);

  // The writer adds and removes one item in turn: every version changes the count by one.
  const toggled = Float32Array.of(1, 0, 0, 0);
  let writing = true;
  const writes = (async () => {
    for (let k = 0; k < TOGGLES; k++) {
      await writer.applyChanges(
        [{ item: 'toggle', embedding: k % 2 === 0 ? toggled : null }],
        true,
      );
    }
    writing = false;
  })();

  let syncs = 0;
  const mismatches: string[] = [];
  while (writing) {
    await cache.sync(await reader.readVersion());
    syncs++;
    const metaCount = cache.meta!.count;
    const gramianCount = cache.currentGramian!.count;
    if (metaCount !== gramianCount) {
      mismatches.push(`version ${cache.catalogVersion}: meta ${metaCount}, G ${gramianCount}`);
    }
  }
  await writes;

  assert.ok(syncs >= 20, `only ${syncs} syncs overlapped the writer`);
  assert.deepEqual(mismatches, [], `${mismatches.length} of ${syncs} syncs mixed two versions`);
});

test("a batch's resolver answers for every item of the batch, though the cache is smaller", async (t) => {
  const config = testConfig();
  t.after(() => deleteKeys(config.keyPrefix));
  const catalogue = randomCatalogue(6, DIM, 5);
  await loadCatalogueIntoRedis(config, catalogue);
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.quit());
  const counted = { hits: 0, misses: 0 };
  const counters = {
    hit: (n: number) => (counted.hits += n),
    miss: (n: number) => (counted.misses += n),
  };
  const store = new ItemStore(redis, { prefix: config.keyPrefix });
  const cache = new EmbeddingCache(store, 2, counters, false);
  await cache.sync(await store.readVersion());

  // Three distinct items (and a repeat) into a cache of two: none is evicted during the batch.
  const first = await cache.resolver(['i0', 'i1', 'i2', 'i0', 'nope']);
  for (const item of ['i0', 'i1', 'i2']) assert.deepEqual(first(item), catalogue.get(item));
  assert.equal(first('nope'), undefined, 'an item the catalogue lacks');
  assert.deepEqual(counted, { hits: 0, misses: 4 }, 'misses: distinct items fetched');

  // The next batch first evicts the oldest (i0), first in first out, down to two entries.
  const second = await cache.resolver(['i2', 'i1', 'i0']);
  assert.deepEqual(counted, { hits: 2, misses: 5 }, 'hits: one per event found in process');
  for (const item of ['i0', 'i1', 'i2']) assert.deepEqual(second(item), catalogue.get(item));

  // Held now: i2, i0 after the next eviction. i2 is found in process, i3 and i4 are fetched;
  // storing them must not evict i2, which the resolver answers from the cache alone.
  const third = await cache.resolver(['i2', 'i3', 'i4']);
  assert.deepEqual(counted, { hits: 3, misses: 7 });
  for (const item of ['i2', 'i3', 'i4']) assert.deepEqual(third(item), catalogue.get(item));
});
