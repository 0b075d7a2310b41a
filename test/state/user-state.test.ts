import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_SIGNALS_SPEC, parseSignals } from '../../src/events/types.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { decodeUserState, encodeUserState } from '../../src/state/codec.js';
import type { StateFields } from '../../src/state/codec.js';
import type { SequencedEvent, UpdateContext } from '../../src/state/user-state.js';
import { applyEvents, emptyUserState } from '../../src/state/user-state.js';

const layout = { dim: 2, halfLivesMs: [3_600_000, 86_400_000] };
const embeddings = new Map<string, Float32Array>([
  ['a', Float32Array.of(1, 0)],
  ['b', Float32Array.of(0, 1)],
]);

function context(
  available: ReadonlyMap<string, Float32Array>,
  historyMaxEvents = 3,
): UpdateContext {
  return {
    signals: parseSignals(DEFAULT_SIGNALS_SPEC),
    layout,
    historyMaxEvents,
    pendingMaxEvents: 10,
    embedding: (item) => available.get(item),
  };
}

function at(offset: number, event: Partial<InteractionEvent>): SequencedEvent {
  const full = { user: 'u', item: 'a', ts: 1_000 * offset, type: 'click', ...event };
  return { event: full, position: { partition: 0, offset } };
}

test('redelivered offsets and repeated producer ids are applied once', () => {
  const state = emptyUserState(layout);
  const first = applyEvents(state, [at(1, {}), at(2, { item: 'b', id: 'x' })], context(embeddings));
  const again = applyEvents(
    state,
    [at(1, {}), at(2, { item: 'b', id: 'x' }), at(3, { item: 'b', id: 'x' })],
    context(embeddings),
  );
  assert.equal(first.applied, 2);
  assert.equal(again.applied, 0);
  assert.equal(again.duplicates, 3);
  assert.equal(state.eventCount, 2);
  assert.equal(state.offsets.get(0), 3);
});

test('the history keeps the newest events whatever the arrival order', () => {
  const forward = emptyUserState(layout);
  const backward = emptyUserState(layout);
  // Late arrivals are about event time; offsets only ever grow, so leave them out here.
  const events = [1, 2, 3, 4, 5].map((offset) => ({
    event: at(offset, { item: offset % 2 ? 'a' : 'b' }).event,
  }));
  applyEvents(forward, events, context(embeddings));
  applyEvents(backward, [...events].reverse(), context(embeddings));
  assert.deepEqual(forward.history, backward.history);
  assert.deepEqual(
    forward.history.map((entry) => entry.ts),
    [3_000, 4_000, 5_000],
  );
});

test('an event without embedding waits, then is folded in as a late event', () => {
  const state = emptyUserState(layout);
  const none = new Map<string, Float32Array>();
  const waiting = applyEvents(state, [at(1, { item: 'a' })], context(none));
  assert.equal(waiting.pendingAdded, 1);
  assert.equal(state.aggregates.weights[0], 0);
  assert.equal(state.eventCount, 1);

  const later = applyEvents(state, [at(2, { item: 'b' })], context(embeddings));
  assert.equal(later.pendingFolded, 1);
  assert.equal(state.pending.length, 0);
  // Event a at t=1s folded with decay 2^(-1s/1h) against the anchor t=2s.
  const expected = 1 + 2 ** (-1_000 / 3_600_000);
  assert.ok(Math.abs(state.aggregates.weights[0]! - expected) < 1e-12);
});

test('the Redis encoding round-trips every field', () => {
  const state = emptyUserState(layout);
  applyEvents(
    state,
    [at(1, { value: 2 }), at(7, { item: 'b', type: 'dislike', id: 'e' })],
    context(embeddings),
  );
  applyEvents(state, [at(8, { item: 'zzz' })], context(embeddings));
  state.dual = {
    vector: Float32Array.of(0.5, -0.25),
    iterations: 3,
    relativeResidual: 1e-7,
    terms: 2,
  };

  const fields: StateFields = {};
  const encoded = encodeUserState(state, layout);
  for (let i = 0; i < encoded.length; i += 2) {
    const value = encoded[i + 1]!;
    fields[String(encoded[i])] = Buffer.from(value);
  }
  assert.deepEqual(decodeUserState(fields, layout), state);
});

test('the encoded history is its JSON after every change, late events and trims included', () => {
  // The encoder reuses entry texts between encodings (codec.ts); each step must still give
  // exactly JSON.stringify of the history, for 0, 1, 2 and more entries.
  const state = emptyUserState(layout);
  const historyOf = () => {
    const encoded = encodeUserState(state, layout);
    return encoded[encoded.indexOf('hist') + 1];
  };
  assert.equal(historyOf(), '[]');

  const steps: SequencedEvent[][] = [
    [at(10, {})],
    [at(11, { item: 'b', value: 2 })],
    [at(12, { item: 'é "quoted"' })],
    [at(5, { item: 'late' })],
    [at(13, { id: 'x' }), at(14, { type: 'dislike' })],
    [at(1, { item: 'too-late' })],
  ];
  for (const events of steps) {
    applyEvents(state, events, context(embeddings, 4));
    assert.equal(historyOf(), JSON.stringify(state.history));
  }
  assert.equal(state.history.length, 4, 'the history is trimmed to its bound');
});
