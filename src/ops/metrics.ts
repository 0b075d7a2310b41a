/**
 * Every Prometheus metric of the service, created once on a registry the caller owns. Each is
 * listed in docs/metrics.md; names are snake_case and end with their unit.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CountedHistogram } from './counted-histogram.js';

const BATCH_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const FRESHNESS_BUCKETS_S = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600];
const SOLVE_BUCKETS_S = [1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2];
const RESIDUAL_BUCKETS = [1e-12, 1e-10, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1];
const ITERATION_BUCKETS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256];

export class WorkerMetrics {
  readonly eventsConsumed: Counter<'topic'>;
  readonly eventsApplied: Counter;
  readonly eventsDuplicate: Counter;
  readonly eventsDeadLettered: Counter<'reason'>;
  readonly eventsPending: Counter<'outcome'>;
  readonly batchSeconds: Histogram;
  readonly freshnessSeconds: CountedHistogram;
  readonly redisWriteSeconds: CountedHistogram;
  readonly stateConflicts: Counter;
  readonly stateResets: Counter;
  readonly consumerLag: Gauge<'topic' | 'partition'>;
  readonly cacheHits: Counter;
  readonly cacheMisses: Counter;
  readonly itemChanges: Counter<'outcome'>;
  readonly dualSolves: Counter;
  readonly dualFailures: Counter;
  readonly dualIterations: CountedHistogram;
  readonly dualResidual: CountedHistogram;
  readonly dualSolveSeconds: CountedHistogram;
  readonly batchRetries: Counter;
  readonly flushFailures: Counter;

  constructor(readonly registry: Registry) {
    this.eventsConsumed = new Counter({
      name: 'affinity_events_consumed_total',
      help: 'Messages read from the events topic',
      labelNames: ['topic'],
      registers: [registry],
    });
    this.eventsApplied = counter(
      registry,
      'affinity_events_applied_total',
      'Events applied to user state',
    );
    this.eventsDuplicate = counter(
      registry,
      'affinity_events_duplicate_total',
      'Events skipped because their offset or producer id was already applied',
    );
    this.eventsDeadLettered = new Counter({
      name: 'affinity_events_dead_lettered_total',
      help: 'Messages sent to the dead-letter topic, by reason',
      labelNames: ['reason'],
      registers: [registry],
    });
    this.eventsPending = new Counter({
      name: 'affinity_events_pending_total',
      help: 'Events whose item had no embedding: added (waiting), folded (embedding arrived), dropped',
      labelNames: ['outcome'],
      registers: [registry],
    });
    this.batchSeconds = histogram(
      registry,
      'affinity_batch_seconds',
      'Wall time per batch',
      BATCH_BUCKETS_S,
    );
    this.freshnessSeconds = countedHistogram(
      registry,
      'affinity_event_freshness_seconds',
      'From event time to its state being acknowledged by Redis',
      STATE_HISTOGRAM_BUCKETS.freshnessSeconds,
    );
    this.redisWriteSeconds = countedHistogram(
      registry,
      'affinity_redis_write_seconds',
      'Wall time of the atomic state write of one batch',
      STATE_HISTOGRAM_BUCKETS.redisWriteSeconds,
    );
    this.stateConflicts = counter(
      registry,
      'affinity_state_conflicts_total',
      'User writes retried because the state changed between read and write',
    );
    this.stateResets = counter(
      registry,
      'affinity_state_resets_total',
      'User states that could not be decoded (old format, other dimension) and restarted empty',
    );
    this.consumerLag = new Gauge({
      name: 'affinity_consumer_lag_messages',
      help: 'Messages between the last consumed offset and the partition high watermark',
      labelNames: ['topic', 'partition'],
      registers: [registry],
    });
    this.cacheHits = counter(
      registry,
      'affinity_embedding_cache_hits_total',
      'Embedding lookups served in process',
    );
    this.cacheMisses = counter(
      registry,
      'affinity_embedding_cache_misses_total',
      'Embedding lookups that went to Redis',
    );
    this.itemChanges = new Counter({
      name: 'affinity_item_changes_total',
      help: 'Messages of the item-embeddings topic: applied or rejected',
      labelNames: ['outcome'],
      registers: [registry],
    });
    this.dualSolves = counter(registry, 'affinity_dual_solves_total', 'Dual vectors solved');
    this.dualFailures = counter(
      registry,
      'affinity_dual_failures_total',
      'Dual solves that threw; the user keeps the previous vector',
    );
    this.dualIterations = countedHistogram(
      registry,
      'affinity_dual_iterations',
      'Conjugate-gradient iterations per dual solve',
      STATE_HISTOGRAM_BUCKETS.dualIterations,
    );
    this.dualResidual = countedHistogram(
      registry,
      'affinity_dual_relative_residual',
      'Final relative residual |b - Au| / |b| of each dual solve',
      STATE_HISTOGRAM_BUCKETS.dualResidual,
    );
    this.dualSolveSeconds = countedHistogram(
      registry,
      'affinity_dual_solve_seconds',
      'Wall time per dual solve',
      STATE_HISTOGRAM_BUCKETS.dualSolveSeconds,
    );
    this.batchRetries = counter(
      registry,
      'affinity_batch_retries_total',
      'Batches tried again after a passing failure (Redis unreachable, no catalogue yet)',
    );
    this.flushFailures = counter(
      registry,
      'affinity_flush_failures_total',
      'Flushes whose writes failed; their states go out with the next flush',
    );
  }
}

/** The counting side of a prom-client Counter, which the engine thread's recorder also has. */
export interface CounterLike<L extends string = string> {
  inc(value?: number): void;
  inc(labels: Partial<Record<L, string | number>>, value?: number): void;
}

export interface HistogramLike {
  observe(value: number): void;
}

/**
 * What the state path (StateBuffer, the embedding cache) records. It runs on the engine
 * thread, whose recorder ships these to the main thread's WorkerMetrics (workers/engine-link).
 */
export interface StateMetrics {
  readonly eventsApplied: CounterLike;
  readonly eventsDuplicate: CounterLike;
  readonly eventsPending: CounterLike<'outcome'>;
  readonly stateConflicts: CounterLike;
  readonly stateResets: CounterLike;
  readonly cacheHits: CounterLike;
  readonly cacheMisses: CounterLike;
  readonly dualSolves: CounterLike;
  readonly dualFailures: CounterLike;
  readonly batchRetries: CounterLike;
  readonly flushFailures: CounterLike;
  readonly freshnessSeconds: HistogramLike;
  readonly redisWriteSeconds: HistogramLike;
  readonly dualIterations: HistogramLike;
  readonly dualResidual: HistogramLike;
  readonly dualSolveSeconds: HistogramLike;
}

export const STATE_COUNTERS = [
  'eventsApplied',
  'eventsDuplicate',
  'eventsPending',
  'stateConflicts',
  'stateResets',
  'cacheHits',
  'cacheMisses',
  'dualSolves',
  'dualFailures',
  'batchRetries',
  'flushFailures',
] as const;

export const STATE_HISTOGRAMS = [
  'freshnessSeconds',
  'redisWriteSeconds',
  'dualIterations',
  'dualResidual',
  'dualSolveSeconds',
] as const;

/**
 * The buckets of the state path's histograms, which the engine thread's recorder counts into
 * before it ships them (workers/engine-link.ts, MetricRecorder).
 */
export const STATE_HISTOGRAM_BUCKETS: Readonly<
  Record<(typeof STATE_HISTOGRAMS)[number], readonly number[]>
> = {
  freshnessSeconds: FRESHNESS_BUCKETS_S,
  redisWriteSeconds: BATCH_BUCKETS_S,
  dualIterations: ITERATION_BUCKETS,
  dualResidual: RESIDUAL_BUCKETS,
  dualSolveSeconds: SOLVE_BUCKETS_S,
};

export function createRegistry(withProcessMetrics: boolean): Registry {
  const registry = new Registry();
  if (withProcessMetrics) collectDefaultMetrics({ register: registry });
  return registry;
}

function counter(registry: Registry, name: string, help: string): Counter {
  return new Counter({ name, help, registers: [registry] });
}

function histogram(registry: Registry, name: string, help: string, buckets: number[]): Histogram {
  return new Histogram({ name, help, buckets, registers: [registry] });
}

function countedHistogram(
  registry: Registry,
  name: string,
  help: string,
  buckets: readonly number[],
): CountedHistogram {
  return new CountedHistogram({ name, help, buckets, registers: [registry] });
}
