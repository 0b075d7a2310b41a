/**
 * UserStateStore.writeMany encodes the states itself (state/resp.ts) and hands ioredis the
 * bytes: the states may change as soon as the call returns, so what reaches Redis must be the
 * state as it was at the call, whether the connection was ready or still connecting (ioredis
 * queues the commands). A Redis that lost the swap script (restarted, SCRIPT FLUSH) fails one
 * write, retriably, and the next one goes through. A history sent as an edit lands as its JSON.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { AffinityError } from '../../src/errors.js';
import { DEFAULT_SIGNALS_SPEC, parseSignals } from '../../src/events/types.js';
import { userStateKey } from '../../src/state/keys.js';
import { UserStateStore } from '../../src/state/store.js';
import type { UserState } from '../../src/state/user-state.js';
import { applyEvents, emptyUserState } from '../../src/state/user-state.js';
import { defer } from '../helpers/cleanup.js';
import { REDIS_URL, checkNothingLeftBehind, deleteKeys, testConfig } from '../helpers/services.js';

checkNothingLeftBehind();

const layout = { dim: 4, halfLivesMs: [3_600_000] };

function stateWithOneEvent(): UserState {
  const state = emptyUserState(layout);
  applyEvents(state, [{ event: { user: 'u', item: 'a', ts: 1_000, type: 'like' } }], {
    signals: parseSignals(DEFAULT_SIGNALS_SPEC),
    layout,
    historyMaxEvents: 10,
    pendingMaxEvents: 10,
    embedding: () => Float32Array.of(1, 2, 3, 4),
  });
  return state;
}

async function writeThenChange(redis: Redis, prefix: string): Promise<void> {
  const store = new UserStateStore(redis, { prefix }, 0);
  const state = stateWithOneEvent();
  const expected = [...state.aggregates.sums];
  const expectedWeights = [...state.aggregates.weights];

  const written = store.writeMany(new Map([['u', state]]), layout);
  state.aggregates.sums.fill(-7);
  state.aggregates.weights.fill(-7);
  assert.deepEqual((await written).written, ['u']);

  const stored = await store.load('u', layout);
  assert.deepEqual([...stored.aggregates.sums], expected, 'the sums as they were at the call');
  assert.deepEqual([...stored.aggregates.weights], expectedWeights, 'the weights as well');
}

test('a write sent on a ready connection holds the state as it was at the call', async (t) => {
  const { keyPrefix } = testConfig();
  defer(t, () => deleteKeys(keyPrefix));
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  await once(redis, 'ready');

  await writeThenChange(redis, keyPrefix);
});

test('a write queued while connecting holds the state as it was at the call', async (t) => {
  const { keyPrefix } = testConfig();
  defer(t, () => deleteKeys(keyPrefix));
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  defer(t, () => redis.quit());
  const connected = redis.connect();
  assert.notEqual(redis.status, 'ready', 'the write must be issued before the connection is up');

  await writeThenChange(redis, keyPrefix);
  await connected;
});

/** A store on a fresh key prefix, and a state of one event for user `u`; both go afterwards. */
function storeWithState(t: TestContext) {
  const { keyPrefix } = testConfig();
  defer(t, () => deleteKeys(keyPrefix));
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const store = new UserStateStore(redis, { prefix: keyPrefix }, 0);
  return { keyPrefix, redis, store, state: stateWithOneEvent() };
}

test('a write after Redis lost the swap script fails retriably, and the next one lands', async (t) => {
  const { redis, store, state } = storeWithState(t);
  assert.deepEqual((await store.writeMany(new Map([['u', state]]), layout)).written, ['u']);
  state.revision += 1;

  await redis.script('FLUSH');
  await assert.rejects(store.writeMany(new Map([['u', state]]), layout), (err: unknown) => {
    assert.ok(err instanceof AffinityError);
    assert.equal(err.code, 'REDIS_UNAVAILABLE');
    assert.equal(err.retriable, true);
    return true;
  });
  assert.deepEqual((await store.writeMany(new Map([['u', state]]), layout)).written, ['u']);
  assert.equal((await store.load('u', layout)).revision, 2);
});

test('each write lands the history as its JSON; one behind another writer is refused', async (t) => {
  // Late events, multi-byte items and the trim to the bound all change the history between two
  // writes: Redis must hold exactly JSON.stringify of it after each. A revision moved by another
  // writer must refuse the write as a lost race and leave no staged state behind.
  const { keyPrefix, redis, store, state } = storeWithState(t);
  const key = userStateKey({ prefix: keyPrefix }, 'u');
  const apply = (ts: number, item: string) =>
    applyEvents(state, [{ event: { user: 'u', item, ts, type: 'click' } }], {
      signals: parseSignals(DEFAULT_SIGNALS_SPEC),
      layout,
      historyMaxEvents: 3,
      pendingMaxEvents: 10,
      embedding: () => Float32Array.of(1, 0, 0, 0),
    });
  const write = async () => {
    const { written } = await store.writeMany(new Map([['u', state]]), layout);
    if (written.length === 1) state.revision += 1;
    return written;
  };

  assert.deepEqual(await write(), ['u']);
  for (const [ts, item] of [
    [2_000, 'b'],
    [3_000, 'ü 😀'],
    [1_500, 'late'],
    [4_000, 'c'],
  ] as const) {
    apply(ts, item);
    assert.deepEqual(await write(), ['u']);
    assert.equal(await redis.hget(key, 'hist'), JSON.stringify(state.history));
  }
  assert.equal(state.history.length, 3, 'trimmed to its bound along the way');

  await redis.hincrby(key, 'rev', 1);
  apply(5_000, 'd');
  assert.deepEqual(await write(), [], 'refused: another writer moved the revision');
  assert.equal(await redis.hget(key, 'rev'), String(state.revision + 1), 'and left as it was');
  const staged = await redis.keys(`${keyPrefix}u:{u}:next:*`);
  assert.deepEqual(staged, [], 'the staged state is deleted');
});

test('a write of more chunks than may wait for replies goes out in a window, every state landing', async (t) => {
  // 9,000 states make 36 chunks of 256: the last 4 are encoded only once the first ones are
  // answered (MAX_CHUNKS_IN_FLIGHT, 32), so `sent` is still pending when the call returns.
  const { store } = storeWithState(t);
  const states = new Map<string, UserState>();
  for (let n = 0; n < 9_000; n++) states.set(`u${n}`, stateWithOneEvent());

  const writing = store.startWrites(states, layout);
  let sent = false;
  void writing.sent.then(() => (sent = true));
  await Promise.resolve();
  assert.equal(sent, false, 'the last chunks wait for the first replies');

  await writing.sent;
  const { written, conflicts } = await writing.outcome;
  assert.equal(written.length, states.size);
  assert.deepEqual(conflicts, []);
  const last = await store.load('u8999', layout);
  assert.deepEqual([...last.aggregates.sums], [...stateWithOneEvent().aggregates.sums]);
  assert.equal(last.revision, 1);
});
