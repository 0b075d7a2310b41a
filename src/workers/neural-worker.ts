/**
 * `affinity neural-worker`: method 3's own consumer group on the events topic. For each batch
 * it adds the events to each affected user's encoder input (the newest N events), recomputes
 * that user's encoding once with the model in use, and writes encoding, model version and
 * applied offsets in one atomic step (the same optimistic-revision script as the main state),
 * before committing the batch's offsets. A new model version in AFFINITY_NEURAL_MODEL_DIR is
 * looked for every AFFINITY_NEURAL_MODEL_POLL, also while no events arrive, and picked up
 * between batches (polls and batches run one at a time); each encoding carries the version that
 * made it. A model that does not fit the catalogue is refused and the one in use stays (see
 * ModelHolder); at start-up, no usable model is an error.
 *
 * Messages that fail validation are skipped here and counted: the main worker, reading the
 * same topic, is the one that dead-letters them, so each bad message is reported once.
 */
import { performance } from 'node:perf_hooks';
import type { Consumer, EachBatchPayload, Kafka } from 'kafkajs';
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';
import type { Redis } from 'ioredis';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import { EmbeddingCache } from '../items/cache.js';
import { ItemStore } from '../items/store.js';
import type { LoadedModel } from '../features/neural-encode.js';
import type { Logger } from '../ops/logger.js';
import type { NeuralUserState } from '../state/neural-state.js';
import { NeuralStateStore, applyNeuralEvents, encoderWindow } from '../state/neural-state.js';
import type { SequencedEvent } from '../state/user-state.js';
import { decodeEvent } from '../stream/decode.js';
import { workerRedis } from '../ops/redis.js';
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
  readonly modelsRefused: Counter<'reason'>;

  constructor(registry: Registry) {
    this.encodings = new Counter({
      name: 'affinity_neural_encodings_total',
      help: 'User encodings written (one redone after a lost write race counts once)',
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
    this.modelsRefused = new Counter({
      name: 'affinity_neural_models_refused_total',
      help: 'Model versions refused because they do not fit the catalogue, by reason',
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
  private pollTimer: NodeJS.Timeout | null = null;
  /** The tail of the chain that runs batches and timer polls one at a time. */
  private serial: Promise<void> = Promise.resolve();

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
    this.redis = workerRedis(config.redisUrl, 'neural', logger);
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
    this.models = new ModelHolder(config.neuralModelDir, logger, {
      onRefused: (reason) => this.metrics.modelsRefused.inc({ reason }),
    });
    this.cache.onChange((changed) => this.models.invalidate(changed));
  }

  get ready(): boolean {
    return this.joined && this.closing === null && this.models.current !== null;
  }

  async start(): Promise<void> {
    await this.redis.connect();
    await this.syncCatalogue();
    await this.pollModel(true);
    this.models.requireCurrent();

    this.consumer.on(this.consumer.events.GROUP_JOIN, () => {
      this.joined = true;
      this.logger.info({ groupId: this.config.neuralGroupId }, 'neural consumer joined group');
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.config.eventsTopic, fromBeginning: true });
    await this.consumer.run({
      autoCommit: true,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.exclusive(() => this.handleBatch(payload)),
    });
    this.schedulePoll();
  }

  /**
   * Runs `task` after every batch or poll queued before it. kafkajs hands one batch at a time
   * (partitionsConsumedConcurrently 1), so this orders the timer's polls against batches: a
   * model never changes in the middle of a batch.
   */
  private exclusive(task: () => Promise<void>): Promise<void> {
    const run = this.serial.then(task);
    this.serial = run.catch(() => undefined);
    return run;
  }

  /** Polls for a new model on a timer too, so an idle worker picks it up. */
  private schedulePoll(): void {
    this.pollTimer = setTimeout(() => {
      this.exclusive(async () => {
        await this.syncCatalogue();
        await this.pollModel();
      })
        .catch((err: unknown) => this.logger.warn({ err }, 'neural model poll failed'))
        .finally(() => {
          if (this.closing === null) this.schedulePoll();
        });
    }, this.config.neuralModelPollMs);
    this.pollTimer.unref();
  }

  private async pollModel(force = false): Promise<void> {
    const nowMs = performance.now();
    if (!force && nowMs - this.lastPollMs < this.config.neuralModelPollMs) return;
    this.lastPollMs = nowMs;
    if (await this.models.refresh(this.cache.meta)) {
      this.metrics.modelInUse.reset();
      this.metrics.modelInUse.set({ version: this.models.requireCurrent().version }, 1);
    }
  }

  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    const { batch } = payload;
    const last = batch.messages[batch.messages.length - 1];
    if (!last || !payload.isRunning() || payload.isStale()) return;
    await this.syncCatalogue();
    await this.pollModel();

    const byUser = this.decodeBatch(payload);
    await this.encodeAndWrite(byUser, this.models.requireCurrent());

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
   * Applies, encodes once per user with `model` and writes; users that lost a race are redone.
   * Returns how many encodings were written (users with no new event and already encoded by
   * `model` are left alone).
   */
  private async encodeAndWrite(
    byUser: Map<string, SequencedEvent[]>,
    model: LoadedModel,
  ): Promise<number> {
    let written = 0;
    let users = [...byUser.keys()];
    for (let attempt = 1; users.length > 0; attempt++) {
      if (attempt > MAX_WRITE_ATTEMPTS) {
        throw new AffinityError('STATE_CONFLICT', 'neural states still conflicting', {
          retriable: true,
        });
      }
      const states = await this.store.loadMany(users);
      const embeddings = await this.embeddingsFor(states.values(), byUser.values());
      const changed = applyAll(states, byUser, model, embeddings);
      this.encodeAll(changed, model, embeddings);

      users = await this.store.writeMany(changed);
      const count = changed.size - users.length;
      written += count;
      this.metrics.encodings.inc(count);
    }
    return written;
  }

  /** The embeddings of every item in the states' histories and in the new events. */
  private async embeddingsFor(
    states: Iterable<NeuralUserState>,
    events: Iterable<readonly SequencedEvent[]>,
  ): Promise<Map<string, Float32Array>> {
    if (!this.cache.meta) return new Map();
    const items = new Set<string>();
    for (const state of states) for (const entry of state.history) items.add(entry.item);
    for (const list of events) for (const { event } of list) items.add(event.item);
    return this.cache.lookup(items);
  }

  /** Recomputes the encodings of `states` with `model`, in place. */
  private encodeAll(
    states: Map<string, NeuralUserState>,
    model: LoadedModel,
    embeddings: Map<string, Float32Array>,
  ): void {
    for (const state of states.values()) {
      const started = performance.now();
      state.encoding = model.encode(state.history, (item) => embeddings.get(item));
      state.model = model.version;
      this.metrics.encodingSeconds.observe((performance.now() - started) / 1_000);
    }
  }

  private async syncCatalogue(): Promise<void> {
    const items = new ItemStore(this.redis, { prefix: this.config.keyPrefix });
    await this.cache.sync(await items.readVersion());
  }

  /** `affinity neural reencode`: every stored encoding not made by the current model, redone. */
  async reencodeAll(): Promise<ReencodeSummary> {
    if (this.redis.status === 'wait') await this.redis.connect();
    await this.syncCatalogue();
    await this.pollModel(true);
    const model = this.models.requireCurrent();

    const summary = { usersChecked: 0, encodingsWritten: 0 };
    for await (const users of this.store.users()) {
      const byUser = new Map(users.map((user) => [user, [] as SequencedEvent[]]));
      summary.encodingsWritten += await this.encodeAndWrite(byUser, model);
      summary.usersChecked += users.length;
    }
    return summary;
  }

  close(): Promise<void> {
    this.closing ??= this.closeAll();
    return this.closing;
  }

  private async closeAll(): Promise<void> {
    if (this.pollTimer) clearTimeout(this.pollTimer);
    for (const [name, step] of [
      ['consumer', () => this.consumer.disconnect()],
      ['pending poll', () => this.serial],
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

/** Adds each user's events; returns the states to encode (new events, or another model's). */
function applyAll(
  states: Map<string, NeuralUserState>,
  byUser: Map<string, SequencedEvent[]>,
  model: LoadedModel,
  embeddings: Map<string, Float32Array>,
): Map<string, NeuralUserState> {
  const window = encoderWindow(model, (item) => embeddings.has(item));
  const changed = new Map<string, NeuralUserState>();
  for (const [user, state] of states) {
    const applied = applyNeuralEvents(state, byUser.get(user)!, window);
    if (applied > 0 || state.model !== model.version) changed.set(user, state);
  }
  return changed;
}
