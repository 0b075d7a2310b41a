/**
 * The in-process embedding cache in front of the Redis catalogue. Entries are dropped when the
 * catalogue's change stream names them (see ItemStore.changesSince); when a worker has fallen
 * further behind than the stream reaches, it drops everything. Eviction is first-in first-out
 * down to `maxItems`, at the start of each look-up (one look-up's fetches may go over until the
 * next): cheaper than LRU bookkeeping on the hot path, and the hot items come straight back.
 */
import type { CatalogMeta, ItemStore } from './store.js';
import type { Gramian } from '../features/gramian.js';

export interface CacheCounters {
  hit(count: number): void;
  miss(count: number): void;
}

export interface ResolvedItems {
  /** By position in the list given. */
  readonly embeddings: readonly (Float32Array | undefined)[];
  /**
   * The listed names, each as the cache holds it where it does: one string per item however
   * many batches name it, for what outlives the batch (a worker's histories and held batches).
   */
  readonly names: readonly string[];
  readonly resolve: (item: string) => Float32Array | undefined;
}

/** An embedding and its item's name, the one string the cache keeps for it. */
interface CachedItem {
  readonly name: string;
  readonly embedding: Float32Array;
}

export class EmbeddingCache {
  private readonly entries = new Map<string, CachedItem>();
  private version = -1;
  private gramian: Gramian | null = null;
  private readonly listeners: ((changed: string[] | null) => void)[] = [];
  meta: CatalogMeta | null = null;

  constructor(
    private readonly store: ItemStore,
    private readonly maxItems: number,
    private readonly counters: CacheCounters,
    private readonly loadGramian: boolean,
  ) {}

  get catalogVersion(): number {
    return this.version;
  }

  /** The Gramian of the version last synchronised, when the cache was asked to keep it. */
  get currentGramian(): Gramian | null {
    return this.gramian;
  }

  /** Calls `listener` with the changed items (null: possibly all) whenever the catalogue moves. */
  onChange(listener: (changed: string[] | null) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Brings the cache up to `version` (read by the caller, often in a batch's pipeline), or to
   * whichever later version the catalogue has reached by then.
   *
   * Meta and Gramian come from one snapshot, so they never mix two versions. The snapshot is
   * taken before the change stream is read: the stream then names every item changed since the
   * cache's version up to the snapshot's and perhaps beyond, and dropping a few entries too many
   * only costs a look-up, whereas reading the stream first would keep the entries changed between
   * the two reads while claiming the newer version.
   */
  async sync(version: number): Promise<void> {
    if (version === this.version) return;

    const snapshot = await this.store.readSnapshot(this.loadGramian);
    const changed = this.version < 0 ? null : await this.store.changesSince(this.version);
    if (changed === null) this.entries.clear();
    else for (const item of changed) this.entries.delete(item);
    for (const listener of this.listeners) listener(changed);

    this.meta = snapshot?.meta ?? null;
    this.gramian = snapshot?.gramian ?? null;
    this.version = this.meta?.version ?? version;
  }

  /**
   * The embeddings of the listed items that exist, from the cache or, for the rest, from Redis
   * in one round trip. The map is the caller's own: eviction cannot take an entry from it. Hits
   * and misses count one per distinct item.
   */
  async lookup(items: Iterable<string>): Promise<Map<string, Float32Array>> {
    const distinct = [...new Set(items)];
    const resolve = await this.resolver(distinct);
    const found = new Map<string, Float32Array>();
    for (const item of distinct) {
      const embedding = resolve(item);
      if (embedding) found.set(item, embedding);
    }
    return found;
  }

  /**
   * The worker's look-up for one batch: `items` holds the batch's items (the worker lists each
   * once, then those of its users' waiting events; repeats are allowed). The ones not cached
   * are fetched in one round trip; the returned function then answers for every item of the
   * list, and stays valid until the next call of this method, of `resolveList` or of `lookup`
   * (entries are evicted at the start of a call, never during one). Hits count one per listed
   * item found in process, misses one per distinct item fetched.
   */
  async resolver(items: readonly string[]): Promise<(item: string) => Float32Array | undefined> {
    return (await this.resolveList(items)).resolve;
  }

  /**
   * As `resolver`, and also each listed item's embedding in the list's order (undefined where
   * the catalogue has none): one map probe per item, and none again for a caller that goes
   * through the list rather than the names.
   */
  async resolveList(items: readonly string[]): Promise<ResolvedItems> {
    this.evictExcess();
    const embeddings = new Array<Float32Array | undefined>(items.length);
    const names = items.slice();
    let missing: Set<string> | null = null;
    let hits = 0;
    for (let k = 0; k < items.length; k++) {
      const cached = this.entries.get(items[k]!);
      if (cached) {
        embeddings[k] = cached.embedding;
        names[k] = cached.name;
        hits++;
      } else (missing ??= new Set()).add(items[k]!);
    }
    this.counters.hit(hits);
    if (missing) this.counters.miss(missing.size);
    const cachedOnly = (item: string) => this.entries.get(item)?.embedding;
    if (!missing || !this.meta) return { embeddings, names, resolve: cachedOnly };

    const fetched = await this.store.getMany([...missing], this.meta.dim);
    if (this.maxItems > 0) {
      for (const [name, embedding] of fetched) this.entries.set(name, { name, embedding });
    }
    for (let k = 0; k < items.length; k++) embeddings[k] ??= fetched.get(items[k]!);
    return { embeddings, names, resolve: (item) => cachedOnly(item) ?? fetched.get(item) };
  }

  /** First in, first out, down to `maxItems` (the last call's fetches may have gone over). */
  private evictExcess(): void {
    let excess = this.entries.size - this.maxItems;
    for (const oldest of this.entries.keys()) {
      if (excess <= 0) return;
      this.entries.delete(oldest);
      excess--;
    }
  }
}
