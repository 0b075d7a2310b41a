/**
 * The item catalogue in Redis: the embeddings as stored (centred and normalised if so
 * configured), the catalogue meta (dimension, transform, mean, version) and the Gramian of
 * method 2. Every change goes through one Lua script that checks the catalogue version it was
 * computed from, so two writers never both apply a rank-one update: the loser re-reads and
 * recomputes. Each change is also appended to a capped stream, from which workers learn which
 * cached embeddings to drop.
 */
import type { Redis } from 'ioredis';
import { AffinityError } from '../errors.js';
import type { Gramian } from '../features/gramian.js';
import {
  computeGramian,
  createGramian,
  decodeGramian,
  encodeGramian,
  replaceItem,
} from '../features/gramian.js';
import { decodeFloat32LE, float32Bytes } from '../encoding/float32.js';
import type { KeySpace } from '../state/keys.js';
import {
  catalogChangesKey,
  catalogGramianKey,
  catalogItemsKey,
  catalogMetaKey,
} from '../state/keys.js';
import { transformEmbedding } from './transform.js';

export const CATALOG_FORMAT_VERSION = 1;

/** How many change records the stream keeps; a worker further behind drops its whole cache. */
const CHANGES_MAX_LENGTH = 100_000;

export interface CatalogMeta {
  readonly dim: number;
  readonly centered: boolean;
  readonly normalized: boolean;
  readonly mean: Float32Array | null;
  readonly version: number;
  readonly count: number;
}

/** The catalogue meta and the Gramian of the same version (null when not asked for). */
export interface CatalogSnapshot {
  readonly meta: CatalogMeta;
  readonly gramian: Gramian | null;
}

/** One change from the `item-embeddings` topic; a null embedding removes the item. */
export interface ItemChange {
  readonly item: string;
  /** As received, before centring and normalisation. */
  readonly embedding: Float32Array | null;
}

/**
 * KEYS: meta, items, Gramian, change stream. ARGV: expected version, change count, encoded
 * Gramian, stream cap, then per change the item id, its bytes as read (or '') and its new bytes
 * (or '' to remove). Returns -1 when the version or an item moved since they were read. A change
 * whose new bytes equal the current ones writes nothing and appends no stream record; when every
 * change is such a no-op the version stays as it is and is returned.
 */
const APPLY_CHANGES_LUA = `
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if version ~= tonumber(ARGV[1]) then return -1 end
local count = tonumber(ARGV[2])
local changed = 0
for i = 0, count - 1 do
  local id = ARGV[5 + i * 3]
  local expected = ARGV[6 + i * 3]
  local current = redis.call('HGET', KEYS[2], id) or ''
  if current ~= expected then return -1 end
  if ARGV[7 + i * 3] ~= expected then changed = changed + 1 end
end
if changed == 0 then return version end
for i = 0, count - 1 do
  local id = ARGV[5 + i * 3]
  local value = ARGV[7 + i * 3]
  if value ~= ARGV[6 + i * 3] then
    if value == '' then
      redis.call('HDEL', KEYS[2], id)
    else
      redis.call('HSET', KEYS[2], id, value)
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'version', version + 1, 'item', id)
  end
end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[1], 'version', version + 1, 'count', redis.call('HLEN', KEYS[2]))
return version + 1
`;

interface CatalogCommands {
  affinityApplyItemChanges(...args: (string | Buffer | number)[]): Promise<number>;
}

export class ItemStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
  ) {
    if (!('affinityApplyItemChanges' in redis)) {
      redis.defineCommand('affinityApplyItemChanges', { numberOfKeys: 4, lua: APPLY_CHANGES_LUA });
    }
  }

  async readMeta(): Promise<CatalogMeta | null> {
    const fields = await this.redis.hgetallBuffer(catalogMetaKey(this.keys));
    return decodeMeta(fields);
  }

  async requireMeta(): Promise<CatalogMeta> {
    const meta = await this.readMeta();
    if (!meta) {
      throw new AffinityError(
        'CATALOGUE_MISSING',
        'no item catalogue in Redis: run `affinity items load PATH` or produce to the items topic',
      );
    }
    return meta;
  }

  async readVersion(): Promise<number> {
    return Number((await this.redis.hget(catalogMetaKey(this.keys), 'version')) ?? 0);
  }

  /**
   * The embeddings of `items` that exist, as views of one array: allocated one by one, the
   * arrays cost 7 µs each (10,000 took 73 ms of a worker's first batch), most of it the
   * allocation of a backing store outside the heap.
   */
  async getMany(items: readonly string[], dim: number): Promise<Map<string, Float32Array>> {
    const found = new Map<string, Float32Array>();
    if (items.length === 0) return found;
    const values = await this.redis.hmgetBuffer(catalogItemsKey(this.keys), ...items);

    const valid = (bytes: Buffer | null): bytes is Buffer => bytes?.length === dim * 4;
    const block = new Float32Array(values.filter(valid).length * dim);
    let at = 0;
    items.forEach((item, index) => {
      const bytes = values[index]!;
      if (!valid(bytes)) return;
      found.set(item, decodeFloat32LE(bytes, block.subarray(at, at + dim)));
      at += dim;
    });
    return found;
  }

  /**
   * The meta and, when `withGramian`, the Gramian, read in one MULTI so that both describe the
   * same catalogue version: every write changes them together (one script, or one MULTI), and
   * a transaction's reads see no other client's commands in between. Null without a catalogue.
   */
  async readSnapshot(withGramian: boolean): Promise<CatalogSnapshot | null> {
    if (!withGramian) {
      const meta = await this.readMeta();
      return meta ? { meta, gramian: null } : null;
    }
    const replies = await this.redis
      .multi()
      .hgetallBuffer(catalogMetaKey(this.keys))
      .getBuffer(catalogGramianKey(this.keys))
      .exec();
    const [metaReply, gramianReply] = replies ?? [];
    const fields = transactionValue(metaReply) as Record<string, Buffer>;
    const bytes = transactionValue(gramianReply) as Buffer | null;
    const meta = decodeMeta(fields);
    if (!meta) return null;
    return { meta, gramian: bytes ? decodeGramian(bytes, meta.dim) : createGramian(meta.dim) };
  }

  async readGramian(dim: number): Promise<Gramian> {
    const bytes = await this.redis.getBuffer(catalogGramianKey(this.keys));
    return bytes ? decodeGramian(bytes, dim) : createGramian(dim);
  }

  /** Item ids changed after `sinceVersion`, or null when the stream no longer reaches back. */
  async changesSince(sinceVersion: number): Promise<string[] | null> {
    const changed: string[] = [];
    let end = '+';
    for (;;) {
      const page = await this.redis.xrevrange(catalogChangesKey(this.keys), end, '-', 'COUNT', 500);
      for (const [, fields] of page) {
        if (versionOf(fields) <= sinceVersion) return changed;
        changed.push(itemOf(fields));
      }
      const last = page[page.length - 1];
      if (page.length < 500 || !last) {
        const oldest = last ? versionOf(last[1]) : Number.POSITIVE_INFINITY;
        return oldest === sinceVersion + 1 ? changed : null;
      }
      end = `(${last[0]}`;
    }
  }

  /**
   * Replaces the whole catalogue: writes every embedding (already transformed), the meta and a
   * Gramian recomputed from scratch, and marks every cached embedding stale.
   */
  async replaceAll(
    ids: readonly string[],
    vectors: Float32Array,
    meta: Omit<CatalogMeta, 'version' | 'count'>,
  ): Promise<CatalogMeta> {
    const dim = meta.dim;
    const previousVersion = await this.readVersion();
    await this.redis.del(catalogItemsKey(this.keys));
    await this.writeItemsInChunks(ids, vectors, dim);

    const rows = function* (): Generator<Float32Array> {
      for (let row = 0; row < ids.length; row++) yield vectors.subarray(row * dim, (row + 1) * dim);
    };
    const gramian = computeGramian(rows(), dim);
    const version = previousVersion + 1;
    await this.redis
      .multi()
      .set(catalogGramianKey(this.keys), encodeGramian(gramian))
      .del(catalogChangesKey(this.keys))
      .hset(catalogMetaKey(this.keys), encodeMeta({ ...meta, version, count: ids.length }))
      .exec();
    return { ...meta, version, count: ids.length };
  }

  private async writeItemsInChunks(ids: readonly string[], vectors: Float32Array, dim: number) {
    const chunkSize = 1_000;
    for (let start = 0; start < ids.length; start += chunkSize) {
      const pipeline = this.redis.pipeline();
      const end = Math.min(ids.length, start + chunkSize);
      const args: (string | Buffer)[] = [];
      for (let row = start; row < end; row++) {
        args.push(ids[row]!, float32Bytes(vectors.subarray(row * dim, (row + 1) * dim)));
      }
      pipeline.hset(catalogItemsKey(this.keys), ...args);
      await pipeline.exec();
    }
  }

  /**
   * Applies topic changes with their rank-one Gramian updates, atomically and exactly once
   * across writers. Creates the catalogue meta from the first embedding when none exists.
   * Returns the new version. A change that leaves an item as it is (the same embedding again, or
   * the removal of an absent item) is a no-op: it touches neither the Gramian nor the change
   * stream, and when every change is one the version is not bumped and is returned as it was.
   */
  async applyChanges(changes: readonly ItemChange[], createNormalized: boolean): Promise<number> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const meta = (await this.readMeta()) ?? initialMeta(changes, createNormalized);
      if (!meta) return 0;
      const result = await this.tryApply(changes, meta);
      if (result >= 0) return result;
    }
    throw new AffinityError('STATE_CONFLICT', 'item changes lost the version race 10 times', {
      retriable: true,
    });
  }

  private async tryApply(changes: readonly ItemChange[], meta: CatalogMeta): Promise<number> {
    if (meta.version === 0) await this.redis.hset(catalogMetaKey(this.keys), encodeMeta(meta));
    const ids = [...new Set(changes.map((change) => change.item))];
    const currentBytes = await this.redis.hmgetBuffer(catalogItemsKey(this.keys), ...ids);
    const gramian = await this.readGramian(meta.dim);

    const next = new Map<string, Float32Array | null>();
    for (const change of changes) next.set(change.item, storedForm(change, meta));
    const args: (string | Buffer | number)[] = [];
    ids.forEach((id, index) => {
      const bytes = currentBytes[index] ?? null;
      const after = next.get(id) ?? null;
      const afterBytes = after ? float32Bytes(after) : null;
      // A no-op must leave G bit for bit: -e e^T + e e^T would add rounding.
      if (!sameBytes(bytes, afterBytes)) {
        replaceItem(gramian, bytes ? decodeFloat32LE(bytes) : null, after);
      }
      args.push(id, bytes ?? '', afterBytes ?? '');
    });

    const keys = [
      catalogMetaKey(this.keys),
      catalogItemsKey(this.keys),
      catalogGramianKey(this.keys),
      catalogChangesKey(this.keys),
    ];
    const header = [meta.version, ids.length, encodeGramian(gramian), CHANGES_MAX_LENGTH];
    const commands = this.redis as unknown as CatalogCommands;
    return commands.affinityApplyItemChanges(...keys, ...header, ...args);
  }
}

function sameBytes(a: Buffer | null, b: Buffer | null): boolean {
  if (a === null || b === null) return a === b;
  return a.equals(b);
}

function storedForm(change: ItemChange, meta: CatalogMeta): Float32Array | null {
  if (!change.embedding) return null;
  if (change.embedding.length !== meta.dim) {
    throw new AffinityError(
      'CATALOGUE_MISMATCH',
      `item "${change.item}" has dimension ${change.embedding.length}, the catalogue ${meta.dim}`,
    );
  }
  return transformEmbedding(
    change.embedding,
    { mean: meta.mean, normalize: meta.normalized },
    change.item,
  );
}

function initialMeta(changes: readonly ItemChange[], normalized: boolean): CatalogMeta | null {
  const first = changes.find((change) => change.embedding !== null)?.embedding;
  if (!first) return null;
  return { dim: first.length, centered: false, normalized, mean: null, version: 0, count: 0 };
}

function encodeMeta(meta: CatalogMeta): Record<string, string | Buffer> {
  const fields: Record<string, string | Buffer> = {
    v: String(CATALOG_FORMAT_VERSION),
    dim: String(meta.dim),
    centered: meta.centered ? '1' : '0',
    normalized: meta.normalized ? '1' : '0',
    version: String(meta.version),
    count: String(meta.count),
  };
  if (meta.mean) fields['mean'] = float32Bytes(meta.mean);
  return fields;
}

function decodeMeta(fields: Record<string, Buffer>): CatalogMeta | null {
  if (!fields['dim']) return null;
  const dim = Number(fields['dim'].toString());
  const mean = fields['mean'] ? decodeFloat32LE(fields['mean']) : null;
  return {
    dim,
    centered: fields['centered']?.toString() === '1',
    normalized: fields['normalized']?.toString() === '1',
    mean,
    version: Number(fields['version']?.toString() ?? 0),
    count: Number(fields['count']?.toString() ?? 0),
  };
}

/** The value of one reply of a MULTI; exec() gives no replies when the transaction aborted. */
function transactionValue(reply: [Error | null, unknown] | undefined): unknown {
  if (!reply) {
    throw new AffinityError('REDIS_UNAVAILABLE', 'catalogue read: transaction returned no reply', {
      retriable: true,
    });
  }
  const [err, value] = reply;
  if (err) {
    throw new AffinityError('REDIS_UNAVAILABLE', 'catalogue read failed', {
      cause: err,
      retriable: true,
    });
  }
  return value;
}

function versionOf(fields: string[]): number {
  return Number(fields[fields.indexOf('version') + 1]);
}

function itemOf(fields: string[]): string {
  return fields[fields.indexOf('item') + 1]!;
}
