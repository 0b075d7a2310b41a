/**
 * Reads and writes user states in Redis, one round trip per batch each way. A write is a Lua
 * script per user that overwrites the user's hash only if its revision is still the one that was
 * read (optimistic concurrency): a zombie consumer that lost its partitions in a rebalance can
 * therefore never overwrite a newer state, and the state and its applied offsets always change
 * together.
 */
import type { Redis } from 'ioredis';
import { AffinityError } from '../errors.js';
import type { AggregateLayout } from '../features/aggregate.js';
import { decodeUserState, encodeUserState } from './codec.js';
import type { StateFields } from './codec.js';
import type { KeySpace } from './keys.js';
import { catalogMetaKey, userStateKey } from './keys.js';
import type { UserState } from './user-state.js';

const WRITE_STATE_LUA = `
local current = redis.call('HGET', KEYS[1], 'rev') or '0'
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`;

interface StateCommands {
  affinityWriteState(key: string, ...args: (string | Buffer)[]): Promise<number>;
}

export interface WriteOutcome {
  readonly written: string[];
  /** Users whose state changed under us; the caller re-reads and re-applies them. */
  readonly conflicts: string[];
}

export class UserStateStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    private readonly idleTtlMs: number,
  ) {
    if (!('affinityWriteState' in redis)) {
      redis.defineCommand('affinityWriteState', { numberOfKeys: 1, lua: WRITE_STATE_LUA });
    }
  }

  /**
   * Reads the raw hashes of `users` and the catalogue version in one round trip; the caller
   * decodes once it knows the catalogue's dimension (see decodeOrReset).
   */
  async readRaw(users: readonly string[]): Promise<RawStates> {
    const pipeline = this.redis.pipeline();
    for (const user of users) pipeline.hgetallBuffer(userStateKey(this.keys, user));
    pipeline.hget(catalogMetaKey(this.keys), 'version');
    const replies = (await pipeline.exec()) ?? [];

    const raw = new Map<string, StateFields>();
    users.forEach((user, index) => raw.set(user, replyValue(replies[index]) as StateFields));
    const version = replyValue(replies[users.length]) as string | null;
    return { raw, catalogVersion: Number(version ?? 0) };
  }

  async loadMany(
    users: readonly string[],
    layout: AggregateLayout,
  ): Promise<Map<string, UserState>> {
    const { raw } = await this.readRaw(users);
    const states = new Map<string, UserState>();
    for (const [user, fields] of raw) states.set(user, decodeUserState(fields, layout));
    return states;
  }

  async load(user: string, layout: AggregateLayout): Promise<UserState> {
    const states = await this.loadMany([user], layout);
    return states.get(user)!;
  }

  /** Writes each state with its revision bumped; returns which writes lost a race. */
  async writeMany(
    states: ReadonlyMap<string, UserState>,
    layout: AggregateLayout,
  ): Promise<WriteOutcome> {
    const pipeline = this.redis.pipeline();
    const users = [...states.keys()];
    for (const user of users) {
      const state = states.get(user)!;
      const expected = String(state.revision);
      const fields = encodeUserState({ ...state, revision: state.revision + 1 }, layout);
      const args: (string | Buffer)[] = [expected, String(this.idleTtlMs)];
      for (const [name, value] of fields) args.push(name, value);
      (pipeline as unknown as StateCommands).affinityWriteState(
        userStateKey(this.keys, user),
        ...args,
      );
    }
    const replies = (await pipeline.exec()) ?? [];

    const written: string[] = [];
    const conflicts: string[] = [];
    users.forEach((user, index) => {
      if (replyValue(replies[index]) === 1) {
        states.get(user)!.revision++;
        written.push(user);
      } else conflicts.push(user);
    });
    return { written, conflicts };
  }
}

export interface RawStates {
  readonly raw: Map<string, StateFields>;
  readonly catalogVersion: number;
}

function replyValue(reply: [Error | null, unknown] | undefined): unknown {
  if (!reply) throw new AffinityError('REDIS_UNAVAILABLE', 'Redis pipeline returned no reply');
  const [err, value] = reply;
  if (err)
    throw new AffinityError('REDIS_UNAVAILABLE', 'Redis command failed', {
      cause: err,
      retriable: true,
    });
  return value;
}
