/**
 * Method 3's user encoding from a history, the one definition shared by the neural worker,
 * `affinity neural reencode`, the backfill and the tests: keep the events whose type the model
 * knows and whose item has an embedding (as training does), take the last N, measure each
 * event's age from the newest of them, and run the encoder on the cached item projections.
 */
import type { HistoryEvent, NeuralConfig, NeuralWeights } from '../neural/model.js';
import { encodeHistory, projectItem, projectTokenInput } from '../neural/model.js';

export interface TimedEvent {
  readonly item: string;
  readonly ts: number;
  readonly type: string;
}

/** A loaded model with its per-item caches; one per model version. */
export class LoadedModel {
  private readonly typeIndex = new Map<string, number>();
  private readonly tokenInputs = new Map<string, Float32Array>();
  private readonly itemVectors = new Map<string, Float32Array>();

  constructor(
    readonly config: NeuralConfig,
    readonly weights: NeuralWeights,
    private readonly cacheItems = 1_000_000,
  ) {
    config.types.forEach((type, index) => this.typeIndex.set(type, index));
  }

  get version(): string {
    return this.config.version;
  }

  /** Whether the model has a type row for `type`; events of other types are never read. */
  knowsType(type: string): boolean {
    return this.typeIndex.has(type);
  }

  /** The encoding of `history` (ascending by time), or the empty-history encoding. */
  encode(
    history: readonly TimedEvent[],
    embedding: (item: string) => Float32Array | undefined,
  ): Float32Array {
    const usable: { event: TimedEvent; typeIndex: number; input: Float32Array }[] = [];
    for (const event of history) {
      const typeIndex = this.typeIndex.get(event.type);
      const vector = typeIndex === undefined ? undefined : embedding(event.item);
      if (typeIndex === undefined || !vector) continue;
      usable.push({ event, typeIndex, input: this.tokenInput(event.item, vector) });
    }

    const last = usable.slice(-this.config.historyLength);
    const newestMs = last[last.length - 1]?.event.ts ?? 0;
    const events: HistoryEvent[] = last.map(({ event, typeIndex, input }) => ({
      projection: input,
      typeIndex,
      ageMs: newestMs - event.ts,
    }));
    return encodeHistory(this.weights, this.config, events);
  }

  /** The item side of the score, cached per item for this model version. */
  itemVector(item: string, embedding: Float32Array): Float32Array {
    return cached(this.itemVectors, item, this.cacheItems, () =>
      projectItem(this.weights, embedding),
    );
  }

  private tokenInput(item: string, embedding: Float32Array): Float32Array {
    return cached(this.tokenInputs, item, this.cacheItems, () =>
      projectTokenInput(this.weights, embedding),
    );
  }

  invalidateAll(): void {
    this.tokenInputs.clear();
    this.itemVectors.clear();
  }

  /** Drops the cached projections of items whose embedding changed. */
  invalidate(items: Iterable<string>): void {
    for (const item of items) {
      this.tokenInputs.delete(item);
      this.itemVectors.delete(item);
    }
  }
}

function cached(
  map: Map<string, Float32Array>,
  key: string,
  max: number,
  make: () => Float32Array,
): Float32Array {
  const hit = map.get(key);
  if (hit) return hit;
  const value = make();
  if (map.size >= max) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
  map.set(key, value);
  return value;
}
