/**
 * Method 3's inputs for the reader: the user's stored encoding and, for each candidate, the
 * item vector of the model version that made that encoding. The reader keeps the current and
 * the previous model loaded (see ModelHolder), so during a model swap every user keeps a
 * scorable encoding.
 *
 * The reader looks for a new model every `pollMs`, but the neural worker swaps on its own
 * clock: once it writes encodings of a version the reader does not know, the reader refreshes
 * at once instead of answering null until its next poll. Those refreshes are rate-limited
 * (`unknownVersionRefreshMs`), since an encoding from a version older than the previous one
 * stays unknown however often the folder is read; such an encoding gives null features until
 * the user returns or `affinity neural reencode` runs.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { decodeFloat32LE } from '../encoding/float32.js';
import type { LoadedModel } from '../features/neural-encode.js';
import { ItemStore } from '../items/store.js';
import type { KeySpace } from '../state/keys.js';
import { userNeuralKey } from '../state/keys.js';
import type { ModelHolder } from '../neural/model-holder.js';
import type { NeuralSource } from './feature-reader.js';
import type { NeuralInputs } from './features.js';

/** Refreshes for an unknown model version happen at most this often. */
export const UNKNOWN_VERSION_REFRESH_MS = 1_000;

export interface RedisNeuralSourceOptions {
  readonly redis: Redis;
  readonly keys: KeySpace;
  readonly models: ModelHolder;
  /** How often the model folder is polled (AFFINITY_NEURAL_MODEL_POLL). */
  readonly pollMs: number;
  readonly unknownVersionRefreshMs?: number;
  /** Monotonic clock in milliseconds; performance.now() unless a test fakes time. */
  readonly nowMs?: () => number;
}

export class RedisNeuralSource implements NeuralSource {
  private readonly items: ItemStore;
  private readonly nowMs: () => number;
  private lastPollMs = Number.NEGATIVE_INFINITY;
  private lastUnknownRefreshMs = Number.NEGATIVE_INFINITY;

  constructor(private readonly options: RedisNeuralSourceOptions) {
    this.items = new ItemStore(options.redis, options.keys);
    this.nowMs = options.nowMs ?? (() => performance.now());
  }

  async inputs(
    user: string,
    items: readonly string[],
    embeddings: Map<string, Float32Array>,
  ): Promise<NeuralInputs[]> {
    await this.poll();
    const [encodingBytes, version] = await this.options.redis.hmgetBuffer(
      userNeuralKey(this.options.keys, user),
      'enc',
      'model',
    );
    const model = await this.modelFor(version?.toString() ?? null);
    const encoding = model && encodingBytes ? decodeFloat32LE(encodingBytes) : null;

    return items.map((item) => {
      const embedding = embeddings.get(item);
      const itemVector = model && embedding ? model.itemVector(item, embedding) : null;
      return { encoding, itemVector };
    });
  }

  /** Items whose embedding changed: their cached item vectors are stale. */
  invalidate(changed: string[] | null): void {
    this.options.models.invalidate(changed);
  }

  /** The model of `version`, refreshing at once (rate-limited) when it is not loaded. */
  private async modelFor(version: string | null): Promise<LoadedModel | null> {
    const known = this.options.models.byVersion(version);
    if (known || version === null) return known;

    const nowMs = this.nowMs();
    const limitMs = this.options.unknownVersionRefreshMs ?? UNKNOWN_VERSION_REFRESH_MS;
    if (nowMs - this.lastUnknownRefreshMs < limitMs) return null;
    this.lastUnknownRefreshMs = nowMs;
    await this.refresh();
    return this.options.models.byVersion(version);
  }

  private async poll(): Promise<void> {
    const nowMs = this.nowMs();
    if (nowMs - this.lastPollMs < this.options.pollMs) return;
    this.lastPollMs = nowMs;
    await this.refresh();
  }

  /** Reads the catalogue meta so that a model that does not fit it is refused. */
  private async refresh(): Promise<void> {
    await this.options.models.refresh(await this.items.readMeta());
  }
}
