/**
 * The heart of the events worker, free of Kafka so that tests and benchmarks drive it directly:
 * one batch of valid events from one partition → users → states read in one round trip →
 * the shared pure update (method 1, then the dual solve once per user) → states and applied
 * offsets written atomically in one round trip. A write that lost a race (another consumer
 * wrote the user in between) is re-read and re-applied; events already in the state are
 * skipped by their offset, so nothing is applied twice.
 */
import { performance } from 'node:perf_hooks';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import type { AggregateLayout } from '../features/aggregate.js';
import type { EmbeddingCache } from '../items/cache.js';
import type { Logger } from '../ops/logger.js';
import type { WorkerMetrics } from '../ops/metrics.js';
import { refreshDual } from '../state/dual-step.js';
import type { UserStateStore } from '../state/store.js';
import type { StateFields } from '../state/codec.js';
import { decodeUserState } from '../state/codec.js';
import type { ApplyResult, SequencedEvent, UpdateContext, UserState } from '../state/user-state.js';
import { applyEvents, emptyUserState } from '../state/user-state.js';

export interface BatchOutcome {
  readonly users: number;
  readonly applied: number;
  readonly duplicates: number;
}

const MAX_WRITE_ATTEMPTS = 5;

export class BatchProcessor {
  constructor(
    private readonly config: Config,
    private readonly store: UserStateStore,
    private readonly cache: EmbeddingCache,
    private readonly metrics: WorkerMetrics,
    private readonly logger: Logger,
  ) {}

  async process(events: readonly SequencedEvent[]): Promise<BatchOutcome> {
    const byUser = groupByUser(events);
    const outcome = { users: byUser.size, applied: 0, duplicates: 0 };
    let users = [...byUser.keys()];

    for (let attempt = 1; users.length > 0; attempt++) {
      if (attempt > MAX_WRITE_ATTEMPTS) {
        throw new AffinityError('STATE_CONFLICT', `users still conflicting: ${users.join(', ')}`, {
          retriable: true,
        });
      }
      users = await this.attempt(users, byUser, outcome);
      if (users.length > 0) this.metrics.stateConflicts.inc(users.length);
    }

    this.observeFreshness(events);
    return outcome;
  }

  /** One read-apply-write round; returns the users whose write lost a race. */
  private async attempt(
    users: string[],
    byUser: Map<string, SequencedEvent[]>,
    outcome: { applied: number; duplicates: number },
  ): Promise<string[]> {
    const { raw, catalogVersion } = await this.store.readRaw(users);
    await this.cache.sync(catalogVersion);
    const layout = this.layout();
    const states = this.decode(raw, layout);
    const embeddings = await this.cache.lookup(neededItems(states, byUser));
    const context = this.updateContext(layout, embeddings);

    const results = new Map<string, ApplyResult>();
    for (const [user, state] of states) {
      const result = applyEvents(state, byUser.get(user)!, context);
      results.set(user, result);
      if (result.applied > 0 || result.pendingFolded > 0) this.solveDual(state, context);
    }

    const stopTimer = this.metrics.redisWriteSeconds.startTimer();
    const { written, conflicts } = await this.store.writeMany(states, layout);
    stopTimer();
    for (const user of written) {
      const result = results.get(user)!;
      outcome.applied += result.applied;
      outcome.duplicates += result.duplicates;
      this.countApply(result);
    }
    return conflicts;
  }

  /** A state that cannot be read (older format, other dimension) restarts empty, loudly. */
  private decode(raw: Map<string, StateFields>, layout: AggregateLayout): Map<string, UserState> {
    const states = new Map<string, UserState>();
    for (const [user, fields] of raw) {
      try {
        states.set(user, decodeUserState(fields, layout));
      } catch (err) {
        if (!(err instanceof AffinityError) || err.code !== 'STATE_CORRUPT') throw err;
        this.logger.error({ err, user }, 'unreadable user state replaced by an empty one');
        this.metrics.stateResets.inc();
        const state = emptyUserState(layout);
        state.revision = Number(fields['rev']?.toString() ?? 0);
        states.set(user, state);
      }
    }
    return states;
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

  private solveDual(state: UserState, context: UpdateContext): void {
    const gramian = this.cache.currentGramian;
    if (!this.config.dual.enabled || !gramian) return;

    const started = performance.now();
    const solution = refreshDual(state, {
      params: this.config.dual,
      halfLifeMs: this.config.dual.halfLifeMs,
      gramian,
      signals: this.config.signals,
      embedding: context.embedding,
    });
    this.metrics.dualSolveSeconds.observe((performance.now() - started) / 1_000);
    this.metrics.dualSolves.inc();
    this.metrics.dualIterations.observe(solution.iterations);
    this.metrics.dualResidual.observe(solution.relativeResidual);
  }

  private countApply(result: ApplyResult): void {
    if (result.duplicates > 0) this.metrics.eventsDuplicate.inc(result.duplicates);
    if (result.pendingAdded > 0)
      this.metrics.eventsPending.inc({ outcome: 'added' }, result.pendingAdded);
    if (result.pendingFolded > 0)
      this.metrics.eventsPending.inc({ outcome: 'folded' }, result.pendingFolded);
    if (result.pendingDropped > 0) {
      this.metrics.eventsPending.inc({ outcome: 'dropped' }, result.pendingDropped);
      this.logger.warn({ dropped: result.pendingDropped }, 'events waiting for embeddings dropped');
    }
  }

  private observeFreshness(events: readonly SequencedEvent[]): void {
    const nowMs = Date.now();
    for (const { event } of events)
      this.metrics.freshnessSeconds.observe(Math.max(0, nowMs - event.ts) / 1_000);
  }
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

/** Items of the new events, of the waiting events and of the history (for the dual solve). */
function neededItems(
  states: Map<string, UserState>,
  byUser: Map<string, SequencedEvent[]>,
): Set<string> {
  const items = new Set<string>();
  for (const [user, state] of states) {
    for (const { event } of byUser.get(user) ?? []) items.add(event.item);
    for (const entry of state.pending) items.add(entry.item);
    for (const entry of state.history) items.add(entry.item);
  }
  return items;
}
