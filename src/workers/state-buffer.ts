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
 * the newer state are skipped by their offsets, so nothing is applied twice.
 */
import { performance } from 'node:perf_hooks';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import type { AggregateLayout } from '../features/aggregate.js';
import type { EmbeddingCache } from '../items/cache.js';
import type { Logger } from '../ops/logger.js';
import type { WorkerMetrics } from '../ops/metrics.js';
import type { StateFields } from '../state/codec.js';
import { decodeUserState } from '../state/codec.js';
import { DualSolver } from '../features/dual-solver.js';
import type { Gramian } from '../features/gramian.js';
import { refreshDual } from '../state/dual-step.js';
import type { UserStateStore } from '../state/store.js';
import type { ApplyResult, SequencedEvent, UpdateContext, UserState } from '../state/user-state.js';
import { applyEvents, emptyUserState } from '../state/user-state.js';

export interface FlushOutcome {
  readonly users: number;
  readonly applied: number;
}

interface Entry {
  state: UserState;
  /** Events applied since the last flush, kept to re-apply after a lost race. */
  buffered: SequencedEvent[];
  /** Of those, how many changed the state (the rest were duplicates). */
  applied: number;
  dirty: boolean;
}

const MAX_WRITE_ATTEMPTS = 5;

export class StateBuffer {
  private readonly entries = new Map<string, Entry>();
  private dirtyUsers = 0;
  private lastFlushMs = performance.now();
  private lastFlushDurationMs = 0;
  private layoutDim = -1;
  /** Method 2's solver for the current catalogue Gramian (its eigenbasis is costly to build). */
  private dualSolver: DualSolver | null = null;

  constructor(
    private readonly config: Config,
    private readonly store: UserStateStore,
    private readonly cache: EmbeddingCache,
    private readonly metrics: WorkerMetrics,
    private readonly logger: Logger,
  ) {}

  /** Applies a batch to the held states, reading the missing ones in one round trip. */
  async apply(events: readonly SequencedEvent[]): Promise<void> {
    const byUser = groupByUser(events);
    await this.hold([...byUser.keys()]);
    const layout = this.layout();
    const embeddings = await this.cache.lookup(itemsOfBatch(byUser, this.entries));
    const context = this.updateContext(layout, embeddings);

    for (const [user, own] of byUser) {
      const entry = this.entries.get(user)!;
      const result = applyEvents(entry.state, own, context);
      this.countApply(result);
      entry.buffered.push(...own);
      entry.applied += result.applied;
      if (result.applied > 0 || result.pendingFolded > 0) this.markDirty(entry);
    }
  }

  /**
   * Whether a flush is due: the interval has passed since the last one while something waits
   * (changed states, or offsets of batches that changed nothing), or too many users wait.
   */
  flushDue(uncommittedOffsets: boolean): boolean {
    if (this.dirtyUsers >= this.config.flushMaxUsers) return true;
    if (this.dirtyUsers === 0 && !uncommittedOffsets) return false;
    return performance.now() - this.lastFlushMs >= this.flushIntervalMs();
  }

  private flushIntervalMs(): number {
    return flushIntervalAfter(this.lastFlushDurationMs, this.config);
  }

  get pendingUsers(): number {
    return this.dirtyUsers;
  }

  /** Solves and writes every changed state; after it resolves, Redis holds all applied events. */
  async flush(): Promise<FlushOutcome> {
    const startedMs = performance.now();
    this.lastFlushMs = startedMs;
    const dirty = [...this.entries].filter(([, entry]) => entry.dirty);
    if (dirty.length === 0) {
      this.lastFlushDurationMs = 0;
      return { users: 0, applied: 0 };
    }

    let pending = new Map(dirty);
    let applied = 0;
    for (let attempt = 1; pending.size > 0; attempt++) {
      if (attempt > MAX_WRITE_ATTEMPTS) {
        const users = [...pending.keys()].join(', ');
        throw new AffinityError('STATE_CONFLICT', `users still conflicting: ${users}`, {
          retriable: true,
        });
      }
      const { written, conflicts } = await this.writeOnce(pending);
      applied += written;
      pending = conflicts.size > 0 ? await this.reapply(conflicts) : conflicts;
    }

    this.afterFlush(dirty);
    this.evictClean();
    this.lastFlushDurationMs = performance.now() - startedMs;
    return { users: dirty.length, applied };
  }

  /** Drops every held state (after a rebalance, the partitions held may have moved). */
  clear(): void {
    this.entries.clear();
    this.dirtyUsers = 0;
  }

  private async hold(users: string[]): Promise<void> {
    const missing = users.filter((user) => !this.entries.has(user));
    const { raw, catalogVersion } = await this.store.readRaw(missing);
    await this.cache.sync(catalogVersion);
    this.checkDimension();

    const layout = this.layout();
    for (const [user, fields] of raw) {
      const state = this.decode(user, fields, layout);
      this.entries.set(user, { state, buffered: [], applied: 0, dirty: false });
    }
  }

  /** A new catalogue dimension makes every held state unreadable: start from Redis again. */
  private checkDimension(): void {
    const dim = this.cache.meta?.dim ?? -1;
    if (dim === this.layoutDim) return;
    if (this.dirtyUsers > 0) {
      throw new AffinityError('CATALOGUE_MISMATCH', 'catalogue dimension changed mid-flush', {
        retriable: true,
      });
    }
    this.entries.clear();
    this.layoutDim = dim;
  }

  private async writeOnce(pending: Map<string, Entry>) {
    this.solveDuals(pending, await this.historyEmbeddings(pending));
    const states = new Map([...pending].map(([user, entry]) => [user, entry.state]));

    const stopTimer = this.metrics.redisWriteSeconds.startTimer();
    const outcome = await this.store.writeMany(states, this.layout());
    stopTimer();

    let written = 0;
    for (const user of outcome.written) written += pending.get(user)!.applied;
    const conflicts = new Map(outcome.conflicts.map((user) => [user, pending.get(user)!]));
    if (conflicts.size > 0) this.metrics.stateConflicts.inc(conflicts.size);
    return { written, conflicts };
  }

  /** Re-reads the users whose write lost a race and applies their buffered events again. */
  private async reapply(conflicts: Map<string, Entry>): Promise<Map<string, Entry>> {
    const { raw } = await this.store.readRaw([...conflicts.keys()]);
    const layout = this.layout();
    const byUser = new Map([...conflicts].map(([user, entry]) => [user, entry.buffered]));
    const embeddings = await this.cache.lookup(itemsOfBatch(byUser, new Map()));
    const context = this.updateContext(layout, embeddings);

    for (const [user, entry] of conflicts) {
      entry.state = this.decode(user, raw.get(user)!, layout);
      entry.applied = applyEvents(entry.state, entry.buffered, context).applied;
    }
    return conflicts;
  }

  private async historyEmbeddings(pending: Map<string, Entry>) {
    if (!this.config.dual.enabled || !this.cache.currentGramian)
      return new Map<string, Float32Array>();
    const items = new Set<string>();
    for (const entry of pending.values()) for (const h of entry.state.history) items.add(h.item);
    return this.cache.lookup(items);
  }

  private solveDuals(pending: Map<string, Entry>, embeddings: Map<string, Float32Array>): void {
    const gramian = this.cache.currentGramian;
    if (!this.config.dual.enabled || !gramian) return;

    const context = {
      params: this.config.dual,
      halfLifeMs: this.config.dual.halfLifeMs,
      solver: this.solverFor(gramian),
      signals: this.config.signals,
      embedding: (item: string) => embeddings.get(item),
    };
    for (const entry of pending.values()) {
      const started = performance.now();
      const solution = refreshDual(entry.state, context);
      this.metrics.dualSolveSeconds.observe((performance.now() - started) / 1_000);
      this.metrics.dualSolves.inc();
      this.metrics.dualIterations.observe(solution.iterations);
      this.metrics.dualResidual.observe(solution.relativeResidual);
    }
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

  private afterFlush(flushed: [string, Entry][]): void {
    const nowMs = Date.now();
    let applied = 0;
    for (const [, entry] of flushed) {
      for (const { event } of entry.buffered) {
        this.metrics.freshnessSeconds.observe(Math.max(0, nowMs - event.ts) / 1_000);
      }
      applied += entry.applied;
      entry.buffered = [];
      entry.applied = 0;
      entry.dirty = false;
    }
    this.dirtyUsers = 0;
    this.metrics.eventsApplied.inc(applied);
  }

  /** Keeps at most AFFINITY_STATE_CACHE_USERS states, dropping the longest-held clean ones. */
  private evictClean(): void {
    let excess = this.entries.size - this.config.stateCacheUsers;
    for (const [user, entry] of this.entries) {
      if (excess <= 0) return;
      if (entry.dirty) continue;
      this.entries.delete(user);
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

  private layout(): AggregateLayout {
    const meta = this.cache.meta;
    if (!meta) {
      throw new AffinityError('CATALOGUE_MISSING', 'no item catalogue in Redis yet', {
        retriable: true,
      });
    }
    return { dim: meta.dim, halfLivesMs: this.config.halfLivesMs };
  }

  private updateContext(
    layout: AggregateLayout,
    embeddings: Map<string, Float32Array>,
  ): UpdateContext {
    return {
      signals: this.config.signals,
      layout,
      historyMaxEvents: this.config.historyMaxEvents,
      pendingMaxEvents: this.config.pendingMaxEvents,
      embedding: (item) => embeddings.get(item),
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
 * AFFINITY_FLUSH_INTERVAL, stretched after a slow flush so that flushes take at most
 * AFFINITY_FLUSH_TIME_SHARE of the worker's time. A flush costs one write (and one dual solve)
 * per changed user, however many events the user had: when the worker catches up on a backlog,
 * every flush finds most users changed, and flushing on the plain interval would spend the time
 * writing the same users again. Freshness is then bounded by the backlog, not by the interval.
 * Capped at half the Kafka session timeout.
 */
export function flushIntervalAfter(
  lastFlushDurationMs: number,
  config: Pick<Config, 'flushIntervalMs' | 'flushTimeShare' | 'kafkaSessionTimeoutMs'>,
): number {
  const share = config.flushTimeShare;
  const stretchedMs = (lastFlushDurationMs * (1 - share)) / share;
  const capMs = config.kafkaSessionTimeoutMs / 2;
  return Math.min(Math.max(config.flushIntervalMs, stretchedMs), capMs);
}

function groupByUser(events: readonly SequencedEvent[]): Map<string, SequencedEvent[]> {
  const byUser = new Map<string, SequencedEvent[]>();
  for (const sequenced of events) {
    const list = byUser.get(sequenced.event.user);
    if (list) list.push(sequenced);
    else byUser.set(sequenced.event.user, [sequenced]);
  }
  return byUser;
}

/** Items of the new events and of the users' waiting events. */
function itemsOfBatch(
  byUser: Map<string, readonly SequencedEvent[]>,
  entries: Map<string, Entry>,
): Set<string> {
  const items = new Set<string>();
  for (const [user, own] of byUser) {
    for (const { event } of own) items.add(event.item);
    for (const waiting of entries.get(user)?.state.pending ?? []) items.add(waiting.item);
  }
  return items;
}
