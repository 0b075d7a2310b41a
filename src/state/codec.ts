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
import { STATE_FORMAT_VERSION, emptyUserState } from './user-state.js';
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
 * The write of `state` as `revision` (the writer stores state.revision + 1), every field as
 * field, value, field, value...; the history's bytes are written by `writer` (history-json.ts)
 * and valid until its next reset. No other binary value is copied here: a flush encodes
 * thousands of states, and a 10 KB allocation per state cost more than the rest of its encoding
 * (Node allocates each buffer over 4 KB apart and accounts it to the garbage collector).
 *
 * The history goes whole at every write. An edit of the stored one (its new entries as text, the
 * kept ones as byte ranges that a Lua script copied from the live hash) was what this did until
 * 2026-12-04: it halved the bytes sent, but the script made Redis copy the stored history into
 * Lua strings and join them, and cost 48 to 58 µs a write against 7 µs for the plain swap
 * (INFO commandstats, 5,000 writes with 200-entry histories). Writing the whole JSON costs this
 * process 0.15 to 0.2 µs an entry (history-json.ts), so whole histories take less time in all,
 * and most of it out of Redis, which every reader shares; docs/benchmarks.md, round of 2026-12-04
 * 09:05.
 */
export function encodeStateWrite(
  state: UserState,
  layout: AggregateLayout,
  revision: number,
  writer = new HistoryJsonWriter(ONE_OFF_BLOCK_BYTES),
): EncodedFields {
  const fields = encodeAllButHistory(state, layout, revision, writer);
  fields.push('hist', encodeHistory(state.history, writer));
  return fields;
}

function encodeAllButHistory(
  state: UserState,
  layout: AggregateLayout,
  revision: number,
  writer: HistoryJsonWriter,
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
  encodeAggregates(state, layout, fields, writer);
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
function encodeAggregates(
  state: UserState,
  layout: AggregateLayout,
  fields: EncodedFields,
  writer: HistoryJsonWriter,
): void {
  const { sums, scales, weights } = state.aggregates;
  fields.push('half_lives_ms', layout.halfLivesMs.join(','));
  fields.push('sums', littleEndianView(sums));
  fields.push('scales', writer.float64LE(scales));
  fields.push('weights', writer.float64LE(weights));
}

function encodeDual(dual: NonNullable<UserState['dual']>, fields: EncodedFields): void {
  const stats = { iterations: dual.iterations, residual: dual.relativeResidual, terms: dual.terms };
  fields.push('dual', littleEndianView(dual.vector), 'dual_stats', JSON.stringify(stats));
}

/** The history's JSON, exactly JSON.stringify's: `[`, the entries joined by `,`, `]`. */
function encodeHistory(history: readonly HistoryEntry[], writer: HistoryJsonWriter): JsonBytes {
  writer.begin();
  writer.ascii('[');
  history.forEach((entry, i) => {
    if (i > 0) writer.ascii(',');
    writer.entry(entry);
  });
  writer.ascii(']');
  return writer.end();
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
