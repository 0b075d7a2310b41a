/**
 * ItemStore.applyChanges: a change that leaves the catalogue as it is bumps no version, appends
 * nothing to the change stream and leaves the Gramian bit for bit; real changes in the same
 * call still apply, each recorded once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import {
  computeGramian,
  decodeGramian,
  encodeGramian,
  replaceItem,
} from '../../src/features/gramian.js';
import { ItemStore } from '../../src/items/store.js';
import { catalogChangesKey, catalogGramianKey } from '../../src/state/keys.js';
import { randomCatalogue } from '../helpers/fixtures.js';
import { REDIS_URL, deleteKeys, testConfig } from '../helpers/services.js';

const DIM = 16;

test('no-op item changes keep the version, the change stream and the Gramian', async (t) => {
  const config = testConfig();
  t.after(() => deleteKeys(config.keyPrefix));
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.quit());
  const keys = { prefix: config.keyPrefix };
  const store = new ItemStore(redis, keys);
  const items = randomCatalogue(50, DIM, 8);
  // Not normalised, so an embedding sent again is stored with the very same bytes.
  const ids = [...items.keys()];
  const vectors = new Float32Array(ids.length * DIM);
  ids.forEach((id, row) => vectors.set(items.get(id)!, row * DIM));
  const meta = { dim: DIM, centered: false, normalized: false, mean: null };
  await store.replaceAll(ids, vectors, meta);
  const state = async () => ({
    version: await store.readVersion(),
    streamLength: await redis.xlen(catalogChangesKey(keys)),
    gramian: (await redis.getBuffer(catalogGramianKey(keys)))!.toString('hex'),
  });
  const before = await state();

  // i0 sent again unchanged, an absent item removed: nothing changes.
  const returned = await store.applyChanges(
    [
      { item: 'i0', embedding: Float32Array.from(items.get('i0')!) },
      { item: 'absent', embedding: null },
    ],
    false,
  );
  assert.equal(returned, before.version);
  assert.deepEqual(await state(), before);

  // One no-op beside one real change: one version, one stream record, the exact Gramian.
  const changed = Float32Array.from({ length: DIM }, (_, k) => (k % 3) - 1 + k / 64);
  // The no-op comes last, so the rounding it would add is not absorbed by a later update.
  const next = await store.applyChanges(
    [
      { item: 'i1', embedding: changed },
      { item: 'i0', embedding: Float32Array.from(items.get('i0')!) },
    ],
    false,
  );
  const after = await state();
  assert.equal(next, before.version + 1);
  assert.equal(after.version, before.version + 1);
  assert.equal(after.streamLength, before.streamLength + 1);
  assert.deepEqual(await store.changesSince(before.version), ['i1']);
  // Bit for bit the stored Gramian with i1's rank-one update alone: the no-op added nothing,
  // not even the rounding of -e e^T + e e^T.
  const expected = decodeGramian(Buffer.from(before.gramian, 'hex'), DIM);
  replaceItem(expected, items.get('i1')!, changed);
  assert.equal(after.gramian, encodeGramian(expected).toString('hex'));
  // And it is the Gramian of the new catalogue: float64 rounding only, far below 1e-12 relative.
  const recomputed = computeGramian(
    [...items.values()].map((e, k) => (k === 1 ? changed : e)),
    DIM,
  );
  const scale = Math.max(...recomputed.values.map(Math.abs));
  recomputed.values.forEach((value, k) => {
    assert.ok(Math.abs(expected.values[k]! - value) <= 1e-12 * scale, `entry ${k}`);
  });
});
