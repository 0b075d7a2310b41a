/**
 * The user state as the fields of one Redis hash. docs/redis-layout.md is the contract for
 * readers in other languages; change both together and bump STATE_FORMAT_VERSION.
 *
 * Vectors are float32 little-endian (weights float64), numbers are decimal strings
 * (JavaScript's shortest round-trip form, which Python's float() and Java's
 * Double.parseDouble read back exactly), lists and small records are JSON.
 */
import { AffinityError } from '../errors.js';
import type { AggregateLayout } from '../features/aggregate.js';
import { POLARITIES, slotIndex } from '../features/aggregate.js';
import type { HistoryEntry, PendingEntry, UserState } from './user-state.js';
import { STATE_FORMAT_VERSION, compareHistory, emptyUserState } from './user-state.js';
import { decodeFloat32LE, decodeFloat64LE, littleEndianView } from '../encoding/float32.js';

export type StateFields = Record<string, Buffer>;

/**
 * Field names and values in pairs, as HSET takes them. Binary values are views of the state's
 * own arrays (on a little-endian host): valid until the state next changes, so the caller
 * copies them out (state/resp.ts) before it yields.
 */
export type EncodedFields = (string | Uint8Array)[];

/** States written before the deferred decay scales existed; read as if every scale were 1. */
const READABLE_FORMAT_VERSIONS = new Set(['1', String(STATE_FORMAT_VERSION)]);

/**
 * Encodes the whole state as field, value, field, value..., with `revision` as its revision
 * (the writer stores the next one). The writer replaces the whole hash, so a field left out
 * is gone. No binary value is copied here: a flush encodes thousands of states, and a 10 KB
 * allocation per state cost more than the rest of its encoding (Node allocates each buffer
 * over 4 KB apart and accounts it to the garbage collector).
 */
export function encodeUserState(
  state: UserState,
  layout: AggregateLayout,
  revision = state.revision,
): EncodedFields {
  const { aggregates, dual } = state;
  const fields: EncodedFields = [
    'v',
    String(STATE_FORMAT_VERSION),
    'dim',
    String(state.dim),
    'rev',
    String(revision),
    'n',
    String(state.eventCount),
  ];
  if (aggregates.anchorMs !== null) fields.push('anchor_ms', String(aggregates.anchorMs));
  for (const [partition, offset] of state.offsets) fields.push(`off:${partition}`, String(offset));
  encodeAggregates(state, layout, fields);
  fields.push('hist', historyJson(state), 'pending', JSON.stringify(state.pending));
  if (dual) encodeDual(dual, fields);
  return fields;
}

/**
 * The rows of the decayed sums as one float32 array of shape [2][H][dim] (positive then
 * negative, half-lives in the order of `half_lives_ms`), which is exactly the in-memory layout;
 * their deferred decay scales and the weights as float64 [2][H]. A Python reader needs one
 * `numpy.frombuffer(...).reshape(...)` for each. The rows are stored unsettled, so that the
 * state read back continues bit for bit as the one held in memory would have.
 */
function encodeAggregates(state: UserState, layout: AggregateLayout, fields: EncodedFields): void {
  const { sums, scales, weights } = state.aggregates;
  fields.push('half_lives_ms', layout.halfLivesMs.join(','));
  fields.push('sums', littleEndianView(sums));
  fields.push('scales', littleEndianView(scales));
  fields.push('weights', littleEndianView(weights));
}

function encodeDual(dual: NonNullable<UserState['dual']>, fields: EncodedFields): void {
  const stats = { iterations: dual.iterations, residual: dual.relativeResidual, terms: dual.terms };
  fields.push('dual', littleEndianView(dual.vector), 'dual_stats', JSON.stringify(stats));
}

/**
 * The history as JSON, reusing the previous encoding's text: a flush re-encodes the whole
 * history of every changed user although most entries are unchanged, and JSON.stringify costs
 * about 0.5 µs per entry here (V8 formats each 13-digit timestamp as a double).
 *
 * Between two encodings a history only gains entries (anywhere, in order) and loses its oldest
 * ones, and both lists are sorted by compareHistory. Usually the new entries all come after the
 * kept ones (events arrive in time order): the JSON is then the previous one minus its dropped
 * head, plus the new entries' texts, one slice and one join. Otherwise one merge pass over the
 * previous entries finds each kept entry (the same object) and cuts its text out of the previous
 * JSON. Entries are never mutated, so a kept text cannot be stale. The cache is keyed by the
 * state and goes with it.
 */
interface EncodedHistory {
  readonly entries: readonly HistoryEntry[];
  readonly json: string;
  /** Where each entry's text starts in `json`; it ends one character before the next start. */
  readonly starts: readonly number[];
}

const encodedHistories = new WeakMap<UserState, EncodedHistory>();

function historyJson(state: UserState): string {
  const previous = encodedHistories.get(state);
  const encoded =
    (previous && appendedHistory(previous, state.history)) ??
    mergedHistory(previous, state.history);
  encodedHistories.set(state, encoded);
  return encoded.json;
}

/** The common case: `history` is a tail of the previous entries followed by new ones. */
function appendedHistory(
  previous: EncodedHistory,
  history: readonly HistoryEntry[],
): EncodedHistory | null {
  const first = history[0];
  const from = first === undefined ? -1 : previous.entries.indexOf(first);
  if (from < 0) return null;
  const kept = previous.entries.length - from;
  if (kept > history.length) return null;
  for (let i = 1; i < kept; i++) if (history[i] !== previous.entries[from + i]) return null;

  const shift = 1 - previous.starts[from]!;
  const starts = new Array<number>(history.length);
  for (let i = 0; i < kept; i++) starts[i] = previous.starts[from + i]! + shift;
  const keptText = previous.json.slice(previous.starts[from]!, previous.json.length - 1);
  const added: string[] = [];
  let at = keptText.length + 1;
  for (let i = kept; i < history.length; i++) {
    const text = entryJson(history[i]!);
    starts[i] = at + 1;
    at += text.length + 1;
    added.push(text);
  }
  const json = added.length === 0 ? `[${keptText}]` : `[${keptText},${added.join(',')}]`;
  return { entries: history.slice(), json, starts };
}

/** Any change: each kept entry's text cut from the previous JSON, new ones stringified. */
function mergedHistory(
  previous: EncodedHistory | undefined,
  history: readonly HistoryEntry[],
): EncodedHistory {
  const entries = previous?.entries ?? [];
  const texts = new Array<string>(history.length);
  let j = 0;
  for (let i = 0; i < history.length; i++) {
    const entry = history[i]!;
    if (entries[j] !== entry) {
      while (j < entries.length && compareHistory(entries[j]!, entry) < 0) j++;
    }
    const kept = previous !== undefined && entries[j] === entry;
    texts[i] = kept ? keptText(previous, j) : entryJson(entry);
    if (kept) j++;
  }

  const starts = new Array<number>(history.length);
  let at = 1;
  texts.forEach((text, i) => {
    starts[i] = at;
    at += text.length + 1;
  });
  // One flat string: a template around the join would make a rope, flattened again on write.
  const json =
    texts.length <= 1
      ? `[${texts[0] ?? ''}]`
      : ['[' + texts[0]!, ...texts.slice(1, -1), texts.at(-1)! + ']'].join(',');
  return { entries: history.slice(), json, starts };
}

/**
 * JSON.stringify(entry) for the entries the history makes (historyEntry: item, ts, type, then
 * value and id when present), about four times faster: V8 formats an integer above 2^31 through
 * its double-to-string path, so the timestamp goes out as two small integers. Any other shape
 * goes to JSON.stringify itself.
 */
export function entryJson(entry: HistoryEntry): string {
  const { item, ts, type, value, id } = entry;
  if (!Number.isSafeInteger(ts) || ts < 1e9 || !isHistoryShape(entry)) return JSON.stringify(entry);
  const high = Math.floor(ts / 1e6);
  const low = ts - high * 1e6;
  let text = `{"item":${JSON.stringify(item)},"ts":${high}${String(low).padStart(6, '0')}`;
  text += `,"type":${JSON.stringify(type)}`;
  if (value !== undefined) text += `,"value":${JSON.stringify(value)}`;
  if (id !== undefined) text += `,"id":${JSON.stringify(id)}`;
  return text + '}';
}

const HISTORY_KEYS = ['item', 'ts', 'type', 'value', 'id'];

/** Keys in historyEntry's order, no others (decoded entries keep whatever the JSON had). */
function isHistoryShape(entry: HistoryEntry): boolean {
  let next = 0;
  for (const key in entry) {
    while (next < HISTORY_KEYS.length && HISTORY_KEYS[next] !== key) next++;
    if (next === HISTORY_KEYS.length) return false;
    next++;
  }
  return true;
}

function keptText(previous: EncodedHistory, index: number): string {
  const end = previous.starts[index + 1] ?? previous.json.length;
  return previous.json.slice(previous.starts[index]!, end - 1);
}

/**
 * Decodes a hash read with HGETALL (buffers). An empty hash is a new user. A state written for
 * another dimension cannot be combined with today's embeddings and is rejected.
 */
export function decodeUserState(fields: StateFields, layout: AggregateLayout): UserState {
  const state = emptyUserState(layout);
  if (Object.keys(fields).length === 0) return state;

  const version = text(fields, 'v');
  if (version === undefined || !READABLE_FORMAT_VERSIONS.has(version)) {
    throw corrupt(`format version ${version ?? 'missing'}, expected ${STATE_FORMAT_VERSION}`);
  }
  const dim = Number(text(fields, 'dim'));
  if (dim !== layout.dim) throw corrupt(`dimension ${dim}, catalogue has ${layout.dim}`);

  state.revision = Number(text(fields, 'rev') ?? 0);
  state.eventCount = Number(text(fields, 'n') ?? 0);
  const anchor = text(fields, 'anchor_ms');
  state.aggregates.anchorMs = anchor === undefined ? null : Number(anchor);
  decodeOffsets(fields, state);
  decodeAggregates(fields, layout, state);
  state.history = JSON.parse(text(fields, 'hist') ?? '[]') as HistoryEntry[];
  state.pending = JSON.parse(text(fields, 'pending') ?? '[]') as PendingEntry[];
  state.dual = decodeDual(fields, dim);
  return state;
}

function decodeOffsets(fields: StateFields, state: UserState): void {
  for (const name of Object.keys(fields)) {
    if (!name.startsWith('off:')) continue;
    state.offsets.set(Number(name.slice(4)), Number(text(fields, name)));
  }
}

/** A half-life missing from the stored state (newly configured) starts from zero. */
function decodeAggregates(fields: StateFields, layout: AggregateLayout, state: UserState): void {
  const sums = fields['sums'];
  const weights = fields['weights'];
  const scales = fields['scales'];
  const stored = (text(fields, 'half_lives_ms') ?? '').split(',').map(Number);
  if (!sums || !weights) return;
  const slots = stored.length * 2;
  if (
    sums.length !== slots * layout.dim * 4 ||
    weights.length !== slots * 8 ||
    (scales !== undefined && scales.length !== slots * 8)
  ) {
    throw corrupt(`sums of ${sums.length} bytes and weights of ${weights.length} bytes`);
  }

  const storedSums = decodeFloat32LE(sums);
  const storedWeights = decodeFloat64LE(weights);
  const storedScales = scales ? decodeFloat64LE(scales) : new Float64Array(slots).fill(1);
  layout.halfLivesMs.forEach((halfLifeMs, h) => {
    const from = stored.indexOf(halfLifeMs);
    if (from < 0) return;
    POLARITIES.forEach((polarity, p) => {
      const source = p * stored.length + from;
      const target = slotIndex(layout, polarity, h);
      const row = storedSums.subarray(source * layout.dim, (source + 1) * layout.dim);
      state.aggregates.sums.set(row, target * layout.dim);
      state.aggregates.weights[target] = storedWeights[source]!;
      state.aggregates.scales[target] = storedScales[source]!;
    });
  });
}

function decodeDual(fields: StateFields, dim: number): UserState['dual'] {
  const bytes = fields['dual'];
  if (!bytes) return null;
  const stats = JSON.parse(text(fields, 'dual_stats') ?? '{}') as Record<string, number>;
  return {
    vector: readFloat32(bytes, dim),
    iterations: stats['iterations'] ?? 0,
    relativeResidual: stats['residual'] ?? 0,
    terms: stats['terms'] ?? 0,
  };
}

export function readFloat32(bytes: Buffer, dim: number): Float32Array {
  if (bytes.length !== dim * 4)
    throw corrupt(`vector of ${bytes.length} bytes, expected ${dim * 4}`);
  return decodeFloat32LE(bytes);
}

function text(fields: StateFields, name: string): string | undefined {
  return fields[name]?.toString('utf8');
}

function corrupt(message: string): AffinityError {
  return new AffinityError('STATE_CORRUPT', `user state: ${message}`);
}
