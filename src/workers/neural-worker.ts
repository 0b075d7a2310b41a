/**
 * `affinity neural-worker`: method 3's own consumer group on the events topic. For each batch
 * it adds the events to each affected user's encoder input (the newest N events), recomputes
 * that user's encoding once with the model in use, and writes encoding, model version and
 * applied offsets in one atomic step (the same optimistic-revision script as the main state),
 * before committing the batch's offsets. A new model version in AFFINITY_NEURAL_MODEL_DIR is
 * picked up between batches; each encoding carries the version that made it.
 *
 * Messages that fail validation are skipped here and counted: the main worker, reading the
 * same topic, is the one that dead-letters them, so each bad message is reported once.
 */
import { performance } from 'node:perf_hooks';
import type { Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';
import { Redis } from 'ioredis';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import { EmbeddingCache } from '../items/cache.js';
import { ItemStore } from '../items/store.js';
import type { Logger } from '../ops/logger.js';
import type { NeuralUserState } from '../state/neural-state.js';
import { NeuralStateStore, applyNeuralEvents } from '../state/neural-state.js';
import type { SequencedEvent } from '../state/user-state.js';
import { decodeEvent } from '../stream/decode.js';
import { createKafka } from '../stream/kafka.js';
import { consumerTimings } from './events-worker.js';
import { ModelHolder } from '../neural/model-holder.js';

const MAX_WRITE_ATTEMPTS = 5;

/** What `reencodeAll` did: users whose state was read, and encodings rewritten among them. */
export interface ReencodeSummary {
  readonly usersChecked: number;
  readonly encodingsWritten: number;
}

export class NeuralMetrics {
  readonly encodings: Counter;
  readonly encodingSeconds: Histogram;
  readonly modelInUse: Gauge<'version'>;
  readonly consumerLag: Gauge<'topic' | 'partition'>;
  readonly skipped: Counter<'reason'>;

  constructor(registry: Registry) {
    this.encodings = new Counter({
      name: 'affinity_neural_encodings_total',
      help: 'User encodings computed and written',
      registers: [registry],
    });
    this.encodingSeconds = new Histogram({
      name: 'affinity_neural_encoding_seconds',
      help: 'Wall time per user encoding',
      buckets: [1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2],
      registers: [registry],
    });
    this.modelInUse = new Gauge({
      name: 'affinity_neural_model_info',
      help: 'Model version in use (value 1 on the version label)',
      labelNames: ['version'],
      registers: [registry],
    });
    this.consumerLag = new Gauge({
      name: 'affinity_neural_consumer_lag_messages',
      help: 'Events topic high watermark minus the neural worker position',
      labelNames: ['topic', 'partition'],
      registers: [registry],
    });
    this.skipped = new Counter({
      name: 'affinity_neural_events_skipped_total',
      help: 'Invalid messages skipped (the main worker dead-letters them), by reason',
      labelNames: ['reason'],
      registers: [registry],
    });
  }
}

export class NeuralWorker {
  private readonly kafka: Kafka;
  private readonly redis: Redis;
  private readonly consumer: Consumer;
  private readonly store: NeuralStateStore;
  private readonly cache: EmbeddingCache;
  readonly models: ModelHolder;
  private joined = false;
  private closing: Promise<void> | null = null;
  private lastPollMs = 0;

  constructor(
    private readonly config: Config,
    private readonly logger: Logger,
    private readonly metrics: NeuralMetrics,
  ) {
    if (!config.neuralModelDir) {
      throw new AffinityError(
        'CONFIG_INVALID',
        'AFFINITY_NEURAL_MODEL_DIR must name the model folder',
      );
    }
    this.kafka = createKafka(config.kafkaBrokers, `${config.kafkaClientId}-neural`, logger);
    this.redis = new Redis(config.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 3 });
    this.consumer = this.kafka.consumer({
      ...consumerTimings(config),
      groupId: config.neuralGroupId,
    });
    const keys = { prefix: config.keyPrefix };
    this.store = new NeuralStateStore(this.redis, keys, config.userIdleTtlMs);
    const noCounters = { hit: () => undefined, miss: () => undefined };
    this.cache = new EmbeddingCache(
      new ItemStore(this.redis, keys),
      config.embeddingCacheItems,
      noCounters,
      false,
    );
    this.models = new ModelHolder(config.neuralModelDir, logger);
    this.cache.onChange((changed) => this.models.invalidate(changed));
  }

  get ready(): boolean {
    return this.joined && this.closing === null && this.models.current !== null;
  }

  async start(): Promise<void> {
    await this.redis.connect();
    await this.pollModel(true);
    if (!this.models.current) {
      throw new AffinityError(
        'CONFIG_INVALID',
        `no loadable model in ${this.config.neuralModelDir}`,
      );
    }
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => {
      this.joined = true;
      this.logger.info({ groupId: this.config.neuralGroupId }, 'neural consumer joined group');
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.config.eventsTopic, fromBeginning: true });
    await this.consumer.run({
      autoCommit: true,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.handleBatch(payload),
    });
  }

  private async pollModel(force = false): Promise<void> {
    const nowMs = performance.now();
    if (!force && nowMs - this.lastPollMs < this.config.neuralModelPollMs) return;
    this.lastPollMs = nowMs;
    if (await this.models.refresh()) {
      this.metrics.modelInUse.reset();
      this.metrics.modelInUse.set({ version: this.models.current!.version }, 1);
    }
  }

  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const last = batch.messages[batch.messages.length - 1];
    if (!last || !payload.isRunning() || payload.isStale()) return;
    await this.pollModel();

    const byUser = this.decodeBatch(payload);
    await this.encodeAndWrite(byUser);

    payload.resolveOffset(last.offset);
    await payload.commitOffsetsIfNecessary();
    const lag = Number(batch.offsetLag());
    this.metrics.consumerLag.set({ topic: batch.topic, partition: String(batch.partition) }, lag);
  }

  private decodeBatch(payload: EachBatchPayload): Map<string, SequencedEvent[]> {
    const { batch } = payload;
    const nowMs = Date.now();
    const byUser = new Map<string, SequencedEvent[]>();
    for (const message of batch.messages) {
      const result = decodeEvent(message.value, nowMs, this.config);
      if (!result.ok) {
        this.metrics.skipped.inc({ reason: result.reason });
        continue;
      }
      const sequenced = {
        event: result.event,
        position: { partition: batch.partition, offset: Number(message.offset) },
      };
      const list = byUser.get(result.event.user);
      if (list) list.push(sequenced);
      else byUser.set(result.event.user, [sequenced]);
    }
    return byUser;
  }

  /**
   * Applies, encodes once per user and writes; users that lost a race are redone. Returns how
   * many encodings were written (users with no new event and the current model are left alone).
   */
  private async encodeAndWrite(byUser: Map<string, SequencedEvent[]>): Promise<number> {
    let written = 0;
    let users = [...byUser.keys()];
    for (let attempt = 1; users.length > 0; attempt++) {
      if (attempt > MAX_WRITE_ATTEMPTS) {
        throw new AffinityError('STATE_CONFLICT', 'neural states still conflicting', {
          retriable: true,
        });
      }
      const states = await this.store.loadMany(users);
      const changed = new Map<string, NeuralUserState>();
      for (const [user, state] of states) {
        const applied = applyNeuralEvents(state, byUser.get(user)!, this.historyLength());
        if (applied > 0 || state.model !== this.models.current!.version) changed.set(user, state);
      }
      await this.encodeAll(changed);
      users = await this.store.writeMany(changed);
      written += changed.size - users.length;
    }
    return written;
  }

  /** Recomputes the encodings of `states` with the current model, in place. */
  async encodeAll(states: Map<string, NeuralUserState>): Promise<void> {
    const model = this.models.current!;
    const meta = await this.syncCatalogue();
    const items = new Set<string>();
    for (const state of states.values()) for (const entry of state.history) items.add(entry.item);
    const embeddings = meta ? await this.cache.lookup(items) : new Map<string, Float32Array>();

    for (const state of states.values()) {
      const started = performance.now();
      state.encoding = model.encode(state.history, (item) => embeddings.get(item));
      state.model = model.version;
      this.metrics.encodingSeconds.observe((performance.now() - started) / 1_000);
      this.metrics.encodings.inc();
    }
  }

  private async syncCatalogue() {
    await this.cache.sync(
      await new ItemStore(this.redis, { prefix: this.config.keyPrefix }).readVersion(),
    );
    return this.cache.meta;
  }

  private historyLength(): number {
    return this.models.current!.config.historyLength;
  }

  /** `affinity neural reencode`: every stored encoding not made by the current model, redone. */
  async reencodeAll(): Promise<ReencodeSummary> {
    if (this.redis.status === 'wait') await this.redis.connect();
    await this.pollModel(true);

    const summary = { usersChecked: 0, encodingsWritten: 0 };
    for await (const users of this.store.users()) {
      const byUser = new Map(users.map((user) => [user, [] as SequencedEvent[]]));
      summary.encodingsWritten += await this.encodeAndWrite(byUser);
      summary.usersChecked += users.length;
    }
    return summary;
  }

  close(): Promise<void> {
    this.closing ??= this.closeAll();
    return this.closing;
  }

  private async closeAll(): Promise<void> {
    for (const [name, step] of [
      ['consumer', () => this.consumer.disconnect()],
      ['redis', () => this.redis.quit()],
    ] as const) {
      try {
        await step();
      } catch (err) {
        this.logger.warn({ err, step: name }, 'shutdown step failed');
      }
    }
  }
}
