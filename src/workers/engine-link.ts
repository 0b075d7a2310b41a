/**
 * What the events worker's two threads say to each other. The main thread runs kafkajs
 * (fetching and decoding record batches), decodes and validates the events, dead-letters the bad
 * ones and commits; the engine thread (workers/engine-thread.ts) runs the state path: apply,
 * flush, the dual solves. Each side works while the other does, which is where the split pays:
 * the fetches and the JSON no longer wait for the apply, nor the apply for them.
 *
 * A batch's valid events cross as columns (engine-link's EventColumns): the batch's distinct
 * users and items, and typed arrays (transferred) of what each event has, rather than thousands
 * of small objects to clone. The engine answers each batch once it is applied, and reports each
 * confirmed flush with the Kafka positions it covers, which the main thread then commits.
 * Metrics and log lines recorded on the engine ride along with its messages and are replayed on
 * the main thread's registry and logger, so /metrics and the logs look as they would with one
 * thread.
 */
import { AffinityError } from '../errors.js';
import type { Logger } from '../ops/logger.js';
import type { CounterLike, HistogramLike, StateMetrics, WorkerMetrics } from '../ops/metrics.js';
import { STATE_COUNTERS, STATE_HISTOGRAMS, STATE_HISTOGRAM_BUCKETS } from '../ops/metrics.js';
import { bucketOf } from '../ops/counted-histogram.js';
import type { InteractionEvent, Signals } from '../events/types.js';
import type { SequencedEvent } from '../state/user-state.js';
import { eventOf } from '../stream/decode.js';
import type { EventScanner } from '../stream/scan.js';

/**
 * A batch's valid events, field by field; `types` index the configured signal types. Users and
 * items go as codes into lists of the batch's distinct ones: each id crosses to the engine (and
 * is made there again) once per batch rather than once per event, the engine's events of one
 * user or item share one string (whose hash V8 then computes once), and the engine groups the
 * events by user without hashing a string per event.
 */
export interface EventColumns {
  /** The batch's distinct users, in order of their first event. */
  readonly userNames: readonly string[];
  /** Each event's user, as its index in userNames. */
  readonly users: Uint32Array;
  readonly itemNames: readonly string[];
  readonly items: Uint32Array;
  readonly ts: Float64Array;
  readonly types: Uint16Array;
  /** NaN where the event has no value. */
  readonly values: Float64Array;
  /** Null when no event of the batch has an id. */
  readonly ids: readonly (string | null)[] | null;
  readonly offsets: Float64Array;
}

export interface BatchMessage {
  readonly kind: 'batch';
  readonly seq: number;
  readonly partition: number;
  /** The offset after the batch's last message, valid or not: where a commit may go. */
  readonly nextOffset: string;
  /** The batch ends at its partition's high watermark: nothing more was there to read. */
  readonly caughtUp: boolean;
  readonly events: EventColumns;
}

export interface FlushRequest {
  readonly kind: 'flush';
  readonly seq: number;
  /** Drop every held state afterwards (a rebalance may move the partitions). */
  readonly clear: boolean;
}

export interface StopRequest {
  readonly kind: 'stop';
  readonly seq: number;
}

export type ToEngine = BatchMessage | FlushRequest | StopRequest;

/** Partition and the next offset to commit, as kafkajs takes it. */
export type Position = readonly [partition: number, offset: string];

export type FromEngine =
  | { readonly kind: 'ready'; readonly metrics: MetricDelta | null }
  | { readonly kind: 'applied'; readonly seq: number; readonly metrics: MetricDelta | null }
  | {
      readonly kind: 'flushed';
      readonly positions: readonly Position[];
      readonly metrics: MetricDelta | null;
    }
  | {
      readonly kind: 'reply';
      readonly seq: number;
      readonly error: EngineError | null;
      readonly metrics: MetricDelta | null;
    }
  | { readonly kind: 'metrics'; readonly metrics: MetricDelta | null }
  | { readonly kind: 'log'; readonly line: string }
  | { readonly kind: 'failed'; readonly error: EngineError; readonly metrics: MetricDelta | null };

export interface EngineError {
  readonly message: string;
  readonly code?: string;
  readonly stack?: string;
}

export function describeError(err: unknown): EngineError {
  if (!(err instanceof Error)) return { message: String(err) };
  const code = (err as { code?: unknown }).code;
  return {
    message: err.message,
    ...(typeof code === 'string' ? { code } : {}),
    ...(err.stack === undefined ? {} : { stack: err.stack }),
  };
}

/**
 * The configured event types as both threads number them in the `types` column: in the
 * signals configuration's order, which each thread reads from the same config.
 */
export function signalTypes(signals: Signals): {
  readonly names: readonly string[];
  readonly index: ReadonlyMap<string, number>;
} {
  const names = [...signals.keys()];
  return { names, index: new Map(names.map((type, i) => [type, i])) };
}

/** Builds a batch's columns, event by event, on the main thread. */
export class ColumnsBuilder {
  private readonly users = new Dictionary();
  private readonly items = new Dictionary();
  private readonly userCodes: Uint32Array;
  private readonly itemCodes: Uint32Array;
  private readonly ts: Float64Array;
  private readonly types: Uint16Array;
  private readonly values: Float64Array;
  private ids: (string | null)[] | null = null;
  private readonly offsets: Float64Array;
  private count = 0;

  constructor(
    capacity: number,
    private readonly typeIndex: ReadonlyMap<string, number>,
  ) {
    this.userCodes = new Uint32Array(capacity);
    this.itemCodes = new Uint32Array(capacity);
    this.ts = new Float64Array(capacity);
    this.types = new Uint16Array(capacity);
    this.values = new Float64Array(capacity);
    this.offsets = new Float64Array(capacity);
  }

  /** Events added so far. */
  get size(): number {
    return this.count;
  }

  /** Events that can still be added. */
  get room(): number {
    return this.offsets.length - this.count;
  }

  add(event: InteractionEvent, offset: number): void {
    const n = this.count++;
    this.userCodes[n] = this.users.code(event.user);
    this.itemCodes[n] = this.items.code(event.item);
    this.ts[n] = event.ts;
    this.types[n] = this.typeIndex.get(event.type)!;
    this.values[n] = event.value ?? NaN;
    this.addId(n, event.id);
    this.offsets[n] = offset;
  }

  /** The event `scanner` just read from `bytes` (stream/scan.ts): add() without the strings. */
  addScanned(bytes: Buffer, scanner: EventScanner, offset: number): void {
    const n = this.count++;
    this.userCodes[n] = this.users.codeOf(bytes, scanner.userStart, scanner.userEnd);
    this.itemCodes[n] = this.items.codeOf(bytes, scanner.itemStart, scanner.itemEnd);
    this.ts[n] = scanner.ts;
    this.types[n] = scanner.type;
    this.values[n] = scanner.value;
    const { idStart, idEnd } = scanner;
    this.addId(n, idStart < 0 ? undefined : bytes.toString('latin1', idStart, idEnd));
    this.offsets[n] = offset;
  }

  private addId(n: number, id: string | undefined): void {
    if (id !== undefined) {
      this.ids ??= new Array<string | null>(n).fill(null);
      this.ids[n] = id;
    } else if (this.ids) this.ids.push(null);
  }

  /** The columns and the buffers to transfer with them. */
  build(): { columns: EventColumns; transfer: ArrayBuffer[] } {
    const n = this.count;
    const users = this.userCodes.slice(0, n);
    const items = this.itemCodes.slice(0, n);
    const ts = this.ts.slice(0, n);
    const types = this.types.slice(0, n);
    const values = this.values.slice(0, n);
    const offsets = this.offsets.slice(0, n);
    const names = { userNames: this.users.names, itemNames: this.items.names };
    const columns = { ...names, users, items, ts, types, values, offsets, ids: this.ids };
    const transfer = [users, items, ts, types, values, offsets].map(
      (column) => column.buffer as ArrayBuffer,
    );
    return { columns, transfer };
  }
}

/**
 * Numbers each distinct string in order of first appearance, looked up by its UTF-8 bytes: the
 * scanner's events give bytes, and hashing them here (FNV-1a, open addressing with linear
 * probing) makes a string only for an id the batch has not seen yet, instead of one per event
 * for a Map to hash again.
 */
class Dictionary {
  readonly names: string[] = [];
  /** Each name's bytes, one after another; name `c` ends at ends[c]. */
  private bytes = Buffer.allocUnsafe(4_096);
  private ends = new Int32Array(256);
  private hashes = new Int32Array(256);
  /** Codes + 1 by hash slot; 0 is an empty slot. Never more than half full. */
  private slots = new Int32Array(1_024);
  /** A string's bytes while it is looked up. */
  private scratch = Buffer.allocUnsafe(256);

  code(name: string): number {
    const length = Buffer.byteLength(name, 'utf8');
    if (length > this.scratch.length) this.scratch = Buffer.allocUnsafe(2 * length);
    this.scratch.write(name, 'utf8');
    return this.codeOf(this.scratch, 0, length, name);
  }

  /** The code of the name spelled by bytes[start, end); `name` is that string when known. */
  codeOf(bytes: Buffer, start: number, end: number, name?: string): number {
    const hash = fnv1a(bytes, start, end);
    const mask = this.slots.length - 1;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const code = this.slots[slot]! - 1;
      if (code < 0) return this.insert(slot, hash, bytes, start, end, name);
      if (this.hashes[code] === hash && this.holds(code, bytes, start, end)) return code;
    }
  }

  private holds(code: number, bytes: Buffer, start: number, end: number): boolean {
    const from = code === 0 ? 0 : this.ends[code - 1]!;
    if (this.ends[code]! - from !== end - start) return false;
    for (let i = start, j = from; i < end; i++, j++) {
      if (bytes[i] !== this.bytes[j]) return false;
    }
    return true;
  }

  private insert(
    slot: number,
    hash: number,
    bytes: Buffer,
    start: number,
    end: number,
    name: string | undefined,
  ): number {
    const code = this.names.length;
    const from = code === 0 ? 0 : this.ends[code - 1]!;
    this.reserve(code, from + end - start);
    bytes.copy(this.bytes, from, start, end);
    this.ends[code] = from + end - start;
    this.hashes[code] = hash;
    // Bytes from the scanner are ASCII, so latin1 gives the same string as UTF-8, faster.
    this.names.push(name ?? bytes.toString('latin1', start, end));
    this.slots[slot] = code + 1;
    if (2 * this.names.length > this.slots.length) this.rehash();
    return code;
  }

  /** Room for name `code` and `byteEnd` bytes of names. */
  private reserve(code: number, byteEnd: number): void {
    if (byteEnd > this.bytes.length) {
      const bytes = Buffer.allocUnsafe(2 * byteEnd);
      this.bytes.copy(bytes);
      this.bytes = bytes;
    }
    if (code < this.ends.length) return;
    this.ends = grown(this.ends);
    this.hashes = grown(this.hashes);
  }

  private rehash(): void {
    const slots = new Int32Array(2 * this.slots.length);
    const mask = slots.length - 1;
    for (let code = 0; code < this.names.length; code++) {
      let slot = this.hashes[code]! & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = code + 1;
    }
    this.slots = slots;
  }
}

/** 32-bit FNV-1a of bytes[start, end) (Fowler, Noll and Vo; IETF draft-eastlake-fnv). */
function fnv1a(bytes: Buffer, start: number, end: number): number {
  let hash = 0x811c9dc5 | 0;
  for (let i = start; i < end; i++) hash = Math.imul(hash ^ bytes[i]!, 0x01000193);
  return hash;
}

function grown(array: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> {
  const bigger = new Int32Array(2 * array.length);
  bigger.set(array);
  return bigger;
}

/**
 * The engine's side: event `i` of the columns again, with its position, and its item's
 * embedding when `embeddings` gives those of the batch's items (by item code).
 */
export function eventAt(
  columns: EventColumns,
  i: number,
  partition: number,
  typeNames: readonly string[],
  embeddings?: readonly (Float32Array | null)[],
): SequencedEvent {
  const value = columns.values[i]!;
  const event = eventOf(
    // decodeEvent's own constructor, so both give the very same events.
    columns.userNames[columns.users[i]!]!,
    columns.itemNames[columns.items[i]!]!,
    columns.ts[i]!,
    typeNames[columns.types[i]!]!,
    Number.isNaN(value) ? undefined : value,
    columns.ids?.[i] ?? undefined,
  );
  const position = { partition, offset: columns.offsets[i]! };
  if (!embeddings) return { event, position };
  return { event, position, embedding: embeddings[columns.items[i]!]! };
}

/** Connection failures as Node reports them (`err.code`). */
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
]);

/** ioredis' errors for a connection that is down. */
const CONNECTION_ERROR_NAMES = new Set(['MaxRetriesPerRequestError', 'AbortError']);

/** Refusals a Redis server lifts by itself: out of memory, loading, busy script, failover. */
const PASSING_REPLY = /^(OOM|LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|READONLY|NOREPLICAS)/;

/**
 * Whether a batch that failed with `err` should be tried again (workers/engine-thread.ts):
 * Redis unreachable, or refusing commands for a while (PASSING_REPLY), or an AffinityError that
 * says it is retriable (the catalogue not there yet, or changing under a flush). Anything else
 * (a WRONGTYPE reply, a bug) is a fault that trying again would only repeat, and stops the
 * worker.
 */
export function isPassing(err: unknown): boolean {
  if (err instanceof AffinityError) return err.retriable;
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && CONNECTION_CODES.has(code)) return true;
  if (CONNECTION_ERROR_NAMES.has(err.name)) return true;
  if (err.name === 'ReplyError') return PASSING_REPLY.test(err.message);
  return /^(Connection is closed|Stream isn't writeable)/.test(err.message);
}

type CounterName = (typeof STATE_COUNTERS)[number];
type HistogramName = (typeof STATE_HISTOGRAMS)[number];

/** Counter increments summed by metric and labels; histogram observations counted by bucket. */
export interface MetricDelta {
  readonly counters: readonly (readonly [CounterName, string | null, number])[];
  /** Per histogram: observations per bucket (STATE_HISTOGRAM_BUCKETS, then +Inf) and sum. */
  readonly histograms: readonly (readonly [HistogramName, Float64Array, number])[];
}

/** A histogram's observations since the last take. */
interface Counted {
  readonly counts: Float64Array;
  sum: number;
}

/**
 * StateMetrics that only remember: the engine thread's metrics, taken (and reset) with every
 * message it sends. Counters cost a map update; an observation finds its bucket, so that a
 * message carries a dozen counts however many events a flush released.
 */
export class MetricRecorder {
  readonly metrics: StateMetrics;
  private counts = new Map<string, [CounterName, string | null, number]>();
  private observed = new Map<HistogramName, Counted>();

  constructor() {
    const metrics: Record<string, CounterLike<string> | HistogramLike> = {};
    for (const name of STATE_COUNTERS) metrics[name] = this.counter(name);
    for (const name of STATE_HISTOGRAMS) metrics[name] = this.histogram(name);
    this.metrics = metrics as unknown as StateMetrics;
  }

  /** Everything recorded since the last call, or null when nothing was. */
  take(): MetricDelta | null {
    if (this.counts.size === 0 && this.observed.size === 0) return null;
    const counters = [...this.counts.values()];
    const histograms = [...this.observed].map(
      ([name, { counts, sum }]) => [name, counts, sum] as const,
    );
    this.counts = new Map();
    this.observed = new Map();
    return { counters, histograms };
  }

  private counter(name: CounterName): CounterLike<string> {
    const add = (labels: Record<string, string | number> | null, value: number) => {
      const key = labels === null ? null : JSON.stringify(labels);
      const id = key === null ? name : `${name}${key}`;
      const entry = this.counts.get(id);
      if (entry) entry[2] += value;
      else this.counts.set(id, [name, key, value]);
    };
    return {
      inc(first?: number | Partial<Record<string, string | number>>, second?: number): void {
        if (typeof first === 'object') add(first as Record<string, string | number>, second ?? 1);
        else add(null, first ?? 1);
      },
    };
  }

  private histogram(name: HistogramName): HistogramLike {
    const bounds = STATE_HISTOGRAM_BUCKETS[name];
    return {
      observe: (value: number) => {
        let counted = this.observed.get(name);
        if (!counted) {
          counted = { counts: new Float64Array(bounds.length + 1), sum: 0 };
          this.observed.set(name, counted);
        }
        counted.counts[bucketOf(bounds, value)]! += 1;
        counted.sum += value;
      },
    };
  }
}

/** Replays an engine's delta on the main thread's registry. */
export function applyMetricDelta(metrics: WorkerMetrics, delta: MetricDelta | null): void {
  if (!delta) return;
  for (const [name, labels, value] of delta.counters) {
    const counter = metrics[name] as CounterLike<string>;
    if (labels === null) counter.inc(value);
    else counter.inc(JSON.parse(labels) as Record<string, string>, value);
  }
  for (const [name, counts, sum] of delta.histograms) metrics[name].observeCounts(counts, sum);
}

const PINO_LEVELS: Record<number, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/** Fields pino adds by itself; the main thread's logger adds its own. */
const OWN_FIELDS = ['level', 'time', 'pid', 'hostname', 'msg', 'service'];

/** Logs one JSON line of the engine's pino through the main thread's logger. */
export function relayLogLine(logger: Logger, line: string): void {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    logger.warn({ line }, 'engine thread wrote a log line that is not JSON');
    return;
  }
  const level = PINO_LEVELS[Number(record['level'])] ?? 'info';
  const message = typeof record['msg'] === 'string' ? record['msg'] : '';
  const fields: Record<string, unknown> = { thread: 'engine' };
  for (const [name, value] of Object.entries(record)) {
    if (!OWN_FIELDS.includes(name)) fields[name] = value;
  }
  if (isRecord(fields['err'])) fields['err'] = revivedError(fields['err']);
  logger[level](fields, message);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/**
 * The engine's pino already serialised its error; an Error again, so that the main thread's
 * serialiser gives the same { type, message, stack, ... } rather than serialising a plain
 * object as type "Object".
 */
function revivedError(serialised: Record<string, unknown>): Error {
  const { type, message, stack, ...rest } = serialised;
  const error = Object.assign(new Error(String(message ?? '')), rest);
  error.stack = typeof stack === 'string' ? stack : '';
  if (typeof type === 'string') {
    // pino's serialiser names an error by its constructor when that is a function.
    Object.defineProperty(error, 'name', { value: type, enumerable: false });
    Object.defineProperty(error, 'constructor', { value: null, enumerable: false });
  }
  return error;
}
