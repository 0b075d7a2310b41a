/**
 * The events worker follows catalogue versions in its dual solves. Its solver is built for the
 * Gramian of the first version it sees (an eigendecomposition, kept because it is costly); a
 * worker that kept that solver after items changed on the items topic would go on solving
 * against the old Gramian and the old catalogue size, and nothing else would notice: the
 * vectors stay plausible, only wrong. So a user's first events arrive after the change, and
 * their stored dual must be the exact solve against the Gramian of the final catalogue, and
 * measurably not the one against the initial catalogue.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import type { DualSettings } from '../../src/config/config.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { computeGramian } from '../../src/features/gramian.js';
import type { Gramian } from '../../src/features/gramian.js';
import { ItemStore } from '../../src/items/store.js';
import { UserStateStore } from '../../src/state/store.js';
import {
  DEFAULT_WEIGHTS,
  eventMessages,
  loadCatalogueIntoRedis,
  randomCatalogue,
  startWorker,
} from '../helpers/fixtures.js';
import {
  errorSlack,
  expectedDualTerms,
  referenceSolve,
  relativeError,
} from '../helpers/dual-reference.js';
import type { Reference } from '../helpers/dual-reference.js';
import {
  REDIS_URL,
  appliedCount,
  produce,
  provision,
  testConfig,
  waitFor,
} from '../helpers/services.js';

const DIM = 8;
const TOLERANCE = 1e-9;

function bytes(vector: Float32Array): Buffer {
  return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength);
}

test('dual vectors solved after item changes use the Gramian of the new catalogue', async (t) => {
  // a0 = 1 makes the catalogue term weigh as much as the history, so G's change shows.
  const config = testConfig({
    AFFINITY_DUAL_A0: '1',
    AFFINITY_DUAL_LAMBDA: '0.1',
    AFFINITY_DUAL_TOLERANCE: String(TOLERANCE),
  });
  await provision(t, config);
  await loadCatalogueIntoRedis(config, randomCatalogue(12, DIM, 17));
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.quit());
  const items = new ItemStore(redis, { prefix: config.keyPrefix });
  const initial = await catalogueGramian(items);
  await startWorker(t, config);

  // A first user makes the worker build its solver for the initial Gramian.
  const nowMs = Date.now();
  const before = userEvents('before', nowMs, ['i4', 'i5', 'i6']);
  await produce(config.eventsTopic, eventMessages(before));
  await waitFor('the first user solved', async () => {
    return (await appliedCount(redis, config, ['before'])) === before.length;
  });

  // Six items added along one direction, one changed, one removed: G moves a lot.
  const startVersion = await items.readVersion();
  const axis = Float32Array.from({ length: DIM }, (_, k) => (k === 0 ? 1 : 0.05 * k));
  await produce(config.itemsTopic, [
    ...[0, 1, 2, 3, 4, 5].map((k) => ({ key: `new${k}`, value: bytes(axis.map((v) => v + k)) })),
    { key: 'i0', value: bytes(axis) },
    { key: 'i1', value: null },
  ]);
  await waitFor('the item changes applied', async () => {
    const meta = await items.requireMeta();
    return meta.version > startVersion && meta.count === 12 + 6 - 1;
  });
  const final = await catalogueGramian(items);

  const after = userEvents('after', nowMs, ['i4', 'i5', 'i6', 'i7']);
  await produce(config.eventsTopic, eventMessages(after));
  await waitFor('the second user solved', async () => {
    return (await appliedCount(redis, config, ['after'])) === after.length;
  });

  const store = new UserStateStore(redis, { prefix: config.keyPrefix }, 0);
  const state = await store.load('after', { dim: DIM, halfLivesMs: config.halfLivesMs });
  const expected = solveFor(after, final, config.dual);
  const stale = solveFor(after, initial, config.dual);
  const vector = state.dual!.vector;

  // Tolerance TOLERANCE + errorSlack (float32 storage, float64 rounding) + what withGramian's
  // low-rank correction may leave out of the matrix, 6e-10 a0 |G|_F, over lambda_min(A).
  const correction =
    (6e-10 * config.dual.a0 * Math.hypot(...final.gramian.values)) / expected.lambdaMin;
  const slack = errorSlack(TOLERANCE, DIM, expected.kappa, state.dual!.iterations) + correction;
  const error = relativeError(vector, expected.solution);
  assert.ok(error <= TOLERANCE + slack, `dual differs from the final catalogue's by ${error}`);
  const separation = relativeError(stale.solution, expected.solution);
  assert.ok(separation > 1e-2, `the two catalogues' solutions differ by only ${separation}`);
});

/** Events of one user on `itemIds`, a few per item, over the last two days. */
function userEvents(user: string, nowMs: number, itemIds: readonly string[]): InteractionEvent[] {
  const types = ['click', 'like', 'purchase', 'dislike'];
  return itemIds.flatMap((item, k) =>
    [0, 1].map((n) => ({
      user,
      item,
      ts: nowMs - (k * 2 + n) * 3_600_000,
      type: types[(k + n) % types.length]!,
      id: `${user}-${item}-${n}`,
    })),
  );
}

/** The stored embeddings and their Gramian, recomputed here. */
async function catalogueGramian(
  items: ItemStore,
): Promise<{ embeddings: Map<string, Float32Array>; gramian: Gramian }> {
  const meta = await items.requireMeta();
  const ids = [...Array(12).keys()]
    .map((k) => `i${k}`)
    .concat([0, 1, 2, 3, 4, 5].map((k) => `new${k}`));
  const embeddings = await items.getMany(ids, meta.dim);
  return { embeddings, gramian: computeGramian(embeddings.values(), meta.dim) };
}

/** The float64 reference for `events` against one catalogue, by the definition. */
function solveFor(
  events: readonly InteractionEvent[],
  catalogue: { embeddings: Map<string, Float32Array>; gramian: Gramian },
  params: DualSettings,
): Reference {
  const { embeddings, gramian } = catalogue;
  const terms = expectedDualTerms(events, 200, params.halfLifeMs, embeddings, DEFAULT_WEIGHTS);
  return referenceSolve(gramian, gramian.count, terms, params);
}
