/**
 * The fast path of `interactions` validation: a byte scanner for messages in the plain form
 * producers send, `{"user":"u1","item":"i9","ts":1700000000000,"type":"click"}` with any JSON
 * whitespace, any key order, and the optional `value` and `id`. It reads the bytes once and
 * makes no string, number text or object per event: the worker's main thread spent about
 * 1.5 µs per event in `toString`, `JSON.parse`, the field checks and the hashing of the new
 * strings (docs/benchmarks.md), which paced its reading.
 *
 * It accepts a message only when `decodeEvent` would accept it with the very same fields, and
 * gives up on everything else: escapes and bytes beyond ASCII in a string, a nested value, a
 * repeated key, a `ts` with a fraction or an exponent, a field that fails any check. The caller
 * then hands the message to `decodeEvent`, which gives the verdict and the reason. Giving up is
 * never wrong, only slower; test/stream/scan.test.ts compares the two on mutated messages.
 * The grammar is RFC 8259's (sections 2, 6 and 7).
 */
import type { DecodeLimits } from './decode.js';
import { MAX_ID_LENGTH } from './decode.js';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN = 0x7b;
const CLOSE = 0x7d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;
/** What a skipped value may be besides a string or a number. */
const LITERALS = ['true', 'false', 'null'].map((word) => Buffer.from(word, 'latin1'));
/** The most digits an integer may have here and still be exact in a float64 (< 2^53). */
const MAX_EXACT_DIGITS = 15;

/**
 * What a key names, as a bit of the set of fields seen; UNKNOWN keys are skipped when their
 * value is a plain one (decodeEvent ignores them too).
 */
const UNKNOWN = 0;
const USER = 1;
const ITEM = 2;
const TS = 4;
const TYPE = 8;
const VALUE = 16;
const ID = 32;
const REQUIRED = USER | ITEM | TS | TYPE;

/**
 * Scans one message at a time; after a `scan` that returned true its fields hold the event:
 * byte ranges for the texts, numbers for the rest. One instance per thread, reused.
 */
export class EventScanner {
  userStart = 0;
  userEnd = 0;
  itemStart = 0;
  itemEnd = 0;
  /** -1 when the event has no id. */
  idStart = -1;
  idEnd = -1;
  ts = 0;
  /** The event type's number in the signals configuration's order (engine-link's index). */
  type = 0;
  /** NaN when the event has no value. */
  value = NaN;
  /** Fields seen so far in this message, one bit each. */
  private seen = 0;
  private readonly typeNames: readonly Buffer[];
  private readonly typeCodes: readonly number[];

  constructor(
    private readonly limits: DecodeLimits,
    typeIndex: ReadonlyMap<string, number>,
  ) {
    const types = [...limits.signals.keys()];
    this.typeNames = types.map((type) => Buffer.from(type, 'utf8'));
    this.typeCodes = types.map((type) => typeIndex.get(type)!);
  }

  /** Whether the message is a valid event in the plain form; false means: ask decodeEvent. */
  scan(bytes: Buffer, nowMs: number): boolean {
    if (bytes.length > this.limits.maxMessageBytes) return false;
    this.seen = 0;
    this.idStart = -1;
    this.idEnd = -1;
    this.value = NaN;

    let p = skipSpace(bytes, 0);
    if (bytes[p] !== OPEN) return false;
    p = skipSpace(bytes, p + 1);
    for (;;) {
      p = this.member(bytes, p);
      if (p < 0) return false;
      p = skipSpace(bytes, p);
      if (bytes[p] === CLOSE) break;
      if (bytes[p] !== COMMA) return false;
      p = skipSpace(bytes, p + 1);
    }
    if (skipSpace(bytes, p + 1) !== bytes.length) return false;

    return this.complete(nowMs);
  }

  /** Reads `"key": value` at `p`; returns the position after it, or -1 to give up. */
  private member(bytes: Buffer, p: number): number {
    const keyEnd = stringEnd(bytes, p);
    if (keyEnd < 0) return -1;
    const field = fieldOf(bytes, p + 1, keyEnd);
    p = skipSpace(bytes, keyEnd + 1);
    if (bytes[p] !== COLON) return -1;
    p = skipSpace(bytes, p + 1);

    if ((this.seen & field) !== 0) return -1;
    this.seen |= field;
    return this.fieldValue(bytes, p, field);
  }

  private fieldValue(bytes: Buffer, p: number, field: number): number {
    if (field === TS) return this.timestamp(bytes, p);
    if (field === VALUE) return this.number(bytes, p);
    if (field === UNKNOWN) return skipPlainValue(bytes, p);
    return this.text(bytes, p, field);
  }

  /** A non-empty string of at most MAX_ID_LENGTH characters for `field`. */
  private text(bytes: Buffer, p: number, field: number): number {
    const end = stringEnd(bytes, p);
    const start = p + 1;
    if (end < 0 || end === start || end - start > MAX_ID_LENGTH) return -1;

    if (field === USER) {
      this.userStart = start;
      this.userEnd = end;
    } else if (field === ITEM) {
      this.itemStart = start;
      this.itemEnd = end;
    } else if (field === ID) {
      this.idStart = start;
      this.idEnd = end;
    } else {
      this.type = this.typeAt(bytes, start, end);
      if (this.type < 0) return -1;
    }
    return end + 1;
  }

  /** The configured type spelled by bytes[start, end), or -1. */
  private typeAt(bytes: Buffer, start: number, end: number): number {
    for (let t = 0; t < this.typeNames.length; t++) {
      const name = this.typeNames[t]!;
      if (name.length === end - start && sameBytes(name, bytes, start)) return this.typeCodes[t]!;
    }
    return -1;
  }

  /**
   * An integer of at most MAX_EXACT_DIGITS digits, read in one pass; a fraction, an exponent,
   * a leading zero or more digits are decodeEvent's to judge.
   */
  private timestamp(bytes: Buffer, p: number): number {
    const negative = bytes[p] === MINUS;
    const first = negative ? p + 1 : p;
    let ts = 0;
    let at = first;
    for (let c = bytes[at]; c !== undefined && c >= ZERO && c <= NINE; c = bytes[++at]) {
      ts = ts * 10 + (c - ZERO);
    }
    const digits = at - first;
    if (digits === 0 || digits > MAX_EXACT_DIGITS) return -1;
    if (bytes[first] === ZERO && digits > 1) return -1;
    // A fraction or an exponent after the digits fails the caller's check for `,` or `}`.
    this.ts = negative ? -ts : ts;
    return at;
  }

  private number(bytes: Buffer, p: number): number {
    const end = numberEnd(bytes, p);
    if (end < 0) return -1;
    const exact = exactInteger(bytes, p, end);
    // The same conversion JSON.parse makes of the same text (ECMA-262 StringToNumber).
    this.value = Number.isNaN(exact) ? Number(bytes.toString('latin1', p, end)) : exact;
    return end;
  }

  /** decodeEvent's checks, for a message whose every field had the expected kind. */
  private complete(nowMs: number): boolean {
    if ((this.seen & REQUIRED) !== REQUIRED) return false;
    const { maxEventAgeMs, maxEventFutureMs, maxEventValue } = this.limits;
    if (this.ts < nowMs - maxEventAgeMs || this.ts > nowMs + maxEventFutureMs) return false;

    if ((this.seen & VALUE) === 0) return true;
    const value = this.value;
    return Number.isFinite(value) && value >= 0 && value <= maxEventValue;
  }
}

/** The field a key spelled by bytes[start, end) names. */
function fieldOf(bytes: Buffer, start: number, end: number): number {
  const length = end - start;
  if (length === 2) {
    const word = bytes[start]! | (bytes[start + 1]! << 8);
    if (word === TS_WORD) return TS;
    return word === ID_WORD ? ID : UNKNOWN;
  }
  if (length !== 4 && length !== 5) return UNKNOWN;
  const word = wordAt(bytes, start);
  if (length === 5) return word === VALU_WORD && bytes[start + 4] === 0x65 ? VALUE : UNKNOWN;
  if (word === USER_WORD) return USER;
  if (word === ITEM_WORD) return ITEM;
  return word === TYPE_WORD ? TYPE : UNKNOWN;
}

/** Four bytes as a little-endian 32-bit integer (the bytes exist: the key's quote follows). */
function wordAt(bytes: Buffer, at: number): number {
  return bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24);
}

/** A key's first four characters as wordAt reads them. */
function wordOf(text: string): number {
  return wordAt(Buffer.from(text.slice(0, 4), 'latin1'), 0);
}

const USER_WORD = wordOf('user');
const ITEM_WORD = wordOf('item');
const TYPE_WORD = wordOf('type');
const VALU_WORD = wordOf('value');
const TS_WORD = 0x74 | (0x73 << 8);
const ID_WORD = 0x69 | (0x64 << 8);

function sameBytes(name: Buffer, bytes: Buffer, start: number): boolean {
  for (let i = 0; i < name.length; i++) {
    if (name[i] !== bytes[start + i]) return false;
  }
  return true;
}

function skipSpace(bytes: Buffer, p: number): number {
  for (;;) {
    const c = bytes[p];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return p;
    p++;
  }
}

/**
 * The position of the closing quote of the string opening at `p`, or -1 when there is no
 * string there or it has an escape, a control character or a byte beyond ASCII.
 */
function stringEnd(bytes: Buffer, p: number): number {
  if (bytes[p] !== QUOTE) return -1;
  const length = bytes.length;
  for (let i = p + 1; i < length; i++) {
    const c = bytes[i]!;
    if (c === QUOTE) return i;
    if (c === BACKSLASH || c < 0x20 || c >= 0x80) return -1;
  }
  return -1;
}

/** The end of the JSON number at `p` (RFC 8259 section 6), or -1 when there is none. */
function numberEnd(bytes: Buffer, p: number): number {
  if (bytes[p] === MINUS) p++;
  if (bytes[p] === ZERO) p++;
  else {
    const end = digitsEnd(bytes, p);
    if (end === p) return -1;
    p = end;
  }
  if (bytes[p] === DOT) {
    const end = digitsEnd(bytes, p + 1);
    if (end === p + 1) return -1;
    p = end;
  }
  if (bytes[p] === 0x65 || bytes[p] === 0x45) {
    p++;
    if (bytes[p] === PLUS || bytes[p] === MINUS) p++;
    const end = digitsEnd(bytes, p);
    if (end === p) return -1;
    p = end;
  }
  return p;
}

function digitsEnd(bytes: Buffer, p: number): number {
  for (;;) {
    const c = bytes[p];
    if (c === undefined || c < ZERO || c > NINE) return p;
    p++;
  }
}

/**
 * The value of the number text bytes[start, end) when it is an integer of at most
 * MAX_EXACT_DIGITS digits (each step of the sum is then exact), else NaN.
 */
function exactInteger(bytes: Buffer, start: number, end: number): number {
  const negative = bytes[start] === MINUS;
  const first = negative ? start + 1 : start;
  if (end - first > MAX_EXACT_DIGITS) return NaN;
  let n = 0;
  for (let i = first; i < end; i++) {
    const c = bytes[i]!;
    if (c < ZERO || c > NINE) return NaN;
    n = n * 10 + (c - ZERO);
  }
  return negative ? -n : n;
}

/** Skips a string, number, true, false or null; -1 for anything else (objects, arrays). */
function skipPlainValue(bytes: Buffer, p: number): number {
  const c = bytes[p];
  if (c === QUOTE) {
    const end = stringEnd(bytes, p);
    return end < 0 ? -1 : end + 1;
  }
  if (c === MINUS || (c !== undefined && c >= ZERO && c <= NINE)) return numberEnd(bytes, p);
  for (const literal of LITERALS) {
    if (sameBytes(literal, bytes, p)) return p + literal.length;
  }
  return -1;
}
