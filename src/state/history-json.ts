/**
 * The history's JSON written as bytes, straight into reusable memory: what a flush sends of
 * each history it writes (codec.ts, encodeStateWrite), about 9 KB at 200 entries.
 *
 * Built as strings, an entry took about 0.3 µs: formatting it, concatenating it to the rest,
 * testing it for characters beyond ASCII to count its bytes, then copying the whole text into
 * the write's buffer. A flush of 5,000 states with full histories spent 317 of its 700 ms there
 * (docs/benchmarks.md, round of 2026-12-04 07:00), and the strings were garbage at once. Here an
 * entry is its item's cached prefix (`{"item":"i1","ts":`), the timestamp's digits and its
 * type's cached suffix (`,"type":"click"}`), each copied once; every other shape goes through
 * JSON.stringify. The bytes are exactly JSON.stringify's UTF-8 (tested).
 *
 * The same memory holds the write's few other pieces that must be copied out of the state
 * (`float64LE`), so that one reset frees all of a chunk's pieces.
 */

import { digitCount, writeDigits } from '../encoding/decimal.js';
import type { HistoryEntry } from './user-state.js';

/** One piece of JSON text: a view of the writer's memory, valid until its next `reset`. */
export type JsonBytes = Uint8Array;

const BLOCK_BYTES = 1 << 20;
/** Items (and types) whose text is cached; the cache starts again when it is full. */
const MAX_CACHED_ITEMS = 100_000;
const HISTORY_KEYS = ['item', 'ts', 'type', 'value', 'id'];

export class HistoryJsonWriter {
  private block: Buffer = Buffer.alloc(0);
  /** Blocks filled since the last reset, and reused after it. */
  private readonly used: Buffer[] = [];
  private readonly spare: Buffer[] = [];
  private at = 0;
  /** Where the piece being written starts in `block`. */
  private start = 0;
  private readonly itemPrefixes = new Map<string, Buffer>();
  private readonly typeSuffixes = new Map<string, Buffer>();

  /** `blockBytes`: the memory taken at a time (a flush's writer reuses it; a one-off one not). */
  constructor(private readonly blockBytes = BLOCK_BYTES) {}

  /** Makes every piece written so far invalid, and their memory free for the next ones. */
  reset(): void {
    this.spare.push(...this.used);
    this.used.length = 0;
    this.at = 0;
    this.start = 0;
  }

  /** Starts a piece; `text` and `entry` append to it, `end` returns it. */
  begin(): void {
    this.start = this.at;
  }

  /** Appends ASCII text (brackets, commas). */
  ascii(text: string): number {
    this.room(text.length);
    for (let k = 0; k < text.length; k++) this.block[this.at++] = text.charCodeAt(k);
    return text.length;
  }

  /** Appends JSON.stringify(entry) as UTF-8; returns its bytes. */
  entry(entry: HistoryEntry): number {
    const { item, ts, type } = entry;
    if (!Number.isSafeInteger(ts) || ts < 0 || !isHistoryShape(entry)) {
      return this.utf8(JSON.stringify(entry));
    }
    if (entry.value === undefined && entry.id === undefined) {
      return this.plainEntry(this.itemPrefix(item), ts, this.typeSuffix(type));
    }
    const bytes = this.copy(this.itemPrefix(item)) + this.digits(ts);
    let rest = `,"type":${JSON.stringify(type)}`;
    if (entry.value !== undefined) rest += `,"value":${JSON.stringify(entry.value)}`;
    if (entry.id !== undefined) rest += `,"id":${JSON.stringify(entry.id)}`;
    return bytes + this.utf8(rest + '}');
  }

  /** An entry of item, ts and type alone, in one go: room made once for its three parts. */
  private plainEntry(prefix: Buffer, ts: number, suffix: Buffer): number {
    const digits = digitCount(ts);
    const length = prefix.length + digits + suffix.length;
    this.room(length);
    const at = this.at;
    this.block.set(prefix, at);
    writeDigits(this.block, at + prefix.length + digits, ts);
    this.block.set(suffix, at + prefix.length + digits);
    this.at = at + length;
    return length;
  }

  /**
   * The little-endian bytes of `values` as a piece of their own. The state's small float64
   * arrays (its scales and weights) go this way rather than as views of their memory: V8 keeps
   * arrays that small inside the heap, and the first view of one moves it out, which cost 5 µs
   * a time in the engine at a flush's first write of each state (50 ms for 5,000 states).
   */
  float64LE(values: Float64Array): JsonBytes {
    this.begin();
    this.room(8 * values.length);
    for (const value of values) this.at = this.block.writeDoubleLE(value, this.at);
    return this.end();
  }

  /** The piece since `begin`. */
  end(): JsonBytes {
    return this.block.subarray(this.start, this.at);
  }

  /** `{"item":<item>,"ts":`, the text before an entry's timestamp. */
  private itemPrefix(item: string): Buffer {
    return cachedBytes(this.itemPrefixes, item, () => `{"item":${JSON.stringify(item)},"ts":`);
  }

  /** `,"type":<type>}`, the text after the timestamp of an entry without value or id. */
  private typeSuffix(type: string): Buffer {
    return cachedBytes(this.typeSuffixes, type, () => `,"type":${JSON.stringify(type)}}`);
  }

  private copy(bytes: Buffer): number {
    this.room(bytes.length);
    this.block.set(bytes, this.at);
    this.at += bytes.length;
    return bytes.length;
  }

  private utf8(text: string): number {
    const length = Buffer.byteLength(text);
    this.room(length);
    this.at += this.block.write(text, this.at, length, 'utf8');
    return length;
  }

  /** A non-negative safe integer in decimal, as JSON.stringify gives it. */
  private digits(value: number): number {
    const count = digitCount(value);
    this.room(count);
    writeDigits(this.block, this.at + count, value);
    this.at += count;
    return count;
  }

  /**
   * Makes room for `bytes` more in the current block. A piece must stay in one block, so when
   * it does not fit, the piece so far moves to a block large enough for twice its size.
   */
  private room(bytes: number): void {
    if (this.at + bytes <= this.block.length) return;
    const piece = this.at - this.start;
    const needed = 2 * (piece + bytes);
    const next = this.takeBlock(needed);
    this.block.copy(next, 0, this.start, this.at);
    this.used.push(this.block);
    this.block = next;
    this.start = 0;
    this.at = piece;
  }

  private takeBlock(bytes: number): Buffer {
    const index = this.spare.findIndex((block) => block.length >= bytes);
    if (index >= 0) return this.spare.splice(index, 1)[0]!;
    return Buffer.allocUnsafeSlow(Math.max(this.blockBytes, bytes));
  }
}

/** The UTF-8 of `text()` for `key`, made once; the cache starts again when it is full. */
function cachedBytes(cache: Map<string, Buffer>, key: string, text: () => string): Buffer {
  let bytes = cache.get(key);
  if (bytes) return bytes;
  if (cache.size >= MAX_CACHED_ITEMS) cache.clear();
  bytes = Buffer.from(text());
  cache.set(key, bytes);
  return bytes;
}

/**
 * Keys in the order the worker makes them (item, ts, type, then value and id when present),
 * no others: what JSON.stringify would write in that order. Decoded entries keep whatever the
 * stored JSON had, and go to JSON.stringify itself.
 */
function isHistoryShape(entry: HistoryEntry): boolean {
  let next = 0;
  for (const key in entry) {
    while (next < HISTORY_KEYS.length && HISTORY_KEYS[next] !== key) next++;
    if (next === HISTORY_KEYS.length) return false;
    next++;
  }
  return true;
}
