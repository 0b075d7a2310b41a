/**
 * Reads and writes user states in Redis, one round trip per batch each way. A write replaces the
 * user's hash only if its revision is still the one that was read (optimistic concurrency): a
 * zombie consumer that lost its partitions in a rebalance can therefore never overwrite a newer
 * state, and the state and its applied offsets always change together.
 *
 * The write goes in two steps sent back to back (one socket write, see writeChunk): HSET of the
 * whole new state into a staging key of this writer's own, then a small Lua script that checks
 * the revision of the live key and RENAMEs the staging key over it (or deletes the staging key
 * on a conflict). RENAME is atomic and O(1), so readers see the old state or the new one, never
 * a mix. Passing the 10 KB of a state through a script's arguments instead cost Redis about
 * twice the time per write (EVALSHA 30 to 90 µs against HSET 10 to 15 µs plus the swap,
 * measured with INFO commandstats at d = 384), Lua copying each argument into and back out of
 * its own strings.
 * Both keys carry the user's hash tag, so the script is valid on Redis Cluster; the staging key
 * expires by itself if a writer dies between the two steps.
 */
import { createHash, randomUUID } from 'node:crypto';
import { setImmediate as socketTurn } from 'node:timers/promises';
import type { Writable } from 'node:stream';
import type { Redis } from 'ioredis';
import { AffinityError } from '../errors.js';
import type { AggregateLayout } from '../features/aggregate.js';
import { decodeUserState, encodeStateWrite } from './codec.js';
import { HistoryJsonWriter } from './history-json.js';
import type { StateFields } from './codec.js';
import type { KeySpace } from './keys.js';
import { catalogMetaKey, userStagingKey, userStateKey } from './keys.js';
import { RespEncoder, SpareBuffers } from './resp.js';
import type { UserState } from './user-state.js';

/** KEYS: live key, staging key. ARGV: expected revision, idle TTL in ms (0: none). */
const SWAP_STATE_LUA = `
local current = redis.call('HGET', KEYS[1], 'rev') or '0'
if current ~= ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('PERSIST', KEYS[1]) end
return 1
`;

/** Redis names a loaded script by the SHA-1 of its text. */
const SWAP_STATE_SHA = sha1(SWAP_STATE_LUA);

/** How long a staging key outlives a writer that died before its swap. */
const STAGING_TTL_MS = '600000';

/**
 * Users per pipeline of a write: about 5 MB at d = 384 with the default half-lives and
 * histories of 200 entries.
 */
const WRITE_CHUNK_USERS = 256;
/**
 * Chunks of a write sent and not yet answered, at most: their encoding buffers are what a
 * flush holds at once (about 160 MB at 32, WRITE_CHUNK_USERS's 5 MB each).
 */
const MAX_CHUNKS_IN_FLIGHT = 32;
/** HSET staging, PEXPIRE staging, swap. */
const COMMANDS_PER_WRITE = 3;
/**
 * Encoding buffers kept for the next flushes (resp.ts): what a flush holds at once
 * (MAX_CHUNKS_IN_FLIGHT chunks) with full histories at d = 384, and room to spare.
 */
const SPARE_BUFFER_BYTES = 256 * 2 ** 20;

/** A write started by startWrites. */
export interface StateWriting {
  /** Every state is encoded: the caller may change them from here. */
  readonly sent: Promise<void>;
  readonly outcome: Promise<WriteOutcome>;
}

export interface WriteOutcome {
  readonly written: string[];
  /** Users whose state changed under us; the caller re-reads and re-applies them. */
  readonly conflicts: string[];
}

export class UserStateStore {
  /** Names this writer's staging keys, apart from every other writer's. */
  private readonly writerId = randomUUID().slice(0, 12);
  private scriptLoading = false;
  private readonly spareBuffers = new SpareBuffers(SPARE_BUFFER_BYTES);
  /** The histories' JSON of the chunk being encoded (history-json.ts), reused by the next. */
  private readonly historyWriter = new HistoryJsonWriter();

  /**
   * `writer` carries the writes, `redis` everything else. The worker gives them separate
   * connections: on one, a batch's read would wait behind the replies of a whole flush (several
   * MB of states that Redis takes a few hundred ms to store), and the apply with it.
   */
  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    private readonly idleTtlMs: number,
    private readonly writer: Redis = redis,
  ) {}

  /**
   * The writes call the swap script by its SHA (EVALSHA). Loading it goes out on the writer's
   * connection ahead of any write, which Redis runs in order, so no write waits for it; it is
   * loaded again when Redis answers NOSCRIPT (restarted, or its scripts flushed).
   */
  private loadSwapScript(): void {
    this.scriptLoading = true;
    this.writer.script('LOAD', SWAP_STATE_LUA).catch(() => undefined);
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

  /**
   * Writes each state as its revision + 1 where Redis still holds that revision; returns which
   * were written and which lost a race (the caller records the new revisions). A write of at
   * most WRITE_CHUNK_USERS states is encoded and sent before the call first yields, so the
   * caller may change the states as soon as it returns; for larger ones, see startWrites.
   */
  writeMany(
    states: ReadonlyMap<string, UserState>,
    layout: AggregateLayout,
  ): Promise<WriteOutcome> {
    const writing = this.startWrites(states, layout);
    return writing.sent.then(() => writing.outcome);
  }

  /**
   * The writes of writeMany, as pipelines of WRITE_CHUNK_USERS: one round trip, but Redis works
   * on a chunk while the next is being encoded, and no single buffer holds the whole write. At
   * most MAX_CHUNKS_IN_FLIGHT chunks wait for their replies: a later chunk is encoded once the
   * oldest is answered, so that the encoding buffers of a large flush stay bounded. `sent`
   * resolves once every state is encoded (copied out): until then the caller must not change
   * them. For one chunk, that is before this returns.
   *
   * Between chunks the loop gives the event loop a turn. The socket takes a few MB at once
   * (net.ipv4.tcp_wmem, 4 MB here), about one chunk; without the turn, the rest of a flush
   * waited in Node's stream buffer until every chunk was encoded, Redis stood idle meanwhile,
   * and its last reply came 140 to 350 ms after the last chunk was sent; with the turn, 2 to
   * 70 ms. Three pairs at 1,000,000 events: from the last event read to the last acknowledged,
   * 0.98 to 1.12 s → 0.57 to 0.62 s (docs/benchmarks.md, round of 2026-12-04 11:05).
   */
  startWrites(states: ReadonlyMap<string, UserState>, layout: AggregateLayout): StateWriting {
    if (!this.scriptLoading) this.loadSwapScript();
    const users = [...states.keys()];
    const chunks: Promise<[Error | null, unknown][]>[] = [];
    const sent = (async () => {
      for (let start = 0; start < users.length; start += WRITE_CHUNK_USERS) {
        if (start > 0) await socketTurn();
        if (chunks.length >= MAX_CHUNKS_IN_FLIGHT) {
          await chunks[chunks.length - MAX_CHUNKS_IN_FLIGHT];
        }
        const chunk = users.slice(start, start + WRITE_CHUNK_USERS);
        chunks.push(this.writeChunk(chunk, states, layout));
      }
    })();
    const outcome = sent.then(async () =>
      this.outcomeOf(users, (await Promise.all(chunks)).flat()),
    );
    // Settled through `sent` by the caller; this keeps an early failure from also going
    // unhandled here.
    outcome.catch(() => undefined);
    return { sent, outcome };
  }

  private outcomeOf(users: readonly string[], replies: [Error | null, unknown][]): WriteOutcome {
    const written: string[] = [];
    const conflicts: string[] = [];
    users.forEach((user, index) => {
      replyValue(replies[COMMANDS_PER_WRITE * index]);
      replyValue(replies[COMMANDS_PER_WRITE * index + 1]);
      if (this.swapReply(replies[COMMANDS_PER_WRITE * index + 2]) === 1) written.push(user);
      else conflicts.push(user);
    });
    return { written, conflicts };
  }

  /**
   * Sends one chunk of writes, encoded by RespEncoder: every value, the states' arrays included,
   * is copied into the chunk's buffer before this returns. The commands go out one by one with
   * the socket corked, so that they leave in one write (what a pipeline would do, without
   * copying the chunk again).
   */
  private async writeChunk(
    users: readonly string[],
    states: ReadonlyMap<string, UserState>,
    layout: AggregateLayout,
  ): Promise<[Error | null, unknown][]> {
    const encoder = new RespEncoder();
    // The chunk before this one was copied into its buffer (toCommands) before it yielded.
    this.historyWriter.reset();
    const idleTtlMs = String(this.idleTtlMs);
    for (const user of users) {
      const state = states.get(user)!;
      const key = userStateKey(this.keys, user);
      const staging = userStagingKey(this.keys, user, this.writerId);
      const revision = String(state.revision);
      const revisionWritten = state.revision + 1;
      const fields = encodeStateWrite(state, layout, revisionWritten, this.historyWriter);
      encoder.add(['HSET', staging, ...fields]);
      encoder.add(['PEXPIRE', staging, STAGING_TTL_MS]);
      encoder.add(['EVALSHA', SWAP_STATE_SHA, '2', key, staging, revision, idleTtlMs]);
    }

    const bytes = this.spareBuffers.take(encoder.byteLength);
    const commands = encoder.toCommands(bytes);
    const stream = this.writer.stream as Writable | undefined;
    stream?.cork();
    try {
      for (const command of commands) void this.writer.sendCommand(command);
    } finally {
      stream?.uncork();
    }
    const replies = await Promise.all(commands.map((command) => settled(command.promise)));
    // Every command is settled: ioredis neither holds nor writes its bytes again.
    this.spareBuffers.give(bytes);
    return replies;
  }

  /** The swap's reply; NOSCRIPT fails the write (to be retried) and loads the script again. */
  private swapReply(reply: [Error | null, unknown] | undefined): unknown {
    if (reply?.[0]?.message.startsWith('NOSCRIPT')) this.loadSwapScript();
    return replyValue(reply);
  }
}

export interface RawStates {
  readonly raw: Map<string, StateFields>;
  readonly catalogVersion: number;
}

/** A command's outcome as a pipeline gives it: [error] or [null, reply]. */
function settled(reply: Promise<unknown>): Promise<[Error | null, unknown]> {
  return reply.then(
    (value) => [null, value],
    (err: unknown) => [err instanceof Error ? err : new Error(String(err)), null],
  );
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

function sha1(text: string): string {
  return createHash('sha1').update(text).digest('hex');
}
