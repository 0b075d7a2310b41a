/**
 * The backfill's request file: CSV rows `user_id,item_id,timestamp[,label]`, with or without
 * that header (a first line that starts with `user_id` and does not parse is the header), optionally
 * gzip-compressed (`.gz`). Rows may come in any order. A row that cannot be read is a bad row,
 * counted and reported with its 1-based line number, and fatal only when `strict`, as for the
 * events file (neural/events.ts).
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { BadRow } from '../neural/events.js';
import { EventsFileError } from '../neural/events.js';

export interface RequestRow {
  readonly user: string;
  readonly item: string;
  /** Epoch ms. */
  readonly ts: number;
  /** The label column as a number when it is one, else as written; null when absent. */
  readonly label: number | string | null;
}

export interface ReadRequestsOptions {
  readonly timestampUnit: 's' | 'ms';
  readonly strict?: boolean;
  /** How many bad rows to keep in `badRows` (all are counted); default 1,000. */
  readonly maxReportedBadRows?: number;
}

export interface ReadRequestsResult {
  /** In file order. */
  readonly rows: RequestRow[];
  readonly badRows: BadRow[];
  readonly badRowCount: number;
}

const DEFAULT_MAX_REPORTED_BAD_ROWS = 1_000;

/** Reads every request row; throws EventsFileError EVENTS_ROW on a bad row when strict. */
export async function readRequestsFile(
  path: string,
  options: ReadRequestsOptions,
): Promise<ReadRequestsResult> {
  const input = openStream(path);
  const lines = createInterface({ input, crlfDelay: Infinity });
  const collector = new RowCollector(path, options);
  let line = 0;

  try {
    for await (const text of lines) {
      line++;
      if (text.trim() !== '') collector.add(line, text.replace(/^\uFEFF/, ''));
    }
  } finally {
    lines.close();
    input.destroy();
  }
  return collector.result;
}

class RowCollector {
  readonly result: { rows: RequestRow[]; badRows: BadRow[]; badRowCount: number } = {
    rows: [],
    badRows: [],
    badRowCount: 0,
  };
  private firstSeen = false;
  private readonly maxReported: number;

  constructor(
    private readonly path: string,
    private readonly options: ReadRequestsOptions,
  ) {
    this.maxReported = options.maxReportedBadRows ?? DEFAULT_MAX_REPORTED_BAD_ROWS;
  }

  add(line: number, text: string): void {
    const first = !this.firstSeen;
    this.firstSeen = true;
    const outcome = parseRequestRow(text, this.options.timestampUnit);
    if (!('bad' in outcome)) {
      this.result.rows.push(outcome);
      return;
    }
    if (first && looksLikeHeader(text)) return;
    if (this.options.strict)
      throw new EventsFileError('EVENTS_ROW', outcome.bad, { file: this.path, line });
    this.result.badRowCount++;
    if (this.result.badRows.length < this.maxReported)
      this.result.badRows.push({ line, reason: outcome.bad });
  }
}

/** A first line naming the columns rather than holding values. */
function looksLikeHeader(text: string): boolean {
  return /^\s*"?user_id"?\s*,/.test(text);
}

/** A row, or the reason it is bad. */
export function parseRequestRow(text: string, unit: 's' | 'ms'): RequestRow | { bad: string } {
  const fields = splitFields(text);
  if (fields === null) return { bad: 'unclosed double quote' };
  if (fields.length < 3 || fields.length > 4)
    return {
      bad: `expected 3 or 4 fields (user_id,item_id,timestamp[,label]), got ${fields.length}`,
    };

  const [user, item, timestamp, label] = fields as [string, string, string, string | undefined];
  if (user === '') return { bad: 'empty user_id' };
  if (item === '') return { bad: 'empty item_id' };
  const ts = toMs(timestamp, unit);
  if (typeof ts === 'string') return { bad: ts };
  return { user, item, ts, label: parseLabel(label) };
}

/**
 * The RFC 4180 fields of one line (a quoted field may hold commas; "" is a quote), trimmed;
 * null when a quote is left open.
 */
function splitFields(text: string): string[] | null {
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i]!;
    if (quoted && char === '"' && text[i + 1] === '"') {
      field += '"';
      i++;
    } else if (char === '"') quoted = !quoted;
    else if (char === ',' && !quoted) {
      fields.push(field.trim());
      field = '';
    } else field += char;
  }
  if (quoted) return null;
  fields.push(field.trim());
  return fields;
}

function toMs(text: string, unit: 's' | 'ms'): number | string {
  const value = text.trim() === '' ? Number.NaN : Number(text);
  if (!Number.isFinite(value)) return `timestamp ${JSON.stringify(text)} is not a number`;
  if (value < 0) return `timestamp ${value} is negative`;
  const ms = Math.round(unit === 's' ? value * 1000 : value);
  return Number.isSafeInteger(ms) ? ms : `timestamp ${value} is out of range`;
}

function parseLabel(text: string | undefined): number | string | null {
  if (text === undefined || text === '') return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : text;
}

function openStream(path: string): Readable {
  const file = createReadStream(path);
  if (!path.endsWith('.gz')) return file;
  const gunzip = createGunzip();
  file.on('error', (error) => gunzip.destroy(error));
  return file.pipe(gunzip);
}
