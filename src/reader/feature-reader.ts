/**
 * `FeatureReader`: what an online ranker (or `affinity features`) calls to get, for one user and
 * a list of candidate items, every feature by name. It reads the user's state and the
 * embeddings it needs from Redis, folds in waiting events whose embedding has since arrived
 * (without writing), and computes the features with the same pure functions as the backfill.
 */
import { Redis } from 'ioredis';
import type { Config } from '../config/config.js';
import type { AggregateLayout } from '../features/aggregate.js';
import { EmbeddingCache } from '../items/cache.js';
import { ItemStore } from '../items/store.js';
import { decodeUserState } from '../state/codec.js';
import { UserStateStore } from '../state/store.js';
import type { UserState } from '../state/user-state.js';
import { foldPending } from '../state/user-state.js';
import { ModelHolder } from '../neural/model-holder.js';
import { createLogger } from '../ops/logger.js';
import type { Logger } from '../ops/logger.js';
import type { FeatureSettings, FeatureValues, NeuralInputs } from './features.js';
import { RedisNeuralSource } from './neural-source.js';
import { computeFeatures, resolveHistory } from './features.js';

export interface FeatureResponse {
  readonly user: string;
  readonly at: number;
  readonly items: { item: string; features: FeatureValues }[];
}

/** Supplies method 3's inputs; see reader/neural-source.ts. */
export interface NeuralSource {
  inputs(
    user: string,
    items: readonly string[],
    embeddings: Map<string, Float32Array>,
  ): Promise<NeuralInputs[]>;
  /** Items whose embedding changed (null: possibly all): drop what was derived from them. */
  invalidate(changed: string[] | null): void;
}

export interface FeatureReaderOptions {
  readonly redis: Redis;
  readonly keyPrefix: string;
  readonly settings: Omit<FeatureSettings, 'layout'>;
  readonly halfLivesMs: readonly number[];
  readonly dual: boolean;
  readonly neural?: NeuralSource | null;
  readonly cacheItems?: number;
}

export class FeatureReader {
  private readonly store: UserStateStore;
  private readonly cache: EmbeddingCache;
  private readonly noCounters = { hit: () => {}, miss: () => {} };

  constructor(private readonly options: FeatureReaderOptions) {
    const keys = { prefix: options.keyPrefix };
    const itemStore = new ItemStore(options.redis, keys);
    this.store = new UserStateStore(options.redis, keys, 0);
    this.cache = new EmbeddingCache(
      itemStore,
      options.cacheItems ?? 100_000,
      this.noCounters,
      false,
    );
    // Item vectors are cached per model version from the embeddings; an updated embedding
    // must reach them too, as in the neural worker.
    const neural = options.neural;
    if (neural) this.cache.onChange((changed) => neural.invalidate(changed));
  }

  /**
   * A reader configured like the workers of `config`, on its own Redis connection, with the
   * neural features when AFFINITY_NEURAL_MODEL_DIR names a model.
   */
  static fromConfig(config: Config, logger: Logger = createLogger(config.logLevel)): FeatureReader {
    const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 3 });
    // Without a listener ioredis prints each failed reconnect to stderr; the read that needed
    // Redis fails with the cause, so the attempts themselves are debug detail.
    redis.on('error', (err: unknown) => logger.debug({ err }, 'redis connection error'));
    const keys = { prefix: config.keyPrefix };
    const neural = config.neuralModelDir
      ? new RedisNeuralSource({
          redis,
          keys,
          models: new ModelHolder(config.neuralModelDir, logger),
          pollMs: config.neuralModelPollMs,
        })
      : null;
    return new FeatureReader({
      redis,
      keyPrefix: config.keyPrefix,
      settings: {
        historyHalfLifeMs: config.historyHalfLifeMs,
        cosineThresholds: config.cosineThresholds,
        signals: config.signals,
      },
      halfLivesMs: config.halfLivesMs,
      dual: config.dual.enabled,
      neural,
    });
  }

  async features(
    user: string,
    items: readonly string[],
    atMs: number = Date.now(),
  ): Promise<FeatureResponse> {
    const { raw, catalogVersion } = await this.store.readRaw([user]);
    await this.cache.sync(catalogVersion);
    const layout = this.layout();
    const fields = raw.get(user)!;
    const state = Object.keys(fields).length === 0 ? null : decodeUserState(fields, layout);

    const embeddings = await this.cache.lookup([...items, ...itemsOf(state)]);
    const lookup = (item: string) => embeddings.get(item);
    if (state)
      foldPending(state, {
        signals: this.options.settings.signals,
        layout,
        historyMaxEvents: 0,
        pendingMaxEvents: 0,
        embedding: lookup,
      });

    const settings: FeatureSettings = { ...this.options.settings, layout };
    const history = resolveHistory(state, atMs, settings, lookup);
    const neural = this.options.neural
      ? await this.options.neural.inputs(user, items, embeddings)
      : null;
    return {
      user,
      at: atMs,
      items: items.map((item, index) => ({
        item,
        features: computeFeatures(state, history, lookup(item), atMs, settings, {
          dual: this.options.dual,
          neural: neural?.[index] ?? null,
        }),
      })),
    };
  }

  async close(): Promise<void> {
    await this.options.redis.quit();
  }

  private layout(): AggregateLayout {
    const meta = this.cache.meta;
    // Without a catalogue no user can have state; a dimension of 0 reads every user as new.
    return { dim: meta?.dim ?? 0, halfLivesMs: this.options.halfLivesMs };
  }
}

function itemsOf(state: UserState | null): string[] {
  if (!state) return [];
  return [...state.history.map((entry) => entry.item), ...state.pending.map((entry) => entry.item)];
}
