import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_SIGNALS_SPEC, parseSignals } from '../../src/events/types.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { decodeUserState, encodeStateWrite } from '../../src/state/codec.js';
import type { EncodedFields, StateFields } from '../../src/state/codec.js';
import type {
  HistoryEntry,
  SequencedEvent,
  UpdateContext,
  UserState,
} from '../../src/state/user-state.js';
import { applyEvents, emptyUserState } from '../../src/state/user-state.js';
import { HistoryJsonWriter } from '../../src/state/history-json.js';
import { seededRandom } from '../helpers/services.js';

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

  const fields = fieldsOf(encodeStateWrite(state, layout, state.revision));
  assert.deepEqual(decodeUserState(fields, layout), state);
});

/** The `hist` bytes of a write of `state`, as the store sends them (one reused writer). */
function writtenHistory(state: UserState, writer: HistoryJsonWriter): string {
  const fields = encodeStateWrite(state, layout, state.revision + 1, writer);
  return Buffer.from(fields[fields.indexOf('hist') + 1]!).toString();
}

function fieldsOf(encoded: EncodedFields): StateFields {
  const fields: StateFields = {};
  for (let i = 0; i < encoded.length; i += 2)
    fields[String(encoded[i])] = Buffer.from(encoded[i + 1]!);
  return fields;
}

test('the written history is its JSON after every change, late events and trims included', () => {
  // For 0, 1, 2 and more entries, repeats, late events inside the kept ones and the trim to
  // the bound, the write must carry exactly JSON.stringify of the history.
  const state = emptyUserState(layout);
  const writer = new HistoryJsonWriter(64);
  assert.equal(writtenHistory(state, writer), '[]');

  const steps: SequencedEvent[][] = [
    [at(10, {})],
    [at(11, { item: 'b', value: 2 })],
    [at(12, { item: 'é "quoted"' })],
    [at(5, { item: 'late' })],
    [at(13, { id: 'x' }), at(14, { type: 'dislike' })],
    [at(1, { item: 'too-late' })],
    [at(20, {}), at(21, {}), at(22, { item: 'ü' }), at(23, {}), at(24, {})],
    [],
    [at(26, {}), at(19, { item: 'late-in-tail' })],
  ];
  for (const events of steps) {
    applyEvents(state, events, context(embeddings, 4));
    writer.reset();
    assert.equal(writtenHistory(state, writer), JSON.stringify(state.history));
  }
  assert.equal(state.history.length, 4, 'the history is trimmed to its bound');
});

test('the written history stays its JSON through random late events, trims and re-reads', () => {
  // 400 random steps of 0 to 4 events, a third of them late by up to a minute, items with
  // multi-byte characters, a bound of 12; every few steps the state is read back from its
  // encoding and goes on from there (its entries then as JSON.parse made them).
  const random = seededRandom(7);
  const items = ['a', 'b', 'ü', 'é "q"', '😀', 'long-item-id-0123456789'];
  const writer = new HistoryJsonWriter(256);
  let state = emptyUserState(layout);
  let offset = 0;
  let clockMs = 1_733_250_000_000;
  for (let step = 0; step < 400; step++) {
    const events: SequencedEvent[] = [];
    for (let k = Math.floor(random() * 5); k > 0; k--) {
      clockMs += Math.floor(random() * 2_000);
      const late = random() < 0.3 ? Math.floor(random() * 60_000) : 0;
      const item = items[Math.floor(random() * items.length)]!;
      const event = { user: 'u', item, ts: clockMs - late, type: 'click' };
      events.push({ event, position: { partition: 0, offset: offset++ } });
    }
    applyEvents(state, events, context(embeddings, 12));
    if (step % 5 === 0) writer.reset();
    assert.equal(writtenHistory(state, writer), JSON.stringify(state.history), `step ${step}`);
    if (step % 37 === 36)
      state = decodeUserState(fieldsOf(encodeStateWrite(state, layout, state.revision)), layout);
  }
});

test('a history entry is written exactly as JSON.stringify gives it, whatever its shape', () => {
  const entries: HistoryEntry[] = [
    { item: 'i1', ts: 1_733_250_000_123, type: 'click' },
    { item: 'i2', ts: 1_733_250_000_000, type: 'like', value: 0.25 },
    { item: 'i3', ts: 1_733_250_000_001, type: 'skip', id: 'e-1' },
    { item: 'i4', ts: 1_733_250_000_999, type: 'like', value: 3, id: 'e-2' },
    { item: 'quote " back \\ ctrl \u0001 é 😀', ts: 1_733_250_000_000, type: 'ty"pe' },
    { item: 'small', ts: 1_000, type: 'click' },
    { item: `long-${'é'.repeat(40)}`, ts: 1_733_250_000_002, type: 'click' },
    { item: 'fraction', ts: 1_733_250_000_000.5, type: 'click' },
    { item: 'max', ts: Number.MAX_SAFE_INTEGER, type: 'click', value: 1e-7 },
    { ts: 1_733_250_000_000, item: 'other order', type: 'click' } as HistoryEntry,
    { item: 'id first', ts: 1_733_250_000_000, type: 'click', id: 'x', value: 1 },
  ];
  const writer = new HistoryJsonWriter();
  for (const entry of entries) {
    writer.begin();
    const bytes = writer.entry(entry);
    const written = writer.end();
    assert.equal(Buffer.from(written).toString(), JSON.stringify(entry));
    assert.equal(bytes, written.length, 'it counts the bytes it wrote');
    assert.equal(bytes, Buffer.byteLength(JSON.stringify(entry)));
  }
});

test('timestamps of every length are written as JSON.stringify writes them', () => {
  // Digits go eight at a time, then in pairs (history-json.ts): each boundary, and both sides.
  const random = seededRandom(5);
  const values = [0, Number.MAX_SAFE_INTEGER, 123_456_789_012_345, 90_071_992 * 1e8 - 1];
  for (let k = 1; k <= 15; k++) values.push(10 ** k - 1, 10 ** k, 10 ** k + 1, 2 * 10 ** k - 1);
  for (let n = 0; n < 5_000; n++) values.push(Math.floor(random() * 10 ** (1 + 15 * random())));
  const writer = new HistoryJsonWriter(64);
  for (const ts of values) {
    const entry = { item: 'i', ts, type: 'click' };
    writer.begin();
    writer.entry(entry);
    assert.equal(Buffer.from(writer.end()).toString(), JSON.stringify(entry), String(ts));
  }
});

test('pieces written stay whole and valid until the reset, across blocks and reuse', () => {
  // Blocks of 64 bytes: most pieces outgrow the block they started in and move, and a piece
  // may be larger than a block. Every piece must still read back as written until the reset,
  // and again after it, when the blocks are reused.
  const writer = new HistoryJsonWriter(64);
  const random = seededRandom(11);
  for (let round = 0; round < 3; round++) {
    const expected: string[] = [];
    const pieces: Uint8Array[] = [];
    for (let p = 0; p < 50; p++) {
      writer.begin();
      let text = '[';
      writer.ascii('[');
      for (let k = Math.floor(random() * 4); k > 0; k--) {
        const entry = {
          item: `i${Math.floor(random() * 1e6)}é`,
          ts: 1_733_250_000_000 + p,
          type: 'like',
        };
        if (text.length > 1) {
          writer.ascii(',');
          text += ',';
        }
        writer.entry(entry);
        text += JSON.stringify(entry);
      }
      writer.ascii(']');
      pieces.push(writer.end());
      expected.push(text + ']');
    }
    assert.deepEqual(
      pieces.map((piece) => Buffer.from(piece).toString()),
      expected,
      `round ${round}`,
    );
    writer.reset();
  }
});
