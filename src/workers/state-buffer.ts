/**
 * The heart of the events worker, free of Kafka so that tests and benchmarks drive it directly.
 *
 * Events are applied to user states held in process (read from Redis once, in one round trip
 * for all the users of a batch that are not held yet). A `flush` then writes every changed
 * state, with the offsets it reflects, atomically per user and in one round trip, after
 * re-solving each changed user's dual vector once. The worker commits Kafka offsets only after
 * a flush, so Redis always holds at least what the committed offsets say.
 *
 * Holding states between flushes is what makes the worker fast: a user with ten events in a
 * flush interval is read and written once, not ten times (the same trade as Kafka Streams'
 * record cache and commit interval). Its cost is freshness: Redis lags the stream by up to
 * AFFINITY_FLUSH_INTERVAL.
 *
 * A write that lost a race (a consumer that took the partition over wrote the user in between)
 * is re-read and the events buffered since the last flush are applied again; those already in
 * the newer state are skipped by their offsets, so nothing is applied twice. Those events are
 * kept as the columns of their batches (HeldBatch), not as objects per event: a backlog's flush
 * interval holds hundreds of thousands of them, and as three objects each they outlived the
 * young generation and made most of the engine's old-generation marking (4.4 s of concurrent
 * marking per million events, 1.3 s as columns; docs/benchmarks.md, round of 2026-12-04 05:00).
 */
import { performance } from 'node:perf_hooks';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import type { AggregateLayout } from '../features/aggregate.js';
import { slotCount } from '../features/aggregate.js';
import { RowArena } from '../features/row-arena.js';
import type { EmbeddingCache } from '../items/cache.js';
import type { Logger } from '../ops/logger.js';
import type { StateMetrics } from '../ops/metrics.js';
import type { StateFields } from '../state/codec.js';
import { decodeUserState } from '../state/codec.js';
import { DualSolver } from '../features/dual-solver.js';
import type { Gramian } from '../features/gramian.js';
import type { DualContext } from '../state/dual-step.js';
import { refreshDual } from '../state/dual-step.js';
import type { DualSolution } from '../features/dual.js';
import type { UserStateStore, WriteOutcome } from '../state/store.js';
import type { EventColumns } from './engine-link.js';
import { eventAt, signalTypes } from './engine-link.js';
import type { ApplyResult, SequencedEvent, UpdateContext, UserState } from '../state/user-state.js';
import { applyEvents, emptyUserState } from '../state/user-state.js';

export interface FlushOutcome {
  readonly users: number;
  readonly applied: number;
}

interface Entry {
  /** The user's id: the one string kept for it while it is held (see applyNow). */
  readonly user: string;
  state: UserState;
  /** Events applied since the last write Redis confirmed (their batches are held). */
  unconfirmed: number;
  /** Of those, how many changed the state (the rest were duplicates). */
  applied: number;
  /** Changed since the last write was sent. */
  dirty: boolean;
}

/** What one write sent for a user: the entry and how much of it Redis will confirm. */
interface SentState {
  readonly entry: Entry;
  /** The revision the write expects; the state becomes revision + 1 when it lands. */
  readonly revision: number;
  /** How many of the entry's unconfirmed events the write holds, and of those applied. */
  readonly events: number;
  readonly applied: number;
}

interface SentWrite {
  readonly states: Map<string, SentState>;
  readonly outcome: Promise<WriteOutcome>;
  readonly startedMs: number;
  /** How long solving, encoding and sending kept this thread busy. */
  readonly busyMs: number;
  /** How many of the held batches (the oldest) were applied before it was sent. */
  readonly heldBatches: number;
}

/**
 * A batch applied since the last confirmed flush was sent. Once a flush sent after it is
 * confirmed, Redis holds every one of its events; until then they may have to be applied again.
 */
interface HeldBatch {
  readonly columns: EventColumns;
  readonly partition: number;
}

const MAX_WRITE_ATTEMPTS = 5;
/** At most this much WebAssembly memory for the held states' sums; states beyond it use arrays. */
const MAX_ARENA_BYTES = 2 ** 30;
/**
 * How often a batch whose users are all held reads the catalogue version anyway. The read is a
 * round trip the apply waits for, and while a flush is being stored it took 20 ms a batch on the
 * 2-core development machine, a third of the apply's time; catalogue changes are followed
 * this much later at most.
 */
const CATALOGUE_CHECK_MS = 250;
const NO_WRITES: WriteOutcome = { written: [], conflicts: [] };
/**
 * What a flush costs this thread per user before one has been measured: 0.048 ms at d = 384
 * with method 1 alone (5,000 users in 239 ms, docs/benchmarks.md, round of 2026-12-04 07:00).
 * Without it the first flush of a backlog counted as free and went out on the plain interval,
 * writing every user for a handful of events each. That flush's histories were short; with
 * fuller ones a backlog's first flush cost 0.1 to 0.13 ms per user (round of 09:05, where 0.1
 * was tried and left: it only moves when a backlog's first flush comes).
 */
const FIRST_FLUSH_BUSY_MS_PER_USER = 0.05;
/**
 * A flush of fewer users leaves the figure per user as it was: its fixed costs (a round trip,
 * the positions reported) would make it far too large for the next backlog's flush, which
 * would then wait for the interval's cap.
 */
const MIN_USERS_MEASURED = 256;

export class StateBuffer {
  private readonly entries = new Map<string, Entry>();
  /** Oldest first. */
  private held: HeldBatch[] = [];
  private dirtyUsers = 0;
  private lastFlushMs = performance.now();
  /**
   * Time a flush keeps this thread busy (sending, then taking in the replies) per user it
   * writes, as the last flush of at least MIN_USERS_MEASURED users measured it; before one, a
   * figure measured on the development machine (FIRST_FLUSH_BUSY_MS_PER_USER).
   */
  private flushBusyMsPerUser = FIRST_FLUSH_BUSY_MS_PER_USER;
  private lastCatalogueCheckMs = -Infinity;
  private layoutDim = -1;
  /** The held states' sums (features/row-arena.ts), for the current dimension; null without. */
  private arena: RowArena | null = null;
  /** Method 2's solver for the current catalogue Gramian (its eigenbasis is costly to build). */
  private dualSolver: DualSolver | null = null;
  /** Serialises every change to the held states: applies, sends, confirmations. */
  private exclusive: Promise<unknown> = Promise.resolve();
  /** The flush in flight (sent, not yet confirmed), or the last one. */
  private flushing: Promise<FlushOutcome> | null = null;
  private flushInFlight = false;
  /** The configured event types, as the columns number them. */
  private readonly typeNames: readonly string[];

  constructor(
    private readonly config: Config,
    private readonly store: UserStateStore,
    private readonly cache: EmbeddingCache,
    private readonly metrics: StateMetrics,
    private readonly logger: Logger,
  ) {
    this.typeNames = signalTypes(config.signals).names;
  }

  /**
   * Applies a batch of one partition to the held states, reading the missing ones in one round
   * trip. The columns are kept until a flush covers them: the caller must not change them.
   */
  apply(columns: EventColumns, partition: number): Promise<void> {
    return this.locked(() => this.applyNow({ columns, partition }));
  }

  /**
   * Whether a flush should start: none is in flight, and the interval has passed since the
   * last one while something waits (changed states, or offsets of batches that changed
   * nothing), or too many users wait. The interval is stretched after costly flushes only
   * while a backlog is being read (`caughtUp` false): once the consumer has reached the end of
   * its partitions, what it holds goes out on the plain interval (flushIntervalAfter).
   */
  flushDue(uncommittedOffsets: boolean, caughtUp: boolean): boolean {
    if (this.flushInFlight) return false;
    if (this.overfull) return true;
    if (this.dirtyUsers === 0 && !uncommittedOffsets) return false;
    const expectedBusyMs = this.dirtyUsers * this.flushBusyMsPerUser;
    const intervalMs = flushIntervalAfter(expectedBusyMs, this.config, caughtUp);
    return performance.now() - this.lastFlushMs >= intervalMs;
  }

  /** Too many changed states wait: the caller should wait for a flush before reading more. */
  get overfull(): boolean {
    return this.dirtyUsers >= this.config.flushMaxUsers;
  }

  /**
   * Solves and sends every changed state, then waits until Redis confirmed them; when the
   * promise resolves, Redis holds every event applied before the call. Sending blocks (the
   * solves and the encoding run on this thread), but the wait does not: batches applied
   * meanwhile go to the held states and into the next flush. One flush is in flight at a time;
   * a call made while one is queues behind it.
   */
  flush(): Promise<FlushOutcome> {
    const previous = this.flushing ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.flushOnce());
    this.flushing = run;
    return run;
  }

  /** Drops every held state (after a rebalance, the partitions held may have moved). */
  clear(): Promise<void> {
    return this.locked(async () => {
      this.dropAll();
      this.dirtyUsers = 0;
    });
  }

  /** Runs `work` after every change queued before it; none of them overlap. */
  private locked<T>(work: () => Promise<T>): Promise<T> {
    const run = this.exclusive.then(work, work);
    this.exclusive = run.catch(() => undefined);
    return run;
  }

  private async flushOnce(): Promise<FlushOutcome> {
    this.flushInFlight = true;
    try {
      const sent = await this.locked(() => this.send(this.takeDirty()));
      if (sent.states.size === 0) {
        await this.locked(async () => this.release(sent.heldBatches));
        return { users: 0, applied: 0 };
      }

      const outcome = await this.awaitOutcome(sent);
      return await this.locked(async () => {
        const startedMs = performance.now();
        const confirmed = await this.confirm(sent, outcome);
        const busyMs = sent.busyMs + (performance.now() - startedMs);
        const users = sent.states.size;
        if (users >= MIN_USERS_MEASURED) this.flushBusyMsPerUser = busyMs / users;
        return confirmed;
      });
    } finally {
      this.flushInFlight = false;
    }
  }

  private takeDirty(): Map<string, Entry> {
    this.lastFlushMs = performance.now();
    const dirty = new Map<string, Entry>();
    for (const [user, entry] of this.entries) if (entry.dirty) dirty.set(user, entry);
    return dirty;
  }

  /**
   * Solves the duals and encodes and sends every given state, all before it resolves, so the
   * states may change again at once. They count as clean from here; a failed write marks them
   * changed again.
   */
  private async send(entries: Map<string, Entry>): Promise<SentWrite> {
    const startedMs = performance.now();
    const states = new Map<string, SentState>();
    const heldBatches = this.held.length;
    if (entries.size === 0) {
      return { states, outcome: Promise.resolve(NO_WRITES), startedMs, busyMs: 0, heldBatches };
    }

    await this.solveDuals(entries);
    for (const [user, entry] of entries) {
      const { revision } = entry.state;
      states.set(user, {
        entry,
        revision,
        events: entry.unconfirmed,
        applied: entry.applied,
      });
      entry.dirty = false;
    }
    this.dirtyUsers -= entries.size;

    const toWrite = new Map([...entries].map(([user, entry]) => [user, entry.state]));
    const writing = this.store.startWrites(toWrite, this.layout());
    // Under the lock: no state changes before it is encoded (a large flush's last chunks wait
    // for its first ones to be answered).
    await writing.sent;
    const busyMs = performance.now() - startedMs;
    return { states, outcome: writing.outcome, startedMs, busyMs, heldBatches };
  }

  /** A write that failed leaves its states changed, to go out with the next flush. */
  private async awaitOutcome(sent: SentWrite): Promise<WriteOutcome> {
    try {
      const outcome = await sent.outcome;
      this.metrics.redisWriteSeconds.observe((performance.now() - sent.startedMs) / 1_000);
      return outcome;
    } catch (err) {
      this.metrics.flushFailures.inc();
      await this.locked(async () => {
        for (const { entry } of sent.states.values()) this.markDirty(entry);
      });
      throw err;
    }
  }

  /**
   * Marks what Redis confirmed; states whose write lost a race are read again, their
   * unconfirmed events applied again (those already in the newer state are skipped by their
   * offsets), and written again before the flush counts as done.
   */
  private async confirm(sent: SentWrite, first: WriteOutcome): Promise<FlushOutcome> {
    let outcome = first;
    let pending = sent;
    let applied = 0;
    for (let attempt = 1; ; attempt++) {
      applied += this.markWritten(pending, outcome.written);
      if (outcome.conflicts.length === 0) break;
      this.metrics.stateConflicts.inc(outcome.conflicts.length);
      if (attempt >= MAX_WRITE_ATTEMPTS) throw this.conflictError(pending, outcome.conflicts);

      const conflicting = await this.reapply(pending, outcome.conflicts);
      pending = await this.send(conflicting);
      outcome = await pending.outcome;
    }

    this.release(sent.heldBatches);
    this.evictClean();
    this.metrics.eventsApplied.inc(applied);
    return { users: sent.states.size, applied };
  }

  private markWritten(sent: SentWrite, users: readonly string[]): number {
    let applied = 0;
    for (const user of users) {
      const { entry, revision, events, applied: appliedInWrite } = sent.states.get(user)!;
      entry.state.revision = revision + 1;
      entry.unconfirmed -= events;
      applied += appliedInWrite;
      entry.applied -= appliedInWrite;
    }
    return applied;
  }

  /**
   * Redis holds every event of the oldest `count` held batches (a flush sent after them is
   * confirmed): each one counts in the freshness histogram, and the batches are let go.
   */
  private release(count: number): void {
    const nowMs = Date.now();
    const released = this.held.splice(0, count);
    for (const { columns } of released) {
      for (const ts of columns.ts) {
        this.metrics.freshnessSeconds.observe(Math.max(0, nowMs - ts) / 1_000);
      }
    }
  }

  private conflictError(sent: SentWrite, users: readonly string[]): AffinityError {
    for (const user of users) this.markDirty(sent.states.get(user)!.entry);
    return new AffinityError('STATE_CONFLICT', `users still conflicting: ${users.join(', ')}`, {
      retriable: true,
    });
  }

  private async applyNow(batch: HeldBatch): Promise<void> {
    const { partition } = batch;
    const held = await this.hold(batch.columns.userNames);
    const layout = this.layout();
    // Each of the batch's items once (the columns name each once), then the waiting ones.
    const items = [...batch.columns.itemNames];
    addWaitingItems(items, held);
    const { embeddings, names, resolve } = await this.cache.resolveList(items);
    const context = this.updateContext(layout, resolve);
    const columns = withHeldNames(batch.columns, held, names);
    const ofCodes = columns.itemNames.map((_, code) => embeddings[code] ?? null);
    const indices = indicesByUser(columns);

    // The events as objects only from here, with no wait left: they die young (see HeldBatch).
    held.forEach((entry, code) => {
      const own = indices[code]!.map((i) =>
        eventAt(columns, i, partition, this.typeNames, ofCodes),
      );
      const result = applyEvents(entry.state, own, context);
      this.countApply(result);
      entry.unconfirmed += own.length;
      entry.applied += result.applied;
      if (result.applied > 0 || result.pendingFolded > 0) this.markDirty(entry);
    });
    if (columns.users.length > 0) this.held.push({ columns, partition });
  }

  /**
   * The entries of `users` (a batch's, by user code), reading in one round trip those not held
   * yet, and the catalogue's version with them when it was not checked lately.
   */
  private async hold(users: readonly string[]): Promise<Entry[]> {
    const held = users.map((user) => this.entries.get(user));
    const checkedMs = performance.now();
    const complete = !held.includes(undefined);
    if (complete && checkedMs - this.lastCatalogueCheckMs < CATALOGUE_CHECK_MS) {
      return held as Entry[];
    }

    const missing = users.filter((_, code) => held[code] === undefined);
    const { raw, catalogVersion } = await this.store.readRaw(missing);
    this.lastCatalogueCheckMs = checkedMs;
    await this.cache.sync(catalogVersion);
    // A new dimension dropped every held state: read them all again.
    if (this.checkDimension()) return this.hold(users);

    const layout = this.layout();
    users.forEach((user, code) => {
      if (held[code]) return;
      const state = this.decode(user, raw.get(user)!, layout);
      const entry: Entry = { user, state, unconfirmed: 0, applied: 0, dirty: false };
      this.entries.set(user, entry);
      held[code] = entry;
    });
    return held as Entry[];
  }

  /**
   * A new catalogue dimension makes every held state unreadable: start from Redis again.
   * Returns whether the held states were dropped.
   */
  private checkDimension(): boolean {
    const dim = this.cache.meta?.dim ?? -1;
    if (dim === this.layoutDim) return false;
    const unconfirmed = [...this.entries.values()].some((entry) => entry.unconfirmed > 0);
    if (unconfirmed) {
      throw new AffinityError('CATALOGUE_MISMATCH', 'catalogue dimension changed mid-flush', {
        retriable: true,
      });
    }
    const dropped = this.entries.size > 0;
    this.dropAll();
    this.layoutDim = dim;
    this.arena = this.newArena(dim);
    return dropped;
  }

  /**
   * Re-reads the users whose write lost a race and applies their events of the held batches
   * again: every event applied to them since their last confirmed write is there (and perhaps
   * older ones, which the newer state's offsets skip like the rest it already holds). The items
   * looked up are those events' and those the newer states wait for, as in applyNow, so that a
   * waiting event whose embedding has arrived is folded in here too.
   */
  private async reapply(sent: SentWrite, users: readonly string[]): Promise<Map<string, Entry>> {
    const { raw } = await this.store.readRaw(users);
    const layout = this.layout();
    const entries = new Map(users.map((user) => [user, sent.states.get(user)!.entry]));
    for (const [user, entry] of entries) {
      this.arena?.release(entry.state.aggregates.sums);
      entry.state = this.decode(user, raw.get(user)!, layout);
    }
    const byUser = this.heldEventsOf(users);
    const items = [...byUser.values()].flat().map(({ event }) => event.item);
    addWaitingItems(items, [...entries.values()]);
    const embedding = await this.cache.resolver(items);
    const context = this.updateContext(layout, embedding);

    for (const [user, entry] of entries) {
      const own = byUser.get(user)!;
      entry.unconfirmed = own.length;
      entry.applied = applyEvents(entry.state, own, context).applied;
      if (entry.dirty) this.dirtyUsers--;
      entry.dirty = true;
      this.dirtyUsers++;
    }
    return entries;
  }

  /** The held batches' events of each of `users`, in the order they were applied. */
  private heldEventsOf(users: readonly string[]): Map<string, SequencedEvent[]> {
    const byUser = new Map(users.map((user) => [user, [] as SequencedEvent[]]));
    for (const { columns, partition } of this.held) {
      columns.users.forEach((code, i) => {
        byUser.get(columns.userNames[code]!)?.push(eventAt(columns, i, partition, this.typeNames));
      });
    }
    return byUser;
  }

  /** Re-solves the dual vector of every given state, once each however many events it had. */
  private async solveDuals(entries: Map<string, Entry>): Promise<void> {
    const gramian = this.cache.currentGramian;
    if (!this.config.dual.enabled || !gramian) return;

    const embeddings = await this.cache.lookup(historyItems(entries));
    const context = {
      params: this.config.dual,
      halfLifeMs: this.config.dual.halfLifeMs,
      solver: this.solverFor(gramian),
      signals: this.config.signals,
      embedding: (item: string) => embeddings.get(item),
    };
    for (const [user, entry] of entries) this.solveDual(user, entry.state, context);
  }

  /**
   * One user's solve. A solve that throws (a history the solver refuses) keeps the user's
   * previous vector: one user's dual must not stop the stream for everyone.
   */
  private solveDual(user: string, state: UserState, context: DualContext): void {
    const started = performance.now();
    let solution: DualSolution;
    try {
      solution = refreshDual(state, context);
    } catch (err) {
      this.metrics.dualFailures.inc();
      this.logger.error({ err, user }, 'dual solve failed; the previous vector is kept');
      return;
    }
    this.metrics.dualSolveSeconds.observe((performance.now() - started) / 1_000);
    this.metrics.dualSolves.inc();
    this.metrics.dualIterations.observe(solution.iterations);
    this.metrics.dualResidual.observe(solution.relativeResidual);
  }

  /**
   * The solver follows the cache's Gramian, which is a new object only when the catalogue
   * changed: small changes ride on the old eigenbasis as low-rank corrections, large ones
   * re-decompose (about a second at d = 384; it blocks this worker meanwhile).
   */
  private solverFor(gramian: Gramian): DualSolver {
    if (this.dualSolver?.gramian === gramian) return this.dualSolver;
    const started = performance.now();
    const previous = this.dualSolver;
    this.dualSolver =
      previous?.dim === gramian.dim ? previous.withGramian(gramian) : DualSolver.create(gramian);
    const elapsedMs = Math.round(performance.now() - started);
    const correctionRank = this.dualSolver.correctionRank;
    this.logger.info(
      { dim: gramian.dim, correctionRank, elapsedMs },
      'dual solver follows the catalogue',
    );
    return this.dualSolver;
  }

  /** Keeps at most AFFINITY_STATE_CACHE_USERS states, dropping the longest-held clean ones. */
  private evictClean(): void {
    let excess = this.entries.size - this.config.stateCacheUsers;
    for (const [user, entry] of this.entries) {
      if (excess <= 0) return;
      if (entry.dirty || entry.unconfirmed > 0) continue;
      this.entries.delete(user);
      this.arena?.release(entry.state.aggregates.sums);
      excess--;
    }
  }

  private markDirty(entry: Entry): void {
    if (entry.dirty) return;
    entry.dirty = true;
    this.dirtyUsers++;
  }

  /** A state that cannot be read (older format, other dimension) restarts empty, loudly. */
  private decode(user: string, fields: StateFields, layout: AggregateLayout): UserState {
    try {
      return decodeUserState(fields, layout);
    } catch (err) {
      if (!(err instanceof AffinityError) || err.code !== 'STATE_CORRUPT') throw err;
      this.logger.error({ err, user }, 'unreadable user state replaced by an empty one');
      this.metrics.stateResets.inc();
      const state = emptyUserState(layout);
      state.revision = Number(fields['rev']?.toString() ?? 0);
      return state;
    }
  }

  /** Forgets every held state and batch, and gives the states' sums back to the arena. */
  private dropAll(): void {
    for (const entry of this.entries.values()) this.arena?.release(entry.state.aggregates.sums);
    this.entries.clear();
    this.held = [];
  }

  /** Room for every state the buffer may hold: the cache's and a flush's worth of changed ones. */
  private newArena(dim: number): RowArena | null {
    if (dim <= 0) return null;
    const slotFloats = slotCount({ dim, halfLivesMs: this.config.halfLivesMs }) * dim;
    const slots = Math.min(
      this.config.stateCacheUsers + this.config.flushMaxUsers,
      Math.floor(MAX_ARENA_BYTES / (4 * slotFloats)),
    );
    return RowArena.create(dim, slotFloats, slots);
  }

  private layout(): AggregateLayout {
    const meta = this.cache.meta;
    if (!meta) {
      throw new AffinityError('CATALOGUE_MISSING', 'no item catalogue in Redis yet', {
        retriable: true,
      });
    }
    return { dim: meta.dim, halfLivesMs: this.config.halfLivesMs, arena: this.arena };
  }

  private updateContext(
    layout: AggregateLayout,
    embedding: (item: string) => Float32Array | undefined,
  ): UpdateContext {
    return {
      signals: this.config.signals,
      layout,
      historyMaxEvents: this.config.historyMaxEvents,
      pendingMaxEvents: this.config.pendingMaxEvents,
      embedding,
    };
  }

  private countApply(result: ApplyResult): void {
    const { eventsDuplicate, eventsPending } = this.metrics;
    if (result.duplicates > 0) eventsDuplicate.inc(result.duplicates);
    if (result.pendingAdded > 0) eventsPending.inc({ outcome: 'added' }, result.pendingAdded);
    if (result.pendingFolded > 0) eventsPending.inc({ outcome: 'folded' }, result.pendingFolded);
    if (result.pendingDropped > 0) {
      eventsPending.inc({ outcome: 'dropped' }, result.pendingDropped);
      this.logger.warn({ dropped: result.pendingDropped }, 'events waiting for embeddings dropped');
    }
  }
}

/**
 * AFFINITY_FLUSH_INTERVAL, stretched before a costly flush so that flushes keep this thread
 * busy for at most AFFINITY_FLUSH_TIME_SHARE of its time (`flushBusyMs`, the flush about to be
 * made: its changed users times a flush's busy time per user, flushBusyMsPerUser; busy is
 * solving, encoding, sending and taking in the replies, while Redis's own work overlaps the
 * next batches and is not counted). A flush costs one write (and one dual solve) per changed
 * user, however many events the user had: when the worker catches up on a backlog, every flush
 * finds most users changed, and flushing on the plain interval would spend the time writing
 * the same users again. Freshness is then bounded by the backlog, not by the interval. Capped
 * at half the Kafka session timeout. Once the backlog is read (`caughtUp`), the plain interval
 * applies again: otherwise the last events of a backlog would wait for the stretched interval,
 * seconds after there was nothing left to read.
 */
export function flushIntervalAfter(
  flushBusyMs: number,
  config: Pick<Config, 'flushIntervalMs' | 'flushTimeShare' | 'kafkaSessionTimeoutMs'>,
  caughtUp = false,
): number {
  if (caughtUp) return config.flushIntervalMs;
  const share = config.flushTimeShare;
  const stretchedMs = (flushBusyMs * (1 - share)) / share;
  const capMs = config.kafkaSessionTimeoutMs / 2;
  return Math.min(Math.max(config.flushIntervalMs, stretchedMs), capMs);
}

/**
 * The batch's columns naming users and items by the strings the held entries and the
 * embedding cache keep. Those the main thread sent are copies made for this batch alone; kept
 * in histories and held batches, hundreds of thousands of them outlived the young generation
 * and made much of the engine's garbage collection (docs/benchmarks.md, round of 2026-12-04
 * 07:00).
 */
function withHeldNames(
  columns: EventColumns,
  held: readonly Entry[],
  items: readonly string[],
): EventColumns {
  const userNames = held.map((entry) => entry.user);
  return { ...columns, userNames, itemNames: items.slice(0, columns.itemNames.length) };
}

/** Where each user's events are in a batch, in order, by user code. */
function indicesByUser(columns: EventColumns): number[][] {
  const lists = columns.userNames.map((): number[] => []);
  columns.users.forEach((code, i) => lists[code]!.push(i));
  return lists;
}

/** Items of the held histories, the inputs of the dual solves. */
function historyItems(entries: Map<string, Entry>): Set<string> {
  const items = new Set<string>();
  for (const entry of entries.values()) for (const h of entry.state.history) items.add(h.item);
  return items;
}

/** Adds to a batch's items those of its users' waiting events. */
function addWaitingItems(items: string[], entries: readonly Entry[]): void {
  for (const entry of entries) for (const waiting of entry.state.pending) items.push(waiting.item);
}
