/**
 * The neural worker's stored history is the encoder's input window. Training takes the last N
 * events it can read (known type, item in the catalogue; src/neural/train.ts), so the store
 * must keep N readable events, not N events of which some cannot be read.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { InteractionEvent } from '../../src/events/types.js';
import type { EncoderWindow } from '../../src/state/neural-state.js';
import {
  STORED_HISTORY_FACTOR,
  applyNeuralEvents,
  emptyNeuralState,
} from '../../src/state/neural-state.js';
import type { HistoryEntry, SequencedEvent } from '../../src/state/user-state.js';

/** N = 3; the model knows click and like; items starting with `x` have no embedding. */
function window(withEmbedding: (item: string) => boolean = (item) => !item.startsWith('x')) {
  const known = new Set(['click', 'like']);
  const result: EncoderWindow = {
    length: 3,
    keeps: (entry) => known.has(entry.type),
    reads: (entry) => known.has(entry.type) && withEmbedding(entry.item),
  };
  return result;
}

function at(offset: number, item: string, type = 'click'): SequencedEvent {
  const event: InteractionEvent = { user: 'u', item, ts: 1_000 * offset, type };
  return { event, position: { partition: 0, offset } };
}

const items = (history: readonly HistoryEntry[]) => history.map((entry) => entry.item);

test('newer events the encoder cannot read do not push readable ones out of the window', () => {
  const state = emptyNeuralState();
  applyNeuralEvents(state, [at(1, 'a'), at(2, 'b'), at(3, 'c'), at(4, 'd')], window());
  assert.deepEqual(items(state.history), ['b', 'c', 'd']);

  // Two events whose item has no embedding yet: kept (it may arrive), not counted towards N.
  const added = applyNeuralEvents(state, [at(5, 'x1'), at(6, 'x2')], window());
  assert.equal(added, 2);
  assert.deepEqual(items(state.history), ['b', 'c', 'd', 'x1', 'x2']);
  assert.equal(state.history.filter((entry) => window().reads(entry)).length, 3);
});

test('events of a type the model lacks are not stored, but their offsets count as applied', () => {
  const state = emptyNeuralState();
  applyNeuralEvents(state, [at(1, 'a'), at(2, 'b', 'purchase'), at(3, 'c')], window());
  assert.deepEqual(items(state.history), ['a', 'c']);
  assert.equal(state.offsets.get(0), 3);
  assert.equal(applyNeuralEvents(state, [at(2, 'b', 'purchase')], window()), 0);
});

test('an embedding that arrives later slides the window over the newly readable event', () => {
  const state = emptyNeuralState();
  applyNeuralEvents(state, [at(1, 'a'), at(2, 'b'), at(3, 'c'), at(4, 'x1')], window());
  assert.deepEqual(items(state.history), ['a', 'b', 'c', 'x1']);

  const everything = window(() => true);
  applyNeuralEvents(state, [at(5, 'd')], everything);
  assert.deepEqual(items(state.history), ['c', 'x1', 'd']);
});

test(`at most ${STORED_HISTORY_FACTOR} N events are stored, however few can be read`, () => {
  const state = emptyNeuralState();
  const unreadable = Array.from({ length: 10 }, (_, k) => at(k + 2, `x${k}`));
  applyNeuralEvents(state, [at(1, 'a'), ...unreadable], window());
  assert.equal(state.history.length, STORED_HISTORY_FACTOR * 3);
  assert.deepEqual(items(state.history), ['x4', 'x5', 'x6', 'x7', 'x8', 'x9']);
});
