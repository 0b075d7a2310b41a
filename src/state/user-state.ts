/**
 * The per-user state every method reads and writes, and the one update path shared by the
 * workers, the backfill and the evaluation: `updateUser` applies a user's events (method 1),
 * folds in events whose item embedding has since arrived, then re-solves the dual vector
 * (method 2) once. Nothing here does I/O; the caller supplies embeddings through a lookup.
 */
import type { InteractionEvent, Polarity, Signals } from '../events/types.js';
import type { AggregateLayout, Aggregates } from '../features/aggregate.js';
import { addToAggregates, advanceAnchor, emptyAggregates } from '../features/aggregate.js';

export const STATE_FORMAT_VERSION = 2;

export interface HistoryEntry {
  readonly item: string;
  readonly ts: number;
  readonly type: string;
  readonly value?: number;
  readonly id?: string;
}

/** An event folded into no sum yet because its item had no embedding when it was applied. */
export interface PendingEntry {
  readonly item: string;
  readonly ts: number;
  readonly polarity: Polarity;
  readonly weight: number;
}

export interface DualState {
  vector: Float32Array;
  iterations: number;
  relativeResidual: number;
  /** History events that entered the solve, each counted (an item seen twice counts 2). */
  terms: number;
}

export interface UserState {
  readonly dim: number;
  readonly halfLivesMs: readonly number[];
  readonly aggregates: Aggregates;
  /** The newest events, ascending by (ts, item, type); at most historyMaxEvents. */
  history: HistoryEntry[];
  pending: PendingEntry[];
  /** Kafka partition → offset of the last event applied from it. */
  readonly offsets: Map<number, number>;
  eventCount: number;
  dual: DualState | null;
  /** Optimistic-concurrency revision, incremented by every write to Redis. */
  revision: number;
}

export interface SequencedEvent {
  readonly event: InteractionEvent;
  /** Where the event came from; absent offline, where nothing is redelivered. */
  readonly position?: { readonly partition: number; readonly offset: number };
  /**
   * The item's embedding when the caller looked it up already (null: the item has none); when
   * absent, the context's look-up answers. The worker looks up each item of a batch once.
   */
  readonly embedding?: Float32Array | null;
}

export interface UpdateContext {
  readonly signals: Signals;
  readonly layout: AggregateLayout;
  readonly historyMaxEvents: number;
  readonly pendingMaxEvents: number;
  readonly embedding: (item: string) => Float32Array | undefined;
}

export interface ApplyResult {
  applied: number;
  /** Redelivered offsets and repeated producer ids, skipped. */
  duplicates: number;
  /** Events that had to wait for their item's embedding. */
  pendingAdded: number;
  /** Waiting events folded in now that their embedding exists. */
  pendingFolded: number;
  /** Waiting events dropped because more than pendingMaxEvents waited. */
  pendingDropped: number;
}

export function emptyUserState(layout: AggregateLayout): UserState {
  return {
    dim: layout.dim,
    halfLivesMs: [...layout.halfLivesMs],
    aggregates: emptyAggregates(layout),
    history: [],
    pending: [],
    offsets: new Map(),
    eventCount: 0,
    dual: null,
    revision: 0,
  };
}

/** Applies the events in the order given (any order gives the same state) and folds pending. */
export function applyEvents(
  state: UserState,
  events: readonly SequencedEvent[],
  context: UpdateContext,
): ApplyResult {
  const result: ApplyResult = {
    applied: 0,
    duplicates: 0,
    pendingAdded: 0,
    pendingFolded: 0,
    pendingDropped: 0,
  };

  for (const sequenced of events) {
    if (isDuplicate(state, sequenced)) {
      result.duplicates++;
      markPosition(state, sequenced);
      continue;
    }
    applyOne(state, sequenced, context, result);
    markPosition(state, sequenced);
  }

  result.pendingFolded = foldPending(state, context);
  result.pendingDropped = trimPending(state, context.pendingMaxEvents);
  return result;
}

function isDuplicate(state: UserState, sequenced: SequencedEvent): boolean {
  const position = sequenced.position;
  if (position) {
    const applied = state.offsets.get(position.partition);
    if (applied !== undefined && position.offset <= applied) return true;
  }

  const id = sequenced.event.id;
  return id !== undefined && state.history.some((entry) => entry.id === id);
}

function markPosition(state: UserState, sequenced: SequencedEvent): void {
  const position = sequenced.position;
  if (!position) return;
  const applied = state.offsets.get(position.partition) ?? -1;
  if (position.offset > applied) state.offsets.set(position.partition, position.offset);
}

function applyOne(
  state: UserState,
  sequenced: SequencedEvent,
  context: UpdateContext,
  result: ApplyResult,
): void {
  const { event } = sequenced;
  const spec = context.signals.get(event.type);
  if (!spec) throw new Error(`event type "${event.type}" is not configured`);
  const weight = spec.weight * (event.value ?? 1);

  advanceAnchor(state.aggregates, context.layout, event.ts);
  const given = sequenced.embedding;
  const embedding = given === undefined ? context.embedding(event.item) : (given ?? undefined);
  if (embedding) {
    addToAggregates(state.aggregates, context.layout, spec.polarity, weight, event.ts, embedding);
  } else {
    state.pending.push({ item: event.item, ts: event.ts, polarity: spec.polarity, weight });
    result.pendingAdded++;
  }

  insertHistory(state, event, context.historyMaxEvents);
  state.eventCount++;
  result.applied++;
}

/** Keeps the newest `max` events by (ts, item, type), so the history is order-independent. */
function insertHistory(state: UserState, event: InteractionEvent, max: number): void {
  const entry = historyEntry(event);

  const history = state.history;
  let index = history.length;
  while (index > 0 && compareHistory(history[index - 1]!, entry) > 0) index--;
  // push and shift for the usual case (an event newer than the history, one entry over the
  // bound) rather than two splices, each of which also builds an array of what it removed.
  if (index === history.length) history.push(entry);
  else history.splice(index, 0, entry);
  const excess = history.length - max;
  if (excess === 1) history.shift();
  else if (excess > 1) history.splice(0, excess);
}

/** The event as the history keeps it (and as docs/redis-layout.md gives its JSON). */
function historyEntry(event: InteractionEvent): HistoryEntry {
  const { item, ts, type, value, id } = event;
  if (id === undefined) return value === undefined ? { item, ts, type } : { item, ts, type, value };
  return value === undefined ? { item, ts, type, id } : { item, ts, type, value, id };
}

export function compareHistory(a: HistoryEntry, b: HistoryEntry): number {
  if (a.ts !== b.ts) return a.ts - b.ts;
  if (a.item !== b.item) return a.item < b.item ? -1 : 1;
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  return 0;
}

/** Adds to the sums every waiting event whose embedding now exists, as a late event. */
export function foldPending(state: UserState, context: UpdateContext): number {
  if (state.pending.length === 0) return 0;

  const waiting: PendingEntry[] = [];
  let folded = 0;
  for (const entry of state.pending) {
    const embedding = context.embedding(entry.item);
    if (!embedding) {
      waiting.push(entry);
      continue;
    }
    const { aggregates } = state;
    addToAggregates(aggregates, context.layout, entry.polarity, entry.weight, entry.ts, embedding);
    folded++;
  }

  state.pending = waiting;
  return folded;
}

/** Drops the oldest waiting events beyond the bound; the caller counts and logs them. */
function trimPending(state: UserState, max: number): number {
  const excess = state.pending.length - max;
  if (excess <= 0) return 0;
  state.pending.sort((a, b) => a.ts - b.ts);
  state.pending.splice(0, excess);
  return excess;
}
