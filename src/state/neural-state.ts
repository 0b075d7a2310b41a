/**
 * The neural worker's per-user state: the encoder's input (the newest events, back to the N-th
 * one the encoder can read; see EncoderWindow) and the encoding one model version made from
 * it, with the offsets it reflects. It lives in its own hash (`P u:{<user>}:neural`,
 * docs/redis-layout.md) because the neural worker is its own consumer group with its own
 * offsets; the same hash tag as the user's main state keeps it in the same Redis Cluster slot.
 */
import type { Redis } from 'ioredis';
import type { LoadedModel } from '../features/neural-encode.js';
import { decodeFloat32LE, float32Bytes } from '../encoding/float32.js';
import { AffinityError } from '../errors.js';
import type { KeySpace } from './keys.js';
import { userNeuralKey } from './keys.js';
import type { HistoryEntry, SequencedEvent } from './user-state.js';
import { compareHistory } from './user-state.js';

export const NEURAL_FORMAT_VERSION = 1;

export interface NeuralUserState {
  history: HistoryEntry[];
  offsets: Map<number, number>;
  encoding: Float32Array | null;
  model: string | null;
  revision: number;
}

export function emptyNeuralState(): NeuralUserState {
  return { history: [], offsets: new Map(), encoding: null, model: null, revision: 0 };
}

/**
 * Which events the encoder reads, so that the stored history can hold N of them. Training
 * (src/neural/train.ts, `buildLog`) drops events whose type the model lacks or whose item is
 * not in the catalogue and then takes the last N; serving must store enough to do the same.
 */
export interface EncoderWindow {
  /** N, the events one encoding reads. */
  readonly length: number;
  /** Whether an event is stored at all: its type is one the model has a row for. */
  keeps(entry: HistoryEntry): boolean;
  /** Whether a stored event is read now: its item has an embedding. */
  reads(entry: HistoryEntry): boolean;
}

/**
 * The window of `model`: events of the types it knows are kept, and read when `hasEmbedding`
 * says their item has an embedding. The neural worker and the offline replay build it here,
 * so that both store and read the same events.
 */
export function encoderWindow(
  model: Pick<LoadedModel, 'config' | 'knowsType'>,
  hasEmbedding: (item: string) => boolean,
): EncoderWindow {
  return {
    length: model.config.historyLength,
    keeps: (entry) => model.knowsType(entry.type),
    reads: (entry) => model.knowsType(entry.type) && hasEmbedding(entry.item),
  };
}

/**
 * Events whose item has no embedding yet are stored (the embedding often arrives after the
 * item's first events) but do not count towards N; this bounds the history at this many times
 * N in all, so that a user of items without embeddings cannot grow the hash without limit.
 */
export const STORED_HISTORY_FACTOR = 2;

/**
 * Adds the events not applied yet (by offset) and of a type the model knows to the history,
 * in (ts, item, type) order whatever the arrival order, and trims it to the newest events back
 * to the N-th one the encoder reads (see EncoderWindow). Returns how many were added.
 */
export function applyNeuralEvents(
  state: NeuralUserState,
  events: readonly SequencedEvent[],
  window: EncoderWindow,
): number {
  let applied = 0;
  for (const { event, position } of events) {
    if (position) {
      const last = state.offsets.get(position.partition);
      if (last !== undefined && position.offset <= last) continue;
      state.offsets.set(position.partition, position.offset);
    }
    const entry = { item: event.item, ts: event.ts, type: event.type };
    if (!window.keeps(entry)) continue;
    state.history.push(entry);
    applied++;
  }
  state.history.sort(compareHistory);
  trimHistory(state.history, window);
  return applied;
}

/** Drops the events older than the window's N-th read one, and any beyond the hard bound. */
function trimHistory(history: HistoryEntry[], window: EncoderWindow): void {
  const floor = Math.max(0, history.length - STORED_HISTORY_FACTOR * window.length);
  let start = history.length;
  let read = 0;
  while (start > floor && read < window.length) {
    start--;
    if (window.reads(history[start]!)) read++;
  }
  history.splice(0, start);
}

const WRITE_LUA = `
local current = redis.call('HGET', KEYS[1], 'rev') or '0'
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`;

interface NeuralCommands {
  affinityWriteNeural(key: string, ...args: (string | Buffer)[]): Promise<number>;
}

export class NeuralStateStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    private readonly idleTtlMs: number,
  ) {
    if (!('affinityWriteNeural' in redis)) {
      redis.defineCommand('affinityWriteNeural', { numberOfKeys: 1, lua: WRITE_LUA });
    }
  }

  async loadMany(users: readonly string[]): Promise<Map<string, NeuralUserState>> {
    const pipeline = this.redis.pipeline();
    for (const user of users) pipeline.hgetallBuffer(userNeuralKey(this.keys, user));
    const replies = (await pipeline.exec()) ?? [];
    const states = new Map<string, NeuralUserState>();
    users.forEach((user, index) => {
      const [err, fields] = replies[index] ?? [new Error('no reply'), null];
      if (err)
        throw new AffinityError('REDIS_UNAVAILABLE', 'reading neural states failed', {
          cause: err,
        });
      states.set(user, decodeNeural(fields as Record<string, Buffer>));
    });
    return states;
  }

  /** Writes each state if unchanged since read; returns the users that lost a race. */
  async writeMany(states: ReadonlyMap<string, NeuralUserState>): Promise<string[]> {
    const users = [...states.keys()];
    const pipeline = this.redis.pipeline() as unknown as NeuralCommands & {
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    for (const user of users) {
      const state = states.get(user)!;
      const args = [String(state.revision), String(this.idleTtlMs), ...encodeNeural(state)];
      pipeline.affinityWriteNeural(userNeuralKey(this.keys, user), ...args);
    }
    const replies = (await pipeline.exec()) ?? [];

    const conflicts: string[] = [];
    users.forEach((user, index) => {
      const [err, reply] = replies[index] ?? [new Error('no reply'), null];
      if (err)
        throw new AffinityError('REDIS_UNAVAILABLE', 'writing neural states failed', {
          cause: err,
        });
      if (reply === 1) states.get(user)!.revision++;
      else conflicts.push(user);
    });
    return conflicts;
  }

  /** Every user with a neural state, for `affinity neural reencode`. */
  async *users(): AsyncGenerator<string[]> {
    const pattern = `${this.keys.prefix}u:{*}:neural`;
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
      cursor = next;
      const users = keys.map((key) => key.slice(key.indexOf('{') + 1, key.lastIndexOf('}')));
      if (users.length > 0) yield users;
    } while (cursor !== '0');
  }
}

function encodeNeural(state: NeuralUserState): (string | Buffer)[] {
  const fields: (string | Buffer)[] = [
    'v',
    String(NEURAL_FORMAT_VERSION),
    'rev',
    String(state.revision + 1),
    'hist',
    JSON.stringify(state.history),
  ];
  for (const [partition, offset] of state.offsets) fields.push(`off:${partition}`, String(offset));
  if (state.encoding && state.model !== null) {
    fields.push('enc', float32Bytes(state.encoding), 'model', state.model);
  }
  return fields;
}

function decodeNeural(fields: Record<string, Buffer>): NeuralUserState {
  const state = emptyNeuralState();
  if (Object.keys(fields).length === 0) return state;
  const version = fields['v']?.toString();
  if (version !== String(NEURAL_FORMAT_VERSION)) {
    throw new AffinityError('STATE_CORRUPT', `neural state format ${version ?? 'missing'}`);
  }

  state.revision = Number(fields['rev']?.toString() ?? 0);
  state.history = JSON.parse(fields['hist']?.toString() ?? '[]') as HistoryEntry[];
  for (const [name, value] of Object.entries(fields)) {
    if (name.startsWith('off:')) state.offsets.set(Number(name.slice(4)), Number(value.toString()));
  }
  const encoding = fields['enc'];
  state.encoding = encoding ? decodeFloat32LE(encoding) : null;
  state.model = fields['model']?.toString() ?? null;
  return state;
}
