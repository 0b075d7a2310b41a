/**
 * The main thread's handle on the engine thread (workers/engine-link.ts): hands batches over,
 * asks for flushes and the stop, and turns the engine's messages back into promises, metrics
 * and log lines. Everything the engine reports arrives in the order it sent it, so a batch's
 * answer always comes before the flush report that covers it.
 */
import { Worker } from 'node:worker_threads';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import type { Logger } from '../ops/logger.js';
import type { WorkerMetrics } from '../ops/metrics.js';
import type { EngineError, EventColumns, FromEngine, Position, ToEngine } from './engine-link.js';
import { applyMetricDelta, relayLogLine } from './engine-link.js';
import type { EngineData } from './engine-thread.js';

export interface EngineEvents {
  /** A flush Redis confirmed: commit these positions. */
  flushed(positions: readonly Position[]): void;
  /** The engine stopped for good; the worker must stop too. */
  failed(error: Error): void;
}

/**
 * The engine's young generation, in MB (V8's default is 16 at most on 64-bit). Each scavenge
 * copies what is alive then, and the engine always has a batch's events and the states' new
 * history entries alive: a larger young generation scavenges less often for the same live set.
 * The engine's scavenges took 428 ms per million events at the default; in three sets of
 * interleaved runs, method 1 went from 185,000–219,000 to 209,000–229,000 events/s with 64
 * (docs/benchmarks.md, round of 2026-12-04 09:05).
 */
const ENGINE_YOUNG_GENERATION_MB = 64;

interface Waiter {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export class EngineClient {
  private readonly thread: Worker;
  private seq = 0;
  private readonly waiters = new Map<number, Waiter>();
  private readonly started: Promise<void>;
  private exited = false;
  private stopping = false;

  constructor(
    config: Config,
    private readonly logger: Logger,
    private readonly metrics: WorkerMetrics,
    private readonly events: EngineEvents,
  ) {
    const workerData: EngineData = { config, logLevel: logger.level };
    this.thread = new Worker(new URL('./engine-thread.js', import.meta.url), {
      workerData,
      resourceLimits: { maxYoungGenerationSizeMb: ENGINE_YOUNG_GENERATION_MB },
    });
    this.started = new Promise((resolve, reject) => this.waiters.set(0, { resolve, reject }));
    this.thread.on('message', (message: FromEngine) => this.receive(message));
    this.thread.on('error', (err) => this.lost(err));
    this.thread.on('exit', (code) => this.lost(new Error(`engine thread exited (${code})`)));
  }

  /** Resolves once the engine is connected to Redis and taking batches. */
  start(): Promise<void> {
    return this.started;
  }

  /**
   * Hands a batch's valid events over (their typed arrays are transferred: the caller must not
   * use them again); resolves once they are applied.
   */
  apply(
    where: { partition: number; nextOffset: string; caughtUp: boolean },
    events: EventColumns,
    transfer: ArrayBuffer[],
  ): Promise<void> {
    const seq = this.nextSeq();
    const batch: ToEngine = { kind: 'batch', seq, ...where, events };
    return this.request(seq, batch, transfer) as Promise<void>;
  }

  /** Writes every applied state (and reports its positions first); `clear` then drops them. */
  async flush(clear: boolean): Promise<void> {
    const seq = this.nextSeq();
    await this.request(seq, { kind: 'flush', seq, clear });
  }

  /** Closes the engine's Redis connection and ends the thread. */
  async stop(): Promise<void> {
    if (this.exited) return;
    this.stopping = true;
    const seq = this.nextSeq();
    await this.request(seq, { kind: 'stop', seq });
  }

  private nextSeq(): number {
    this.seq += 1;
    return this.seq;
  }

  private request(seq: number, message: ToEngine, transfer: ArrayBuffer[] = []): Promise<unknown> {
    if (this.exited) return Promise.reject(new AffinityError('ENGINE_STOPPED', 'engine stopped'));
    const answered = new Promise((resolve, reject) => this.waiters.set(seq, { resolve, reject }));
    this.thread.postMessage(message, transfer);
    return answered;
  }

  private receive(message: FromEngine): void {
    if (message.kind === 'log') {
      relayLogLine(this.logger, message.line);
      return;
    }
    applyMetricDelta(this.metrics, message.metrics);
    if (message.kind === 'ready') this.settle(0, null, undefined);
    else if (message.kind === 'applied') this.settle(message.seq, null, undefined);
    else if (message.kind === 'reply') this.settle(message.seq, message.error, undefined);
    else if (message.kind === 'flushed') this.events.flushed(message.positions);
    else if (message.kind === 'failed') this.lost(engineError(message.error));
  }

  private settle(seq: number, error: EngineError | null, value: unknown): void {
    const waiter = this.waiters.get(seq);
    if (!waiter) return;
    this.waiters.delete(seq);
    if (error) waiter.reject(engineError(error));
    else waiter.resolve(value);
  }

  /** The thread failed or ended: nothing pending will be answered. */
  private lost(error: Error): void {
    if (this.exited) return;
    this.exited = true;
    for (const waiter of this.waiters.values()) waiter.reject(error);
    this.waiters.clear();
    // A failed engine may still hold connections that retry forever: end it.
    void this.thread.terminate();
    if (!this.stopping) this.events.failed(error);
  }
}

function engineError(error: EngineError): Error {
  const err = new AffinityError('ENGINE_FAILED', `engine thread: ${error.message}`, {
    retriable: true,
  });
  if (error.stack) err.stack = error.stack;
  return err;
}
