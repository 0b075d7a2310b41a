/**
 * Method 3's inputs for the reader: the user's stored encoding and, for each candidate, the
 * item vector of the model version that made that encoding. The reader keeps the current and
 * the previous model loaded (see ModelHolder), so during a model swap every user keeps a
 * scorable encoding; an encoding from an older version gives null features until the user
 * returns or `affinity neural reencode` runs.
 */
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { decodeFloat32LE } from '../encoding/float32.js';
import type { KeySpace } from '../state/keys.js';
import { userNeuralKey } from '../state/keys.js';
import type { ModelHolder } from '../neural/model-holder.js';
import type { NeuralSource } from './feature-reader.js';
import type { NeuralInputs } from './features.js';

export class RedisNeuralSource implements NeuralSource {
  private lastPollMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    private readonly models: ModelHolder,
    private readonly pollMs: number,
  ) {}

  async inputs(
    user: string,
    items: readonly string[],
    embeddings: Map<string, Float32Array>,
  ): Promise<NeuralInputs[]> {
    await this.poll();
    const [encodingBytes, version] = await this.redis.hmgetBuffer(
      userNeuralKey(this.keys, user),
      'enc',
      'model',
    );
    const model = this.models.byVersion(version?.toString() ?? null);
    const encoding = model && encodingBytes ? decodeFloat32LE(encodingBytes) : null;

    return items.map((item) => {
      const embedding = embeddings.get(item);
      const itemVector = model && embedding ? model.itemVector(item, embedding) : null;
      return { encoding, itemVector };
    });
  }

  private async poll(): Promise<void> {
    const nowMs = performance.now();
    if (nowMs - this.lastPollMs < this.pollMs) return;
    this.lastPollMs = nowMs;
    await this.models.refresh();
  }
}
