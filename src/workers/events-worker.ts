/**
 * `affinity worker`: the long-running consumer. It materialises the `item-embeddings` topic into
 * the Redis catalogue (its own consumer group, so one member applies each change) and turns the
 * `interactions` topic into user states, batch by batch:
 *
 *   decode → dead-letter the bad ones → BatchProcessor (read, apply, write atomically)
 *   → resolve and commit the batch's offsets.
 *
 * Offsets are committed only after Redis acknowledged the write, and every state carries the
 * offsets it reflects, so a crash anywhere in between replays events that are then skipped.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Partitioners } from 'kafkajs';
import type { Consumer, EachBatchPayload, Kafka, Producer } from 'kafkajs';
import { Redis } from 'ioredis';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import { EmbeddingCache } from '../items/cache.js';
import { CatalogueError } from '../items/errors.js';
import type { ItemChange } from '../items/store.js';
import { ItemStore } from '../items/store.js';
import { parseEmbeddingValue, transformEmbedding } from '../items/transform.js';
import type { Logger } from '../ops/logger.js';
import type { WorkerMetrics } from '../ops/metrics.js';
import { UserStateStore } from '../state/store.js';
import type { SequencedEvent } from '../state/user-state.js';
import { decodeEvent } from '../stream/decode.js';
import type { DeadLetter } from '../stream/kafka.js';
import { DeadLetterSink, createKafka, ensureTopics } from '../stream/kafka.js';
import { StateBuffer } from './state-buffer.js';

const CATALOGUE_WAIT_MS = 1_000;

export class AffinityWorker {
  private readonly kafka: Kafka;
  private readonly redis: Redis;
  private readonly producer: Producer;
  private readonly eventsConsumer: Consumer;
  private readonly itemsConsumer: Consumer;
  private readonly itemStore: ItemStore;
  private readonly cache: EmbeddingCache;
  private readonly buffer: StateBuffer;
  /** Next offset to commit per partition, once the states holding its events are flushed. */
  private readonly positions = new Map<number, string>();
  /** Serialises batches and the rebalance flush. */
  private exclusive: Promise<unknown> = Promise.resolve();
  /** Offset commits, in the order of the flushes they follow. */
  private commits: Promise<unknown> = Promise.resolve();
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly deadLetters: DeadLetterSink;
  private joined = false;
  private closing: Promise<void> | null = null;
  private failure: Error | null = null;
  private resolveStopped: (failure: Error | null) => void = () => undefined;
  private readonly stoppedPromise = new Promise<Error | null>((resolve) => {
    this.resolveStopped = resolve;
  });

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly metrics: WorkerMetrics,
  ) {
    this.kafka = createKafka(config.kafkaBrokers, config.kafkaClientId, logger);
    this.redis = new Redis(config.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
    // The partitioner named, so kafkajs does not warn that its default changed in v2.
    this.producer = this.kafka.producer({
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    this.eventsConsumer = this.kafka.consumer({
      ...consumerTimings(config),
      groupId: config.groupId,
      maxBytesPerPartition: config.fetchMaxBytesPerPartition,
      maxBytes: Math.max(10_485_760, 2 * config.fetchMaxBytesPerPartition),
    });
    this.itemsConsumer = this.kafka.consumer({
      ...consumerTimings(config),
      groupId: `${config.groupId}-items`,
    });
    this.itemStore = new ItemStore(this.redis, { prefix: config.keyPrefix });
    const counters = {
      hit: (n: number) => metrics.cacheHits.inc(n),
      miss: (n: number) => metrics.cacheMisses.inc(n),
    };
    this.cache = new EmbeddingCache(
      this.itemStore,
      config.embeddingCacheItems,
      counters,
      config.dual.enabled,
    );
    const store = new UserStateStore(
      this.redis,
      { prefix: config.keyPrefix },
      config.userIdleTtlMs,
    );
    this.buffer = new StateBuffer(config, store, this.cache, metrics, logger);
    this.deadLetters = new DeadLetterSink(this.producer, config.deadLetterTopic);
  }

  /**
   * Resolves once the worker has stopped: with null after `close()`, or with the error that
   * stopped a consumer for good (kafkajs gives up on errors it does not retry). The process
   * should then exit non-zero so that its supervisor restarts it, rather than stay up idle.
   */
  get stopped(): Promise<Error | null> {
    return this.stoppedPromise;
  }

  /** Ready once the events consumer joined its group; /readyz reports this. */
  get ready(): boolean {
    return this.joined && this.closing === null && this.redis.status === 'ready';
  }

  async start(): Promise<void> {
    await this.redis.connect();
    await this.createTopics();
    await this.producer.connect();
    this.watchGroup(this.eventsConsumer, 'events');
    await this.runItemsConsumer();
    await this.runEventsConsumer();
    this.logger.info(
      { topic: this.config.eventsTopic, groupId: this.config.groupId },
      'worker started',
    );
  }

  private async createTopics(): Promise<void> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      await ensureTopics(admin, [
        { topic: this.config.eventsTopic },
        { topic: this.config.deadLetterTopic },
        {
          topic: this.config.itemsTopic,
          configEntries: [{ name: 'cleanup.policy', value: 'compact' }],
        },
      ]);
    } finally {
      await admin.disconnect();
    }
  }

  private watchGroup(consumer: Consumer, role: string): void {
    const { GROUP_JOIN, CRASH, REBALANCING } = consumer.events;
    consumer.on(GROUP_JOIN, (event) => {
      if (role === 'events') this.joined = true;
      const { memberId, memberAssignment } = event.payload;
      this.logger.info({ role, memberId, assignment: memberAssignment }, 'consumer joined group');
    });
    consumer.on(REBALANCING, () => {
      this.logger.info({ role }, 'consumer rebalancing');
      if (role === 'events') void this.serially(() => this.flushBeforeRebalance());
    });
    consumer.on(CRASH, (event) => {
      const { error, restart } = event.payload;
      if (role === 'events') this.joined = false;
      this.logger.error({ role, err: error, restart }, 'consumer crashed');
      if (!restart) this.fail(role, error);
    });
  }

  private async runEventsConsumer(): Promise<void> {
    await this.eventsConsumer.connect();
    await this.eventsConsumer.subscribe({ topic: this.config.eventsTopic, fromBeginning: true });
    await this.eventsConsumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.serially(() => this.handleEventsBatch(payload)),
    });
    const tickMs = Math.max(10, Math.floor(this.config.flushIntervalMs / 2));
    this.flushTimer = setInterval(() => void this.flushOnTick(), tickMs);
  }

  private async runItemsConsumer(): Promise<void> {
    this.watchGroup(this.itemsConsumer, 'items');
    await this.itemsConsumer.connect();
    await this.itemsConsumer.subscribe({ topic: this.config.itemsTopic, fromBeginning: true });
    await this.itemsConsumer.run({
      autoCommit: true,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.handleItemsBatch(payload),
    });
  }

  private async handleEventsBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const last = batch.messages[batch.messages.length - 1];
    if (!last || !payload.isRunning() || payload.isStale() || this.closing) return;
    const stopTimer = this.metrics.batchSeconds.startTimer();
    this.metrics.eventsConsumed.inc({ topic: batch.topic }, batch.messages.length);

    const { events, letters } = this.decodeBatch(payload);
    await this.deadLetters.send(letters);
    for (const letter of letters) this.metrics.eventsDeadLettered.inc({ reason: letter.reason });
    await this.waitForCatalogue(payload);
    await this.buffer.apply(events);

    payload.resolveOffset(last.offset);
    this.positions.set(batch.partition, (BigInt(last.offset) + 1n).toString());
    await this.flushIfDue();
    await payload.heartbeat();
    const lag = Number(batch.offsetLag());
    this.metrics.consumerLag.set({ topic: batch.topic, partition: String(batch.partition) }, lag);
    stopTimer();
  }

  /** Runs `work` after everything queued before it, so flushes never overlap a batch. */
  private serially<T>(work: () => Promise<T>): Promise<T> {
    const run = this.exclusive.then(work, work);
    this.exclusive = run.catch(() => undefined);
    return run;
  }

  /**
   * Starts a flush when one is due, without waiting for Redis to confirm it: the next batches
   * are applied meanwhile. Only when too many changed states wait does it wait (backpressure).
   */
  private async flushIfDue(): Promise<void> {
    if (!this.buffer.flushDue(this.positions.size > 0)) return;
    const flushed = this.flushAndCommit();
    if (this.buffer.overfull) await flushed;
    else
      flushed.catch((err: unknown) => {
        this.logger.warn({ err }, 'flush failed; the next flush writes the same states again');
      });
  }

  /**
   * Writes every changed state, then commits the offsets of the events they hold. The
   * positions are read before the flush starts, so they never run ahead of what it writes. A
   * commit that fails (the partition moved in a rebalance) is harmless: the new owner replays
   * those events and skips them by the offsets stored with each state.
   */
  private async flushAndCommit(): Promise<void> {
    const positions = [...this.positions].map(([partition, offset]) => ({
      topic: this.config.eventsTopic,
      partition,
      offset,
    }));
    const outcome = await this.buffer.flush();
    if (positions.length === 0) return;

    const commit = this.commits.then(() => this.commit(positions));
    this.commits = commit.catch(() => undefined);
    await commit;
    this.logger.debug({ ...outcome, positions }, 'flushed and committed');
  }

  private async commit(positions: { topic: string; partition: number; offset: string }[]) {
    try {
      await this.eventsConsumer.commitOffsets(positions);
      for (const { partition, offset } of positions) {
        if (this.positions.get(partition) === offset) this.positions.delete(partition);
      }
    } catch (err) {
      this.logger.warn(
        { err, positions },
        'offset commit failed; events will be replayed and skipped',
      );
    }
  }

  private decodeBatch(payload: EachBatchPayload): {
    events: SequencedEvent[];
    letters: DeadLetter[];
  } {
    const { batch } = payload;
    const nowMs = Date.now();
    const events: SequencedEvent[] = [];
    const letters: DeadLetter[] = [];

    for (const message of batch.messages) {
      const result = decodeEvent(message.value, nowMs, this.config);
      if (result.ok) {
        events.push({
          event: result.event,
          position: { partition: batch.partition, offset: Number(message.offset) },
        });
        continue;
      }
      letters.push({
        key: message.key,
        value: message.value,
        reason: result.reason,
        detail: result.detail,
        sourceTopic: batch.topic,
        partition: batch.partition,
        offset: message.offset,
      });
    }
    return { events, letters };
  }

  /** Events cannot be applied before the catalogue fixes the dimension; wait, heartbeating. */
  private async waitForCatalogue(payload: EachBatchPayload): Promise<void> {
    // Once the cache holds a catalogue, the batch's own read (StateBuffer.hold) follows it.
    if (this.cache.meta) return;
    let warned = false;
    while (payload.isRunning() && !(await this.itemStore.readMeta())) {
      if (!warned) this.logger.warn({}, 'waiting for an item catalogue before applying events');
      warned = true;
      await payload.heartbeat();
      await delay(CATALOGUE_WAIT_MS);
    }
    if (!payload.isRunning()) {
      throw new AffinityError('CATALOGUE_MISSING', 'stopped while waiting for a catalogue', {
        retriable: true,
      });
    }
  }

  private async handleItemsBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const last = batch.messages[batch.messages.length - 1];
    if (!last || !payload.isRunning() || payload.isStale()) return;

    const meta = await this.itemStore.readMeta();
    // Without a catalogue yet, the batch's first embedding fixes the dimension for the rest.
    let dim = meta?.dim ?? null;
    const changes: ItemChange[] = [];
    const letters: DeadLetter[] = [];
    for (const message of batch.messages) {
      const item = message.key?.toString('utf8') ?? '';
      try {
        if (item === '')
          throw new CatalogueError('ITEMS_FORMAT', 'message has no key (the item id)');
        const embedding =
          message.value === null ? null : parseEmbeddingValue(message.value, dim, item);
        dim ??= embedding?.length ?? null;
        // Centring can still leave nothing (an item equal to the mean): check before applying.
        if (embedding && meta)
          transformEmbedding(embedding, { mean: meta.mean, normalize: meta.normalized }, item);
        changes.push({ item, embedding });
      } catch (err) {
        if (!(err instanceof CatalogueError)) throw err;
        letters.push({
          key: message.key,
          value: message.value,
          reason: 'item_invalid',
          detail: err.message,
          sourceTopic: batch.topic,
          partition: batch.partition,
          offset: message.offset,
        });
      }
    }

    await this.deadLetters.send(letters);
    this.metrics.itemChanges.inc({ outcome: 'rejected' }, letters.length);
    await this.applyItemChanges(changes);
    this.metrics.itemChanges.inc({ outcome: 'applied' }, changes.length);
    payload.resolveOffset(last.offset);
    await payload.commitOffsetsIfNecessary();
  }

  private async applyItemChanges(changes: ItemChange[]): Promise<void> {
    if (changes.length === 0) return;
    await this.itemStore.applyChanges(changes, true);
  }

  /** The timer's flush: between batches, so that a quiet stream is written too. */
  private flushOnTick(): Promise<void> {
    return this.flushIfDue().catch((err: unknown) => {
      this.logger.warn({ err }, 'timed flush failed; the next batch or tick retries');
    });
  }

  /** Held states may belong to partitions about to move: write them, then forget them all. */
  private async flushBeforeRebalance(): Promise<void> {
    try {
      await this.flushAndCommit();
    } catch (err) {
      this.logger.warn({ err }, 'flush before rebalance failed; the events will be replayed');
    }
    await this.buffer.clear();
    this.positions.clear();
  }

  /** A consumer that kafkajs will not restart leaves the worker useless: stop it all. */
  private fail(role: string, error: Error): void {
    this.failure ??= error;
    this.logger.fatal({ role, err: error }, 'consumer stopped for good; stopping the worker');
    this.close().catch((err: unknown) => {
      this.logger.error({ err }, 'stopping after the consumer failed did not finish cleanly');
    });
  }

  /**
   * Finishes the batch in flight, writes and commits everything applied, and disconnects; safe
   * to call more than once. The consumer is paused, not stopped, for the final commit: a
   * stopped kafkajs consumer has left its group and can no longer commit.
   */
  close(): Promise<void> {
    this.closing ??= this.closeAll().finally(() => this.resolveStopped(this.failure));
    return this.closing;
  }

  private async closeAll(): Promise<void> {
    if (this.flushTimer) clearInterval(this.flushTimer);
    const topics = [{ topic: this.config.eventsTopic }];
    const steps: [string, () => Promise<unknown>][] = [
      ['events consumer pause', async () => this.eventsConsumer.pause(topics)],
      ['final flush', () => this.serially(() => this.flushAndCommit())],
      ['offset commits', () => this.commits],
      ['events consumer stop', () => this.eventsConsumer.stop()],
      ['events consumer', () => this.eventsConsumer.disconnect()],
      ['items consumer', () => this.itemsConsumer.disconnect()],
      ['producer', () => this.producer.disconnect()],
      ['redis', () => this.redis.quit()],
    ];
    const failed: string[] = [];
    for (const [name, step] of steps) {
      try {
        await step();
      } catch (err) {
        failed.push(name);
        this.logger.warn({ err, step: name }, 'shutdown step failed');
      }
    }
    this.logger.info({ failed }, 'worker stopped');
    // Applied events the final flush could not write are replayed at the next start (their
    // offsets were not committed), so nothing is lost; the exit code still says so.
    if (failed.includes('final flush')) {
      throw new AffinityError('SHUTDOWN_INCOMPLETE', 'the final flush failed; see the log');
    }
  }
}

/**
 * kafkajs heartbeats only between fetches, so the fetch wait must stay well under the session
 * timeout, and the heartbeat interval at a third of it (the broker's own rule of thumb).
 */
export function consumerTimings(config: Config) {
  const sessionTimeout = config.kafkaSessionTimeoutMs;
  return {
    sessionTimeout,
    heartbeatInterval: Math.floor(sessionTimeout / 3),
    maxWaitTimeInMs: Math.min(100, Math.floor(sessionTimeout / 10)),
  };
}
