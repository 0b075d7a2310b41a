/**
 * `affinity worker`: the long-running consumer. It materialises the `item-embeddings` topic into
 * the Redis catalogue (its own consumer group, so one member applies each change) and turns the
 * `interactions` topic into user states, batch by batch:
 *
 *   main thread: fetch (kafkajs) → decode → dead-letter the bad ones → hand the valid events
 *                to the engine (several fetches' worth at a time while behind) → fetch the next
 *   engine thread: apply to the held states (StateBuffer) → flush → report positions
 *   main thread: commit the reported positions.
 *
 * Offsets are committed only after Redis acknowledged the write, and after the dead letters of
 * every batch they cover were sent; every state carries the offsets it reflects, so a crash
 * anywhere in between replays events that are then skipped.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Partitioners } from 'kafkajs';
import type { Consumer, EachBatchPayload, Kafka, Producer } from 'kafkajs';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import { CatalogueError } from '../items/errors.js';
import type { ItemChange } from '../items/store.js';
import { ItemStore } from '../items/store.js';
import { parseEmbeddingValue, transformEmbedding } from '../items/transform.js';
import type { Logger } from '../ops/logger.js';
import { workerRedis } from '../ops/redis.js';
import type { WorkerMetrics } from '../ops/metrics.js';
import type { DeadLetter } from '../stream/kafka.js';
import { DeadLetterSink, createKafka, ensureTopics } from '../stream/kafka.js';
import { EngineClient } from './engine-client.js';
import type { Position } from './engine-link.js';
import { ColumnsBuilder, signalTypes } from './engine-link.js';
import { decodeEvent } from '../stream/decode.js';
import { EventScanner } from '../stream/scan.js';

const CATALOGUE_WAIT_MS = 1_000;
/**
 * Batches handed to the engine and not yet applied. Two keep both threads busy (one applied
 * while the next is fetched and decoded) without holding more of the stream in memory.
 */
const MAX_BATCHES_IN_FLIGHT = 2;
/**
 * While a backlog is read, the events of consecutive Kafka batches of one partition go to the
 * engine together, this many at least: the engine's cost per event falls with the events per
 * batch (each user's are applied in one pass, its rows still in the processor's cache after
 * the first; the per-batch look-ups are made once). With 1 MB fetches of 10,000 events at 5,000
 * users, the engine thread used 2.8 to 3.3 s per million events handed over fetch by fetch,
 * 2.2 to 2.3 s at 20,000 a time, 1.75 to 1.9 s at 40,000 and 1.6 to 1.7 s at 80,000
 * (docs/benchmarks.md, round of 2026-12-04 07:00). A batch that reaches the end of its
 * partition goes at once, and a batch not completed within two fetch waits goes as it is: the
 * wait costs freshness only while the worker is behind, when it is bounded by the backlog.
 */
const MIN_ENGINE_BATCH_EVENTS = 40_000;

/** Events decoded and not yet handed to the engine (see MIN_ENGINE_BATCH_EVENTS). */
interface OpenBatch {
  readonly builder: ColumnsBuilder;
  readonly partition: number;
  nextOffset: string;
  caughtUp: boolean;
  /** batchSeconds timers of the Kafka batches in it, stopped once the engine applied them. */
  readonly timers: (() => void)[];
  /** Hands it over when no batch completes it in time. */
  readonly timer: NodeJS.Timeout;
}

export class AffinityWorker {
  private readonly kafka: Kafka;
  private readonly redis: Redis;
  private readonly producer: Producer;
  private readonly eventsConsumer: Consumer;
  private readonly itemsConsumer: Consumer;
  private readonly itemStore: ItemStore;
  private readonly engine: EngineClient;
  /** Events decoded and not handed to the engine yet, of one partition. */
  private open: OpenBatch | null = null;
  /** How long they may wait for the next batch: two fetch waits. */
  private readonly openBatchMaxMs: number;
  /** Batches handed to the engine, oldest first, until it applied them. */
  private readonly inFlight: Promise<void>[] = [];
  /** Positions the engine reported flushed and that are not committed yet. */
  private readonly uncommitted = new Map<number, string>();
  /** Dead-letter sends, in batch order; a failure leaves it rejected and stops commits. */
  private letterSends: Promise<void> = Promise.resolve();
  /** Offset commits, in the order of the flushes they follow. */
  private commits: Promise<unknown> = Promise.resolve();
  private readonly deadLetters: DeadLetterSink;
  private catalogueSeen = false;
  /** Each configured event type's number in the columns handed to the engine. */
  private readonly typeIndex: ReadonlyMap<string, number>;
  /** The fast path of decodeEvent, for messages in the plain form. */
  private readonly scanner: EventScanner;
  private engineUp = false;
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
    this.redis = workerRedis(config.redisUrl, 'worker', logger);
    // The partitioner named, so kafkajs does not warn that its default changed in v2.
    this.producer = this.kafka.producer({
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
    this.eventsConsumer = this.kafka.consumer({
      ...eventsConsumerSettings(config),
      groupId: config.groupId,
    });
    this.itemsConsumer = this.kafka.consumer({
      ...consumerTimings(config),
      groupId: `${config.groupId}-items`,
    });
    this.itemStore = new ItemStore(this.redis, { prefix: config.keyPrefix });
    this.typeIndex = signalTypes(config.signals).index;
    this.scanner = new EventScanner(config, this.typeIndex);
    this.openBatchMaxMs = 2 * consumerTimings(config).maxWaitTimeInMs;
    this.engine = new EngineClient(config, logger, metrics, {
      flushed: (positions) => this.commitFlushed(positions),
      failed: (error) => {
        this.engineUp = false;
        this.fail('engine', error);
      },
    });
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
    return this.joined && this.engineUp && this.closing === null && this.redis.status === 'ready';
  }

  async start(): Promise<void> {
    await this.redis.connect();
    await this.createTopics();
    await this.producer.connect();
    await this.engine.start();
    this.engineUp = true;
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
      if (role === 'events') void this.flushBeforeRebalance();
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
      eachBatch: (payload) => this.handleEventsBatch(payload),
    });
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

  /**
   * Decodes the batch, dead-letters its bad messages, hands the valid events to the engine and
   * resolves the batch's offsets at once, so that kafkajs fetches the next batch while the
   * engine applies this one. Resolving only moves this consumer's fetch position: the committed
   * offsets follow the engine's confirmed flushes (and the dead letters sent before them).
   */
  private async handleEventsBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const last = batch.messages[batch.messages.length - 1];
    if (!last || !payload.isRunning() || payload.isStale() || this.closing) return;
    this.metrics.eventsConsumed.inc({ topic: batch.topic }, batch.messages.length);
    await this.waitForCatalogue(payload);

    const stopTimer = this.metrics.batchSeconds.startTimer();
    const open = this.openBatchFor(batch.partition, batch.messages.length);
    this.deadLetter(this.decodeBatch(payload, open.builder));
    const lag = Number(batch.offsetLag());
    open.nextOffset = (BigInt(last.offset) + 1n).toString();
    open.caughtUp = lag === 0;
    open.timers.push(stopTimer);
    if (open.caughtUp || open.builder.size >= MIN_ENGINE_BATCH_EVENTS) this.handOver();
    payload.resolveOffset(last.offset);

    await this.drainInFlight(payload, MAX_BATCHES_IN_FLIGHT);
    await payload.heartbeat();
    this.metrics.consumerLag.set({ topic: batch.topic, partition: String(batch.partition) }, lag);
  }

  /**
   * The open batch to decode `count` more events of `partition` into: the one there is, when it
   * is of that partition and has room, or a new one (the one there was handed over first).
   */
  private openBatchFor(partition: number, count: number): OpenBatch {
    const open = this.open;
    if (open && open.partition === partition && open.builder.room >= count) return open;
    this.handOver();
    const capacity = Math.max(count, 2 * MIN_ENGINE_BATCH_EVENTS);
    const builder = new ColumnsBuilder(capacity, this.typeIndex);
    // Should the next batch not come (a lag that only control records make, a paused
    // partition), the events still go within openBatchMaxMs.
    const timer = setTimeout(() => this.handOver(), this.openBatchMaxMs);
    timer.unref();
    this.open = { builder, partition, nextOffset: '0', caughtUp: false, timers: [], timer };
    return this.open;
  }

  /**
   * Hands the open batch to the engine. Called before every flush the worker asks for
   * (rebalance, stop), so that the flush covers every event decoded.
   */
  private handOver(): void {
    const open = this.open;
    if (!open) return;
    this.open = null;
    clearTimeout(open.timer);
    const { columns, transfer } = open.builder.build();
    const { partition, nextOffset, caughtUp } = open;
    const applied = this.engine.apply({ partition, nextOffset, caughtUp }, columns, transfer);
    // Handled where it is awaited (drainInFlight, close); this keeps a lost engine from also
    // surfacing as an unhandled rejection.
    applied.then(
      () => open.timers.forEach((stop) => stop()),
      () => undefined,
    );
    this.inFlight.push(applied);
  }

  /** Decodes the batch's valid events into `builder`; returns the bad ones as dead letters. */
  private decodeBatch(payload: EachBatchPayload, builder: ColumnsBuilder): DeadLetter[] {
    const { batch } = payload;
    const nowMs = Date.now();
    const letters: DeadLetter[] = [];
    for (const message of batch.messages) {
      const { value } = message;
      if (value !== null && this.scanner.scan(value, nowMs)) {
        builder.addScanned(value, this.scanner, Number(message.offset));
        continue;
      }
      const result = decodeEvent(value, nowMs, this.config);
      if (result.ok) {
        builder.add(result.event, Number(message.offset));
        continue;
      }
      this.metrics.eventsDeadLettered.inc({ reason: result.reason });
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
    return letters;
  }

  /** Waits until at most `max` batches are in flight, heartbeating while the engine works. */
  private async drainInFlight(payload: EachBatchPayload, max: number): Promise<void> {
    const heartbeatMs = Math.floor(this.config.kafkaSessionTimeoutMs / 3);
    while (this.inFlight.length > max) {
      const oldest = this.inFlight[0]!;
      // The pause is cancelled once the batch is applied: left running, each one kept a timer
      // (and the process, when stopping) alive for a third of the session timeout.
      const pause = new AbortController();
      const paused = delay(heartbeatMs, false, { signal: pause.signal }).catch(() => false);
      const done = await Promise.race([oldest.then(() => true), paused]).finally(() =>
        pause.abort(),
      );
      if (!done) {
        await payload.heartbeat();
        continue;
      }
      this.inFlight.shift();
    }
  }

  /** Sends a batch's bad messages, in batch order, before any commit that covers them. */
  private deadLetter(letters: readonly DeadLetter[]): void {
    if (letters.length === 0) return;
    const sent = this.letterSends.then(() => this.deadLetters.send(letters));
    sent.catch((err: unknown) => this.fail('dead letters', err as Error));
    this.letterSends = sent;
  }

  /**
   * Commits what the engine flushed, once the dead letters sent before are out. A commit that
   * fails (the partition moved in a rebalance) is harmless: the new owner replays those events
   * and skips them by the offsets stored with each state.
   */
  private commitFlushed(positions: readonly Position[]): void {
    for (const [partition, offset] of positions) this.uncommitted.set(partition, offset);
    const commit = this.commits.then(async () => {
      await this.letterSends;
      await this.commit();
    });
    this.commits = commit.catch(() => undefined);
  }

  private async commit(): Promise<void> {
    const positions = [...this.uncommitted].map(([partition, offset]) => ({
      topic: this.config.eventsTopic,
      partition,
      offset,
    }));
    if (positions.length === 0) return;
    try {
      await this.eventsConsumer.commitOffsets(positions);
      for (const { partition, offset } of positions) {
        if (this.uncommitted.get(partition) === offset) this.uncommitted.delete(partition);
      }
      this.logger.debug({ positions }, 'flushed and committed');
    } catch (err) {
      this.logger.warn(
        { err, positions },
        'offset commit failed; events will be replayed and skipped',
      );
    }
  }

  /** Events cannot be applied before the catalogue fixes the dimension; wait, heartbeating. */
  private async waitForCatalogue(payload: EachBatchPayload): Promise<void> {
    // Once there is a catalogue, the engine's read of each batch (StateBuffer.hold) follows it.
    if (this.catalogueSeen) return;
    let warned = false;
    while (payload.isRunning() && !(await this.itemStore.readMeta())) {
      if (!warned) this.logger.warn({}, 'waiting for an item catalogue before applying events');
      warned = true;
      await payload.heartbeat();
      await delay(CATALOGUE_WAIT_MS);
    }
    this.catalogueSeen = payload.isRunning();
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

  /** Held states may belong to partitions about to move: write them, then forget them all. */
  private async flushBeforeRebalance(): Promise<void> {
    try {
      this.handOver();
      await this.engine.flush(true);
    } catch (err) {
      this.logger.warn({ err }, 'flush before rebalance failed; the events will be replayed');
    }
    await this.commits;
    this.uncommitted.clear();
  }

  /** A consumer that kafkajs will not restart leaves the worker useless: stop it all. */
  private fail(role: string, error: Error): void {
    if (this.failure) return;
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
    const topics = [{ topic: this.config.eventsTopic }];
    const steps: [string, () => Promise<unknown>][] = [
      ['events consumer pause', async () => this.eventsConsumer.pause(topics)],
      [
        'final flush',
        () => {
          this.handOver();
          return this.engine.flush(false);
        },
      ],
      ['dead letters', () => this.letterSends],
      ['offset commits', () => this.commits],
      ['events consumer stop', () => this.eventsConsumer.stop()],
      ['events consumer', () => this.eventsConsumer.disconnect()],
      ['items consumer', () => this.itemsConsumer.disconnect()],
      ['producer', () => this.producer.disconnect()],
      ['engine', () => this.engine.stop()],
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

/** How the events consumer fetches: its timings and AFFINITY_FETCH_MAX_BYTES_PER_PARTITION. */
export function eventsConsumerSettings(config: Config) {
  return {
    ...consumerTimings(config),
    maxBytesPerPartition: config.fetchMaxBytesPerPartition,
    maxBytes: Math.max(10_485_760, 2 * config.fetchMaxBytesPerPartition),
  };
}
