/**
 * Reads an interaction log from a file for the offline tools (training, backfill):
 *
 *  - CSV with a header naming the columns `user_id`, `item_id`, `timestamp`, `signal` (in any
 *    order; other columns are ignored). Fields may be double-quoted ("" is a quote inside), but
 *    a field may not span lines. The raw signal (a star rating, a word) becomes an event type
 *    through a signal map: ordered rules such as `like:>=4,dislike:<=2`; a signal that no rule
 *    matches is ignored and counted.
 *  - JSONL: one InteractionEvent object per line; the event's own `type` is used.
 *
 * The format comes from the name (`.csv`, `.jsonl` or `.ndjson`, each optionally followed by
 * `.gz`), else from the first line (`{` means JSONL). Names ending in `.gz` are gunzipped while
 * streaming. A row that cannot be read is a bad row: counted and reported with its 1-based line
 * number (the header is line 1), and fatal only with `strict`. Blank lines are skipped.
 */
import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import type { Readable } from 'node:stream';
import type { InteractionEvent } from '../events/types.js';

export type Comparator = '>=' | '<=' | '>' | '<' | '=';

/** One rule of a signal map: a numeric comparison, or an exact string match of the signal. */
export type SignalRule =
  | { readonly type: string; readonly comparator: Comparator; readonly threshold: number }
  | { readonly type: string; readonly equals: string };

/** Rules tried in order; the first that matches gives the event type. */
export interface SignalMap {
  readonly rules: readonly SignalRule[];
}

export type EventsFileErrorCode =
  /** The file is not a log this reader understands: missing header column, unknown format. */
  | 'EVENTS_FORMAT'
  /** A row could not be read (strict mode only). */
  | 'EVENTS_ROW'
  /** A signal map spec or file is malformed. */
  | 'SIGNAL_MAP_INVALID';

export class EventsFileError extends Error {
  readonly code: EventsFileErrorCode;
  /** The file, when the error is about one. */
  readonly file: string | null;
  /** 1-based line, when the error is about one. */
  readonly line: number | null;

  constructor(
    code: EventsFileErrorCode,
    message: string,
    where: { file?: string; line?: number } = {},
    options: { cause?: unknown } = {},
  ) {
    const place =
      where.file === undefined
        ? ''
        : where.line === undefined
          ? `${where.file}: `
          : `${where.file}:${where.line}: `;
    super(place + message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EventsFileError';
    this.code = code;
    this.file = where.file ?? null;
    this.line = where.line ?? null;
  }
}

export interface ReadEventsOptions {
  /** Unit of the CSV `timestamp` column and of the JSONL `ts` field; events carry ms. */
  readonly timestampUnit: 's' | 'ms';
  /** Turns CSV signals into types; required for CSV, unused for JSONL. */
  readonly signalMap?: SignalMap;
  /** Throw EventsFileError EVENTS_ROW at the first bad row instead of counting it. */
  readonly strict?: boolean;
  /** How many bad rows to keep in `badRows` (all are counted); default 1,000. */
  readonly maxReportedBadRows?: number;
  /**
   * Largest JSONL `value`, as AFFINITY_MAX_EVENT_VALUE for the worker (which dead-letters a
   * larger one): a row above it is bad, not an overflow of the sums. Default: no limit.
   */
  readonly maxEventValue?: number;
}

export interface BadRow {
  readonly line: number;
  readonly reason: string;
}

export interface ReadEventsResult {
  /** Sorted by (ts, user, item), stable; ids compare as numbers when both are digit strings. */
  readonly events: InteractionEvent[];
  /** The first `maxReportedBadRows` bad rows. */
  readonly badRows: BadRow[];
  readonly badRowCount: number;
  /** CSV rows whose signal matched no rule. */
  readonly ignored: number;
  readonly format: 'csv' | 'jsonl';
}

const DEFAULT_MAX_REPORTED_BAD_ROWS = 1_000;
const CSV_COLUMNS = ['user_id', 'item_id', 'timestamp', 'signal'] as const;

/**
 * Parses a signal map: either comma-separated rules `type:<comparator><operand>` with comparator
 * `>=`, `<=`, `>`, `<` or `=` and a number (`like:>=4`), or `type:=word` for an exact string
 * match (`click:=click`); or, when the spec ends in `.json`, that file holding
 * `{"rules":[{"type":"like","min":4},{"type":"dislike","max":2},{"type":"click","equals":"click"}]}`
 * (min is >=, max is <=, equals an exact string). Throws EventsFileError SIGNAL_MAP_INVALID.
 */
export function parseSignalMap(spec: string): SignalMap {
  const trimmed = spec.trim();
  const rules = trimmed.endsWith('.json') ? rulesFromFile(trimmed) : rulesFromSpec(trimmed);
  if (rules.length === 0)
    throw new EventsFileError('SIGNAL_MAP_INVALID', `signal map "${spec}" has no rule`);
  return Object.freeze({ rules: Object.freeze(rules) });
}

function rulesFromSpec(spec: string): SignalRule[] {
  const rules: SignalRule[] = [];
  for (const entry of spec.split(',').map((part) => part.trim())) {
    if (entry === '') continue;
    const colon = entry.indexOf(':');
    const type = colon < 0 ? '' : entry.slice(0, colon).trim();
    const match = /^(>=|<=|>|<|=)\s*(.*)$/.exec(colon < 0 ? '' : entry.slice(colon + 1).trim());
    if (type === '' || match === null || match[2] === '') {
      throw new EventsFileError(
        'SIGNAL_MAP_INVALID',
        `signal rule "${entry}" must read type:<op><value> with op one of >=, <=, >, <, = (e.g. like:>=4, click:=click)`,
      );
    }

    const comparator = match[1] as Comparator;
    const operand = match[2]!;
    const threshold = parseNumber(operand);
    if (Number.isNaN(threshold)) {
      if (comparator !== '=') {
        throw new EventsFileError(
          'SIGNAL_MAP_INVALID',
          `signal rule "${entry}": ${comparator} needs a number, got "${operand}"`,
        );
      }
      rules.push({ type, equals: operand });
    } else {
      rules.push({ type, comparator, threshold });
    }
  }
  return rules;
}

function rulesFromFile(path: string): SignalRule[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (cause) {
    throw new EventsFileError(
      'SIGNAL_MAP_INVALID',
      'cannot read the signal map as JSON',
      { file: path },
      { cause },
    );
  }

  const list = (parsed as { rules?: unknown } | null)?.rules;
  if (!Array.isArray(list))
    throw new EventsFileError('SIGNAL_MAP_INVALID', 'expected {"rules": [...]}', { file: path });
  return list.map((rule: unknown, index) => ruleFromJson(rule, `${path}: rule ${index}`));
}

function ruleFromJson(rule: unknown, where: string): SignalRule {
  const fail = (why: string): EventsFileError =>
    new EventsFileError('SIGNAL_MAP_INVALID', `${where}: ${why}`);
  if (typeof rule !== 'object' || rule === null) throw fail('not an object');
  const { type, min, max, equals } = rule as Record<string, unknown>;
  if (typeof type !== 'string' || type === '') throw fail('"type" must be a non-empty string');

  const given = [min, max, equals].filter((value) => value !== undefined).length;
  if (given !== 1) throw fail('give exactly one of "min", "max", "equals"');
  if (equals !== undefined) {
    if (typeof equals !== 'string') throw fail('"equals" must be a string');
    return { type, equals };
  }
  const threshold = min ?? max;
  if (typeof threshold !== 'number' || !Number.isFinite(threshold))
    throw fail('"min"/"max" must be a finite number');
  return { type, comparator: min !== undefined ? '>=' : '<=', threshold };
}

/** A finite number from text, or NaN (empty and non-numeric text included). */
function parseNumber(text: string): number {
  if (text.trim() === '') return Number.NaN;
  const value = Number(text);
  return Number.isFinite(value) ? value : Number.NaN;
}

/** The type of the first rule the signal matches, or null. */
export function mapSignal(map: SignalMap, signal: string): string | null {
  const numeric = parseNumber(signal);
  for (const rule of map.rules) {
    if ('equals' in rule) {
      if (signal === rule.equals) return rule.type;
    } else if (!Number.isNaN(numeric) && compare(numeric, rule.comparator, rule.threshold)) {
      return rule.type;
    }
  }
  return null;
}

function compare(value: number, comparator: Comparator, threshold: number): boolean {
  switch (comparator) {
    case '>=':
      return value >= threshold;
    case '<=':
      return value <= threshold;
    case '>':
      return value > threshold;
    case '<':
      return value < threshold;
    case '=':
      return value === threshold;
  }
}

/** Reads, checks and sorts the events of a CSV or JSONL file (see the module comment). */
export async function readEventsFile(
  path: string,
  options: ReadEventsOptions,
): Promise<ReadEventsResult> {
  const collector = new Collector(path, options);
  const input = openStream(path);
  const lines = createInterface({ input, crlfDelay: Infinity });
  const named = formatFromName(path);
  let format: 'csv' | 'jsonl' | null = named;
  let csv: CsvLayout | null = null;
  let line = 0;

  try {
    for await (const text of lines) {
      line++;
      if (text.trim() === '') continue;
      if (format === null)
        format = text
          .replace(/^\uFEFF/, '')
          .trimStart()
          .startsWith('{')
          ? 'jsonl'
          : 'csv';
      if (format === 'jsonl') collector.add(line, parseJsonLine(text, options));
      else if (csv === null) csv = parseCsvHeader(text, path, line, options);
      else collector.add(line, parseCsvRow(text, csv, options.timestampUnit));
    }
  } finally {
    lines.close();
    input.destroy();
  }

  if (format === 'csv' && csv === null && line > 0) {
    throw new EventsFileError('EVENTS_FORMAT', 'no header line', { file: path });
  }
  return collector.result(format ?? named ?? 'csv');
}

function openStream(path: string): Readable {
  const file = createReadStream(path);
  if (!path.endsWith('.gz')) return file;
  const gunzip = createGunzip();
  file.on('error', (error) => gunzip.destroy(error));
  return file.pipe(gunzip);
}

function formatFromName(path: string): 'csv' | 'jsonl' | null {
  const name = path.endsWith('.gz') ? path.slice(0, -3) : path;
  if (name.endsWith('.csv')) return 'csv';
  if (name.endsWith('.jsonl') || name.endsWith('.ndjson')) return 'jsonl';
  return null;
}

/** A parsed row: an event, a reason it is bad, or null when its signal matched no rule. */
type RowOutcome = InteractionEvent | { readonly bad: string } | null;

class Collector {
  private readonly events: InteractionEvent[] = [];
  private readonly badRows: BadRow[] = [];
  private badRowCount = 0;
  private ignored = 0;
  private readonly maxReported: number;

  constructor(
    private readonly path: string,
    private readonly options: ReadEventsOptions,
  ) {
    this.maxReported = options.maxReportedBadRows ?? DEFAULT_MAX_REPORTED_BAD_ROWS;
  }

  add(line: number, outcome: RowOutcome): void {
    if (outcome === null) {
      this.ignored++;
    } else if ('bad' in outcome) {
      if (this.options.strict === true)
        throw new EventsFileError('EVENTS_ROW', outcome.bad, { file: this.path, line });
      this.badRowCount++;
      if (this.badRows.length < this.maxReported) this.badRows.push({ line, reason: outcome.bad });
    } else {
      this.events.push(outcome);
    }
  }

  result(format: 'csv' | 'jsonl'): ReadEventsResult {
    this.events.sort(compareEvents);
    return {
      events: this.events,
      badRows: this.badRows,
      badRowCount: this.badRowCount,
      ignored: this.ignored,
      format,
    };
  }
}

/** Order by ts, then user, then item (Array.prototype.sort is stable). */
export function compareEvents(a: InteractionEvent, b: InteractionEvent): number {
  return a.ts - b.ts || compareIds(a.user, b.user) || compareIds(a.item, b.item);
}

const DIGITS = /^[0-9]+$/;

/**
 * Digit strings compare as numbers (so "9" < "10", matching logs sorted by numeric id) and come
 * before other ids, which compare by UTF-16 code units. A total order: digit strings of equal
 * value ("07", "7") fall back to code-unit order.
 */
export function compareIds(a: string, b: string): number {
  if (a === b) return 0;
  const aDigits = DIGITS.test(a);
  const bDigits = DIGITS.test(b);
  if (aDigits !== bDigits) return aDigits ? -1 : 1;
  if (aDigits) {
    const aCore = a.replace(/^0+(?=.)/, '');
    const bCore = b.replace(/^0+(?=.)/, '');
    if (aCore.length !== bCore.length) return aCore.length - bCore.length;
    if (aCore !== bCore) return aCore < bCore ? -1 : 1;
  }
  return a < b ? -1 : 1;
}

interface CsvLayout {
  readonly columns: number;
  readonly user: number;
  readonly item: number;
  readonly timestamp: number;
  readonly signal: number;
  readonly signalMap: SignalMap;
}

function parseCsvHeader(
  text: string,
  path: string,
  line: number,
  options: ReadEventsOptions,
): CsvLayout {
  const fields = splitCsvLine(text.replace(/^\uFEFF/, ''));
  const names = fields?.map((field) => field.trim()) ?? [];
  const index = (name: string): number => names.indexOf(name);
  const missing = CSV_COLUMNS.filter((name) => index(name) < 0);
  if (missing.length > 0) {
    throw new EventsFileError(
      'EVENTS_FORMAT',
      `CSV header lacks ${missing.join(', ')}; expected the columns ${CSV_COLUMNS.join(',')}`,
      { file: path, line },
    );
  }
  if (options.signalMap === undefined) {
    throw new EventsFileError(
      'EVENTS_FORMAT',
      'a CSV log needs a signal map to turn signals into types',
      { file: path },
    );
  }
  return {
    columns: names.length,
    user: index('user_id'),
    item: index('item_id'),
    timestamp: index('timestamp'),
    signal: index('signal'),
    signalMap: options.signalMap,
  };
}

/** Fields of one CSV line, or null when a quote is not closed. */
function splitCsvLine(text: string): string[] | null {
  if (!text.includes('"')) return text.split(',');

  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i]!;
    if (quoted) {
      if (char !== '"') field += char;
      else if (text[i + 1] === '"') {
        field += '"';
        i++;
      } else quoted = false;
    } else if (char === '"') quoted = true;
    else if (char === ',') {
      fields.push(field);
      field = '';
    } else field += char;
  }
  if (quoted) return null;
  fields.push(field);
  return fields;
}

function parseCsvRow(text: string, layout: CsvLayout, unit: 's' | 'ms'): RowOutcome {
  const fields = splitCsvLine(text);
  if (fields === null) return { bad: 'unclosed double quote' };
  if (fields.length !== layout.columns)
    return { bad: `expected ${layout.columns} fields, got ${fields.length}` };

  const user = fields[layout.user]!.trim();
  const item = fields[layout.item]!.trim();
  if (user === '') return { bad: 'empty user_id' };
  if (item === '') return { bad: 'empty item_id' };
  const ts = toMs(fields[layout.timestamp]!, unit);
  if (typeof ts === 'string') return { bad: ts };

  const type = mapSignal(layout.signalMap, fields[layout.signal]!.trim());
  return type === null ? null : { user, item, ts, type };
}

/** Epoch ms from a timestamp field, rounded to whole ms; or the reason it is bad. */
function toMs(raw: unknown, unit: 's' | 'ms'): number | string {
  const value =
    typeof raw === 'number' ? raw : typeof raw === 'string' ? parseNumber(raw) : Number.NaN;
  if (!Number.isFinite(value)) return `timestamp ${JSON.stringify(raw)} is not a number`;
  if (value < 0) return `timestamp ${value} is negative`;
  const ms = Math.round(unit === 's' ? value * 1000 : value);
  return Number.isSafeInteger(ms) ? ms : `timestamp ${value} is out of range`;
}

function parseJsonLine(text: string, options: ReadEventsOptions): RowOutcome {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return { bad: `not JSON (${error instanceof Error ? error.message : String(error)})` };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    return { bad: 'not a JSON object' };

  const { user, item, ts, type, value, id } = parsed as Record<string, unknown>;
  const userId = idText(user);
  const itemId = idText(item);
  if (userId === null) return { bad: '"user" must be a non-empty string or an integer' };
  if (itemId === null) return { bad: '"item" must be a non-empty string or an integer' };
  if (typeof type !== 'string' || type === '') return { bad: '"type" must be a non-empty string' };
  const ms = toMs(ts, options.timestampUnit);
  if (typeof ms === 'string') return { bad: ms.replace('timestamp', '"ts"') };
  if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0)) {
    return { bad: '"value" must be a non-negative number' };
  }
  const maxValue = options.maxEventValue ?? Number.POSITIVE_INFINITY;
  if (value !== undefined && value > maxValue) {
    return { bad: `"value" ${value} is above the limit ${maxValue}` };
  }
  if (id !== undefined && typeof id !== 'string') return { bad: '"id" must be a string' };

  return {
    user: userId,
    item: itemId,
    ts: ms,
    type,
    ...(value === undefined ? {} : { value }),
    ...(id === undefined ? {} : { id }),
  };
}

function idText(raw: unknown): string | null {
  if (typeof raw === 'string') return raw === '' ? null : raw;
  if (typeof raw === 'number' && Number.isSafeInteger(raw)) return String(raw);
  return null;
}
