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
import {
  decodeFloat32LE,
  decodeFloat64LE,
  float32Bytes,
  float64Bytes,
} from '../encoding/float32.js';

export type StateFields = Record<string, Buffer>;

/**
 * Encodes the whole state. The set of fields only grows (none is ever left out once written),
 * so the writer overwrites in place instead of deleting the hash first.
 */
export function encodeUserState(
  state: UserState,
  layout: AggregateLayout,
): Map<string, Buffer | string> {
  const fields = new Map<string, Buffer | string>();
  fields.set('v', String(STATE_FORMAT_VERSION));
  fields.set('dim', String(state.dim));
  fields.set('rev', String(state.revision));
  fields.set('n', String(state.eventCount));
  if (state.aggregates.anchorMs !== null)
    fields.set('anchor_ms', String(state.aggregates.anchorMs));

  for (const [partition, offset] of state.offsets) fields.set(`off:${partition}`, String(offset));
  encodeAggregates(state, layout, fields);
  fields.set('hist', JSON.stringify(state.history));
  fields.set('pending', JSON.stringify(state.pending));
  if (state.dual) encodeDual(state, fields);
  return fields;
}

/**
 * The decayed sums as one float32 array of shape [2][H][dim] (positive then negative, half-lives
 * in the order of `half_lives_ms`), which is exactly the in-memory layout, and the weights as
 * float64 [2][H]: a Python reader needs one `numpy.frombuffer(...).reshape(...)` for each.
 */
function encodeAggregates(
  state: UserState,
  layout: AggregateLayout,
  fields: Map<string, Buffer | string>,
): void {
  fields.set('half_lives_ms', layout.halfLivesMs.join(','));
  fields.set('sums', float32Bytes(state.aggregates.sums));
  fields.set('weights', float64Bytes(state.aggregates.weights));
}

function encodeDual(state: UserState, fields: Map<string, Buffer | string>): void {
  const dual = state.dual!;
  fields.set('dual', float32Bytes(dual.vector));
  const stats = { iterations: dual.iterations, residual: dual.relativeResidual, terms: dual.terms };
  fields.set('dual_stats', JSON.stringify(stats));
}

/**
 * Decodes a hash read with HGETALL (buffers). An empty hash is a new user. A state written for
 * another dimension cannot be combined with today's embeddings and is rejected.
 */
export function decodeUserState(fields: StateFields, layout: AggregateLayout): UserState {
  const state = emptyUserState(layout);
  if (Object.keys(fields).length === 0) return state;

  const version = text(fields, 'v');
  if (version !== String(STATE_FORMAT_VERSION)) {
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
  const stored = (text(fields, 'half_lives_ms') ?? '').split(',').map(Number);
  if (!sums || !weights) return;
  if (sums.length !== stored.length * 2 * layout.dim * 4 || weights.length !== stored.length * 16) {
    throw corrupt(`sums of ${sums.length} bytes and weights of ${weights.length} bytes`);
  }

  const storedSums = decodeFloat32LE(sums);
  const storedWeights = decodeFloat64LE(weights);
  layout.halfLivesMs.forEach((halfLifeMs, h) => {
    const from = stored.indexOf(halfLifeMs);
    if (from < 0) return;
    POLARITIES.forEach((polarity, p) => {
      const source = p * stored.length + from;
      const target = slotIndex(layout, polarity, h);
      const row = storedSums.subarray(source * layout.dim, (source + 1) * layout.dim);
      state.aggregates.sums.set(row, target * layout.dim);
      state.aggregates.weights[target] = storedWeights[source]!;
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
