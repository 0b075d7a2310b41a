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
import type { JsonBytes } from './history-json.js';
import { HistoryJsonWriter } from './history-json.js';

export type StateFields = Record<string, Buffer>;

/**
 * Field names and values in pairs, as HSET takes them. Binary values are views of the state's
 * own arrays (on a little-endian host): valid until the state next changes, so the caller
 * copies them out (state/resp.ts) before it yields.
 */
export type EncodedFields = (string | Uint8Array)[];

/** States written before the deferred decay scales existed; read as if every scale were 1. */
const READABLE_FORMAT_VERSIONS = new Set(['1', String(STATE_FORMAT_VERSION)]);
/** Memory a writer made for one encoding takes at a time (a 200-entry history is about 9 KB). */
const ONE_OFF_BLOCK_BYTES = 16_384;

/**
 * Encodes the whole state as field, value, field, value..., with `revision` as its revision
 * (the writer stores the next one). No binary value is copied here: a flush encodes thousands
 * of states, and a 10 KB allocation per state cost more than the rest of its encoding (Node
 * allocates each buffer over 4 KB apart and accounts it to the garbage collector).
 */
export function encodeUserState(
  state: UserState,
  layout: AggregateLayout,
  revision = state.revision,
): EncodedFields {
  const fields = encodeAllButHistory(state, layout, revision);
  const writer = new HistoryJsonWriter(ONE_OFF_BLOCK_BYTES);
  fields.push('hist', encodeHistory(state.history, undefined, writer).json!);
  return fields;
}

/** A state write: every field, or every field but `hist` and the edit that makes it in Redis. */
export interface StateWrite {
  readonly fields: EncodedFields;
  /** Null when `fields` holds `hist` itself. */
  readonly historyEdit: HistoryEdit | null;
}

/**
 * How the history's JSON of a write is made from the one Redis holds: `baseBytes` is that
 * JSON's length, which the writer checks before it edits; `segments` are pairs, in order, each
 * either (-1, text) or (from, to), the bytes [from, to) of the stored JSON. Their concatenation
 * is the new JSON.
 */
export interface HistoryEdit {
  readonly baseBytes: number;
  /** Offsets as decimal strings, texts as UTF-8 bytes. */
  readonly segments: readonly (string | JsonBytes)[];
}

/**
 * The write of `state` as `revision`, its history sent as an edit of the one Redis holds when
 * this process wrote that one (at the revision the write expects) and some of it is kept. The
 * history's bytes are written by `writer` (history-json.ts) and valid until its next reset.
 *
 * A history changes little between two writes (a few entries in, as many oldest ones out), yet
 * its JSON is half of a state's bytes: about 10 KB with 200 entries. Rewriting it took most of a
 * write's encoding (the JSON built, measured, copied: 60 of about 100 µs per write at d = 384)
 * and half its bytes on the wire. The edit keeps the stored text of the kept entries, located by
 * the byte offsets of the encoding this process wrote; the writer's script refuses it (as a lost
 * race) unless the stored JSON has the length that encoding had, and the revision guarantees
 * the rest: only a write this process saw confirmed made that revision.
 */
export function encodeStateWrite(
  state: UserState,
  layout: AggregateLayout,
  revision: number,
  writer = new HistoryJsonWriter(ONE_OFF_BLOCK_BYTES),
): StateWrite {
  const fields = encodeAllButHistory(state, layout, revision);
  const written = writtenHistories.get(state);
  const base = written?.find((encoding) => encoding.revision === state.revision);
  const encoded = encodeHistory(state.history, base, writer);
  // Kept: what Redis holds now (the base) and what this write makes, for the write after it.
  const { entries, starts, byteLength } = encoded;
  const made = { revision, entries, starts, byteLength };
  writtenHistories.set(state, base ? [base, made] : [made]);
  if (encoded.json !== null) {
    fields.push('hist', encoded.json);
    return { fields, historyEdit: null };
  }
  return { fields, historyEdit: { baseBytes: base!.byteLength, segments: encoded.segments } };
}

function encodeAllButHistory(
  state: UserState,
  layout: AggregateLayout,
  revision: number,
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
  fields.push('pending', JSON.stringify(state.pending));
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
 * The history's JSON as a write left it in Redis: which entries, where each one's text starts
 * (in bytes), and the whole length. The JSON is `[` + the entries' texts joined by `,` + `]`,
 * exactly JSON.stringify of the history (history-json.ts). Entries are never mutated, so an
 * entry of the state that is the very object of an earlier encoding has the same text.
 */
interface WrittenHistory {
  /** The revision of the write that carried it. */
  readonly revision: number;
  readonly entries: readonly HistoryEntry[];
  readonly starts: readonly number[];
  readonly byteLength: number;
}

/** Per state, the last write's history and the one before it (see encodeStateWrite). */
const writtenHistories = new WeakMap<UserState, WrittenHistory[]>();

interface EncodedHistory {
  readonly entries: readonly HistoryEntry[];
  readonly starts: readonly number[];
  readonly byteLength: number;
  /** The whole JSON, when no entry of the base is kept (or there is no base). */
  readonly json: JsonBytes | null;
  /** Otherwise the edit of the base's JSON, as HistoryEdit's segments. */
  readonly segments: readonly (string | JsonBytes)[];
}

/**
 * Both lists are sorted by compareHistory, so one merge pass finds each kept entry (the same
 * object) in the base; a run of entries kept next to each other is one range of the stored
 * bytes, commas included, and everything else goes as text.
 */
function encodeHistory(
  history: readonly HistoryEntry[],
  base: WrittenHistory | undefined,
  writer: HistoryJsonWriter,
): EncodedHistory {
  const edit = new HistoryEditBuilder(base, writer);
  const starts = new Array<number>(history.length);
  const entries = base?.entries ?? [];
  let at = 1;
  let j = 0;
  for (let i = 0; i < history.length; i++) {
    const entry = history[i]!;
    if (entries[j] !== entry) {
      while (j < entries.length && compareHistory(entries[j]!, entry) < 0) j++;
    }
    starts[i] = at;
    if (entries[j] === entry) at += edit.kept(i, j++) + 1;
    else at += edit.added(i, entry) + 1;
  }
  const byteLength = Math.max(2, at);
  return { entries: history.slice(), starts, byteLength, ...edit.finish() };
}

/**
 * Collects the segments of a history edit, merging neighbouring texts and ranges. A text is
 * one piece of the writer's, open from its first byte until a range or the end closes it.
 */
class HistoryEditBuilder {
  private readonly segments: (string | JsonBytes)[] = [];
  private textOpen = false;
  private rangeFrom = -1;
  private rangeTo = -1;
  private lastKept = -2;
  private keptAny = false;

  constructor(
    private readonly base: WrittenHistory | undefined,
    private readonly writer: HistoryJsonWriter,
  ) {
    this.text('[');
  }

  /** Entry `i` of the new history is entry `j` of the base; returns its text's bytes. */
  kept(i: number, j: number): number {
    const base = this.base!;
    const from = base.starts[j]!;
    const to = (base.starts[j + 1] ?? base.byteLength) - 1;
    this.keptAny = true;
    if (j === this.lastKept + 1 && this.rangeFrom >= 0) this.rangeTo = to;
    else {
      this.flushRange();
      if (i > 0) this.text(',');
      this.flushText();
      this.rangeFrom = from;
      this.rangeTo = to;
    }
    this.lastKept = j;
    return to - from;
  }

  /** Entry `i` of the new history is new; returns its text's bytes. */
  added(i: number, entry: HistoryEntry): number {
    this.flushRange();
    this.lastKept = -2;
    if (i > 0) this.text(',');
    this.openText();
    return this.writer.entry(entry);
  }

  finish(): { json: JsonBytes | null; segments: (string | JsonBytes)[] } {
    this.flushRange();
    this.text(']');
    if (!this.keptAny) return { json: this.writer.end(), segments: [] };
    this.flushText();
    return { json: null, segments: this.segments };
  }

  private text(ascii: string): void {
    this.openText();
    this.writer.ascii(ascii);
  }

  private openText(): void {
    if (this.textOpen) return;
    this.writer.begin();
    this.textOpen = true;
  }

  private flushRange(): void {
    if (this.rangeFrom < 0) return;
    this.segments.push(String(this.rangeFrom), String(this.rangeTo));
    this.rangeFrom = -1;
  }

  private flushText(): void {
    if (!this.textOpen) return;
    this.segments.push('-1', this.writer.end());
    this.textOpen = false;
  }
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
