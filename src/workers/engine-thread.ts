/**
 * The events worker's engine thread (see workers/engine-link.ts for the split): it applies the
 * batches of decoded events the main thread hands over to the held user states, flushes them to
 * Redis, and reports each confirmed flush with the Kafka positions it covers. Batches are
 * applied one at a time in the order they came; a flush is sent between two batches and
 * confirmed while the next ones are applied, exactly as the single-threaded worker did.
 *
 * A batch that cannot be applied for a passing reason (Redis away, the catalogue not yet
 * there) is tried again here, with a growing pause, rather than handed back: the main thread
 * has already moved its fetch position past it, so giving up on it would skip it. Anything
 * else stops the engine, and the worker with it; the events after the last commit are then
 * replayed by the next start, and skipped where already applied.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { parentPort, workerData } from 'node:worker_threads';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import type { Config } from '../config/config.js';
import { EmbeddingCache } from '../items/cache.js';
import { ItemStore } from '../items/store.js';
import type { Logger } from '../ops/logger.js';
import { workerRedis } from '../ops/redis.js';
import { UserStateStore } from '../state/store.js';
import type { BatchMessage, FlushRequest, FromEngine, ToEngine } from './engine-link.js';
import { MetricRecorder, describeError, isPassing } from './engine-link.js';
import { StateBuffer } from './state-buffer.js';

export interface EngineData {
  readonly config: Config;
  readonly logLevel: string;
}

/**
 * Metrics go to the main thread with every message; when none is sent for this long (a batch
 * being retried through an outage), they go on their own.
 */
const METRICS_PUSH_MS = 1_000;
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5_000;

class Engine {
  private readonly redis: Redis;
  /** The state writes' own connection (see UserStateStore). */
  private readonly writer: Redis;
  private readonly buffer: StateBuffer;
  private readonly recorder = new MetricRecorder();
  private readonly logger: Logger;
  /** Next offset to commit per partition, once the states holding its events are flushed. */
  private readonly positions = new Map<number, string>();
  /** Partitions whose last batch did not reach the high watermark: a backlog is being read. */
  private readonly lagging = new Set<number>();
  /** Serialises batches, requested flushes and the stop. */
  private exclusive: Promise<unknown> = Promise.resolve();
  private flushTimer: NodeJS.Timeout | null = null;
  private metricsTimer: NodeJS.Timeout | null = null;
  private failed = false;
  private stopped = false;

  constructor(
    private readonly config: Config,
    logLevel: string,
    private readonly send: (message: FromEngine) => void,
  ) {
    this.logger = pino({ level: logLevel, base: null }, { write: (line) => this.log(line) });
    this.redis = workerRedis(config.redisUrl, 'engine reads', this.logger);
    this.writer = workerRedis(config.redisUrl, 'engine writes', this.logger);
    const itemStore = new ItemStore(this.redis, { prefix: config.keyPrefix });
    const metrics = this.recorder.metrics;
    const counters = {
      hit: (n: number) => metrics.cacheHits.inc(n),
      miss: (n: number) => metrics.cacheMisses.inc(n),
    };
    const cache = new EmbeddingCache(
      itemStore,
      config.embeddingCacheItems,
      counters,
      config.dual.enabled,
    );
    const store = new UserStateStore(
      this.redis,
      { prefix: config.keyPrefix },
      config.userIdleTtlMs,
      this.writer,
    );
    this.buffer = new StateBuffer(config, store, cache, metrics, this.logger);
  }

  async start(): Promise<void> {
    await Promise.all([this.redis.connect(), this.writer.connect()]);
    const tickMs = Math.max(10, Math.floor(this.config.flushIntervalMs / 2));
    this.flushTimer = setInterval(() => void this.flushOnTick(), tickMs);
    this.metricsTimer = setInterval(() => this.pushMetrics(), METRICS_PUSH_MS);
    this.send({ kind: 'ready', metrics: this.recorder.take() });
  }

  receive(message: ToEngine): void {
    if (this.failed && message.kind !== 'stop') return;
    if (message.kind === 'batch') void this.serially(() => this.applyBatch(message));
    else if (message.kind === 'flush') void this.serially(() => this.requestedFlush(message));
    else void this.serially(() => this.stop(message.seq));
  }

  private async applyBatch(batch: BatchMessage): Promise<void> {
    await this.retrying(() => this.buffer.apply(batch.events, batch.partition));
    this.positions.set(batch.partition, batch.nextOffset);
    if (batch.caughtUp) this.lagging.delete(batch.partition);
    else this.lagging.add(batch.partition);
    this.send({ kind: 'applied', seq: batch.seq, metrics: this.recorder.take() });
    await this.flushIfDue();
  }

  /** Runs `work` until it succeeds, pausing longer after each passing failure. */
  private async retrying(work: () => Promise<void>): Promise<void> {
    for (let pauseMs = RETRY_FIRST_MS; ; pauseMs = Math.min(RETRY_MAX_MS, 2 * pauseMs)) {
      try {
        await work();
        return;
      } catch (err) {
        if (!isPassing(err)) throw err;
        this.recorder.metrics.batchRetries.inc();
        this.logger.warn({ err, retryInMs: pauseMs }, 'batch not applied; trying it again');
        await delay(pauseMs);
      }
    }
  }

  /** Runs `work` after everything queued before it; a failure stops the engine. */
  private serially(work: () => Promise<void>): Promise<void> {
    const run = this.exclusive.then(work);
    this.exclusive = run.catch((err: unknown) => this.fail(err));
    return this.exclusive as Promise<void>;
  }

  /**
   * Starts a flush when one is due, without waiting for Redis to confirm it: the next batches
   * are applied meanwhile. Only when too many changed states wait does it wait (backpressure).
   * Once it is confirmed, the next flush starts at once if one is due by then: a flush is not
   * started while another is in flight, and what became due meanwhile (the end of a backlog,
   * typically) would otherwise wait for the next tick, up to half the flush interval.
   */
  private async flushIfDue(): Promise<void> {
    const caughtUp = this.lagging.size === 0;
    if (!this.buffer.flushDue(this.positions.size > 0, caughtUp)) return;
    const flushed = this.flushAndReport();
    if (this.buffer.overfull) await flushed;
    else
      flushed.then(
        () => this.flushOnTick(),
        (err: unknown) => {
          this.logger.warn({ err }, 'flush failed; the next flush writes the same states again');
        },
      );
  }

  /**
   * Writes every changed state, then reports the positions of the events they hold for the
   * main thread to commit. The positions are read before the flush starts, so they never run
   * ahead of what it writes.
   */
  private async flushAndReport(): Promise<void> {
    const positions = [...this.positions];
    await this.buffer.flush();
    for (const [partition, offset] of positions) {
      if (this.positions.get(partition) === offset) this.positions.delete(partition);
    }
    this.send({ kind: 'flushed', positions, metrics: this.recorder.take() });
  }

  /** The timer's flush: between batches, so that a quiet stream is written too. */
  private flushOnTick(): Promise<void> {
    if (this.stopped || this.failed) return Promise.resolve();
    return this.flushIfDue().catch((err: unknown) => {
      this.logger.warn({ err }, 'timed flush failed; the next batch or tick retries');
    });
  }

  /** A flush the main thread asked for (stop, rebalance); its reply follows the report. */
  private async requestedFlush(request: FlushRequest): Promise<void> {
    let error = null;
    try {
      await this.flushAndReport();
    } catch (err) {
      error = describeError(err);
    }
    if (request.clear) {
      await this.buffer.clear();
      this.positions.clear();
      this.lagging.clear();
    }
    this.send({ kind: 'reply', seq: request.seq, error, metrics: this.recorder.take() });
  }

  private pushMetrics(): void {
    const metrics = this.recorder.take();
    if (metrics) this.send({ kind: 'metrics', metrics });
  }

  private stopTimers(): void {
    if (this.flushTimer) clearInterval(this.flushTimer);
    if (this.metricsTimer) clearInterval(this.metricsTimer);
  }

  private async stop(seq: number): Promise<void> {
    this.stopped = true;
    this.stopTimers();
    let error = null;
    try {
      await Promise.all([this.redis.quit(), this.writer.quit()]);
    } catch (err) {
      error = describeError(err);
    }
    this.send({ kind: 'reply', seq, error, metrics: this.recorder.take() });
    parentPort?.close();
  }

  private fail(err: unknown): void {
    this.failed = true;
    this.stopTimers();
    this.send({ kind: 'failed', error: describeError(err), metrics: this.recorder.take() });
  }

  private log(line: string): void {
    this.send({ kind: 'log', line });
  }
}

async function main(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('the engine runs as a worker thread of the events worker');
  const { config, logLevel } = workerData as EngineData;
  const engine = new Engine(config, logLevel, (message) => port.postMessage(message));
  port.on('message', (message: ToEngine) => engine.receive(message));
  try {
    await engine.start();
  } catch (err) {
    port.postMessage({ kind: 'failed', error: describeError(err), metrics: null });
  }
}

await main();
