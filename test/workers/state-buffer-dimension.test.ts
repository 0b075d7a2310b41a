/**
 * The catalogue is replaced by one of another dimension while the buffer holds users whose
 * writes are all confirmed: every held state is dropped, and the next batch reads again all of
 * its users, the held ones too, not only those it did not hold (a held one used to be looked up
 * after the drop and was gone). Their stored states, of the old dimension, restart empty
 * (counted as resets), and what Redis ends with is of the new dimension, with the new events.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import type { Config } from '../../src/config/config.js';
import type { EventColumns } from '../../src/workers/engine-link.js';
import { ColumnsBuilder, signalTypes } from '../../src/workers/engine-link.js';
import { defer } from '../helpers/cleanup.js';
import { loadCatalogueIntoRedis, randomCatalogue, testStateBuffer } from '../helpers/fixtures.js';
import { REDIS_URL, deleteKeys, testConfig } from '../helpers/services.js';

test('a new catalogue dimension re-reads every user of the next batch', async (t) => {
  const config = testConfig({ AFFINITY_DUAL_ENABLED: 'false' });
  defer(t, () => deleteKeys(config.keyPrefix));
  await loadCatalogueIntoRedis(config, randomCatalogue(10, 4, 1));
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const { buffer, store, metrics } = testStateBuffer(config, redis);

  await buffer.apply(columnsOf(config, ['ann', 'ben'], 0), 0);
  await buffer.flush();
  await loadCatalogueIntoRedis(config, randomCatalogue(10, 6, 2));
  // cid is new, so the batch reads the catalogue's version with it and sees the change.
  await buffer.apply(columnsOf(config, ['ann', 'ben', 'cid'], 2), 0);
  await buffer.flush();

  const { values } = await metrics.stateResets.get();
  assert.equal(values[0]?.value, 2, 'the two stored states of dimension 4 restart');
  const states = await store.loadMany(['ann', 'ben', 'cid'], { dim: 6, halfLivesMs: [] });
  for (const [user, state] of states) {
    assert.equal(state.dim, 6, user);
    assert.equal(state.eventCount, 1, `${user}: the event after the change, alone`);
    assert.equal(state.offsets.get(0), user === 'ann' ? 2 : user === 'ben' ? 3 : 4, user);
  }
});

/** One click per user, at consecutive offsets from `first`. */
function columnsOf(config: Config, users: readonly string[], first: number): EventColumns {
  const builder = new ColumnsBuilder(users.length, signalTypes(config.signals).index);
  users.forEach((user, k) => {
    builder.add({ user, item: `i${k}`, ts: Date.now() - 1_000, type: 'click' }, first + k);
  });
  return builder.build().columns;
}
