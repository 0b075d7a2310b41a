/**
 * The arena's SIMD row updates give the very bits of the JavaScript loop (features/row-arena.ts
 * says why they must): the same random events applied to a state in the arena and to one in a
 * plain array leave identical sums, for one to five half-lives (blocks of three rows and single
 * rows), late events included. Tolerance: none, the comparison is of the float32 bit patterns.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_SIGNALS_SPEC, parseSignals } from '../../src/events/types.js';
import { RowArena } from '../../src/features/row-arena.js';
import type { SequencedEvent, UpdateContext } from '../../src/state/user-state.js';
import { applyEvents, emptyUserState } from '../../src/state/user-state.js';
import { seededRandom } from '../helpers/services.js';

const HOUR_MS = 3_600_000;
const TYPES = ['click', 'like', 'purchase', 'dislike', 'skip'];

function scenario(dim: number, halfLives: number, seed: number) {
  const random = seededRandom(seed);
  const embeddings = new Map<string, Float32Array>();
  for (let i = 0; i < 20; i++) {
    embeddings.set(
      `i${i}`,
      Float32Array.from({ length: dim }, () => random() * 2 - 1),
    );
  }
  const events: SequencedEvent[] = [];
  for (let n = 0; n < 300; n++) {
    // Mostly increasing times, with late events among them.
    const ts = 1_700_000_000_000 + n * 60_000 - (random() < 0.2 ? random() * 40 * HOUR_MS : 0);
    const type = TYPES[Math.floor(random() * TYPES.length)]!;
    const event = { user: 'u', item: `i${Math.floor(random() * 20)}`, ts: Math.round(ts), type };
    events.push({ event: random() < 0.3 ? { ...event, value: random() * 4 } : event });
  }
  const halfLivesMs = [1, 6, 24, 24 * 30, 24 * 365].slice(0, halfLives).map((h) => h * HOUR_MS);
  return { embeddings, events, halfLivesMs };
}

function context(layout: UpdateContext['layout'], embeddings: Map<string, Float32Array>) {
  return {
    signals: parseSignals(DEFAULT_SIGNALS_SPEC),
    layout,
    historyMaxEvents: 50,
    pendingMaxEvents: 10,
    embedding: (item: string) => embeddings.get(item),
  };
}

for (const [dim, halfLives] of [
  [384, 3],
  [384, 1],
  [64, 4],
  [8, 5],
  [4, 2],
] as const) {
  test(`arena rows equal JavaScript rows bit for bit: d = ${dim}, ${halfLives} half-lives`, () => {
    const { embeddings, events, halfLivesMs } = scenario(dim, halfLives, dim * 31 + halfLives);
    const arena = RowArena.create(dim, 2 * halfLives * dim, 4);
    assert.ok(arena, 'this runtime runs the SIMD kernels');
    const plainLayout = { dim, halfLivesMs };
    const arenaLayout = { dim, halfLivesMs, arena };

    const plain = emptyUserState(plainLayout);
    const held = emptyUserState(arenaLayout);
    assert.notEqual(held.aggregates.sums.buffer, plain.aggregates.sums.buffer);
    applyEvents(plain, events, context(plainLayout, embeddings));
    applyEvents(held, events, context(arenaLayout, embeddings));

    const bits = (sums: Float32Array) => [...new Uint32Array(sums.slice().buffer)];
    assert.deepEqual(bits(held.aggregates.sums), bits(plain.aggregates.sums));
    assert.deepEqual([...held.aggregates.weights], [...plain.aggregates.weights]);
    assert.ok(plain.aggregates.sums.some((value) => value !== 0));
  });
}

test('slots are zeroed, reused after release, and the arena says when it is full', () => {
  const arena = RowArena.create(4, 8, 2)!;
  const first = arena.allocate()!;
  const second = arena.allocate()!;
  assert.equal(arena.allocate(), null, 'two slots only');
  first.fill(5);

  arena.release(first);
  arena.release(first);
  const reused = arena.allocate()!;
  assert.equal(reused.byteOffset, first.byteOffset, 'the released slot comes back');
  assert.deepEqual([...reused], new Array(8).fill(0), 'zeroed');
  assert.equal(arena.allocate(), null, 'a second release of one view frees nothing more');

  arena.release(new Float32Array(8));
  assert.equal(arena.allocate(), null, 'a view from elsewhere is ignored');
  assert.notEqual(second.byteOffset, reused.byteOffset);
});

test('a dimension that is not a multiple of 4 gets no arena; the state lives in a plain array', () => {
  assert.equal(RowArena.create(3, 6, 4), null);
  assert.equal(RowArena.create(6, 12, 4), null);
  assert.ok(RowArena.create(12, 24, 4));
});
