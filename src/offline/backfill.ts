/**
 * `affinity backfill`: for each request row (user, item, timestamp[, label]) the features
 * `FeatureReader` would have returned at that timestamp, from the events strictly before it
 * (replay.ts). Rows are answered grouped by (user, timestamp), one reader call per group, and
 * written in the order of the request file, as JSONL or as CSV by the output's extension.
 *
 * Memory: the events, the catalogue and a float64 matrix of requests x features (8 bytes per
 * value, about 300 bytes per request at the default settings).
 */
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { AffinityError } from '../errors.js';
import type { LoadedModel } from '../features/neural-encode.js';
import type { BadRow } from '../neural/events.js';
import type { CatalogueOptions } from './catalogue.js';
import { loadOfflineCatalogue } from './catalogue.js';
import { FeatureTable } from './feature-table.js';
import type { EventsInput, EventsReport } from './inputs.js';
import { readOfflineEvents } from './inputs.js';
import { loadOfflineModel } from './neural.js';
import type { ReplayProgress, ReplayStats, RequestGroup } from './replay.js';
import { replay, replayFeatureNames } from './replay.js';
import type { RequestRow } from './requests.js';
import { readRequestsFile } from './requests.js';
import type { MethodSettings } from './settings.js';

export interface BackfillOptions {
  readonly events: EventsInput;
  readonly itemsPath: string;
  readonly catalogue: CatalogueOptions;
  readonly requestsPath: string;
  /** Unit of the request file's timestamps; default the log's (`events.timestampUnit`). */
  readonly requestTimestampUnit?: 's' | 'ms';
  readonly outPath: string;
  readonly modelDir?: string;
  readonly settings: MethodSettings;
  readonly strict?: boolean;
  readonly onProgress?: ReplayProgress;
}

export interface BackfillSummary {
  readonly events: EventsReport;
  readonly requests: {
    readonly rows: number;
    readonly groups: number;
    readonly badRowCount: number;
    readonly badRows: readonly BadRow[];
  };
  readonly features: readonly string[];
  readonly format: 'jsonl' | 'csv';
  readonly replay: ReplayStats;
  readonly wallMs: number;
}

/** Reads the inputs, replays, writes `outPath`; throws USAGE on an unknown output format. */
export async function runBackfill(options: BackfillOptions): Promise<BackfillSummary> {
  const started = performance.now();
  const format = outputFormat(options.outPath);
  const { events, report } = await readOfflineEvents(options.events, options.settings);
  const catalogue = await loadOfflineCatalogue(options.itemsPath, options.catalogue);
  const neural = await optionalModel(options.modelDir, catalogue);
  const requests = await readRequestsFile(options.requestsPath, {
    timestampUnit: options.requestTimestampUnit ?? options.events.timestampUnit,
    ...(options.strict === undefined ? {} : { strict: options.strict }),
  });

  const model = { settings: options.settings, catalogue, neural };
  const { groups, slots } = groupRequests(requests.rows);
  const table = new FeatureTable(replayFeatureNames(model), requests.rows.length);
  const stats = replay(events, groups, model, fillRows(table, slots), options.onProgress);
  await writeOutput(options.outPath, format, requests.rows, table);

  return {
    events: report,
    requests: {
      rows: requests.rows.length,
      groups: groups.length,
      badRowCount: requests.badRowCount,
      badRows: requests.badRows,
    },
    features: table.names,
    format,
    replay: stats,
    wallMs: performance.now() - started,
  };
}

function outputFormat(path: string): 'jsonl' | 'csv' {
  if (path.endsWith('.jsonl') || path.endsWith('.ndjson')) return 'jsonl';
  if (path.endsWith('.csv')) return 'csv';
  throw new AffinityError('USAGE', `--out ${path}: the name must end in .jsonl or .csv`);
}

async function optionalModel(
  dir: string | undefined,
  catalogue: Parameters<typeof loadOfflineModel>[1],
): Promise<LoadedModel | null> {
  return dir === undefined ? null : loadOfflineModel(dir, catalogue);
}

/**
 * One group per distinct (user, timestamp), with the rows it answers: `slots[g][c]` is the
 * request row of candidate c of group g.
 */
export function groupRequests(rows: readonly RequestRow[]): {
  groups: RequestGroup[];
  slots: number[][];
} {
  const indexOf = new Map<string, number>();
  const groups: { user: string; atMs: number; items: string[] }[] = [];
  const slots: number[][] = [];
  rows.forEach((row, index) => {
    const key = `${row.ts}\u0000${row.user}`;
    let group = indexOf.get(key);
    if (group === undefined) {
      group = groups.length;
      indexOf.set(key, group);
      groups.push({ user: row.user, atMs: row.ts, items: [] });
      slots.push([]);
    }
    groups[group]!.items.push(row.item);
    slots[group]!.push(index);
  });
  return { groups, slots };
}

function fillRows(table: FeatureTable, slots: readonly number[][]) {
  return (group: number, candidate: number, features: Record<string, number | null>) =>
    table.set(slots[group]![candidate]!, features);
}

async function writeOutput(
  path: string,
  format: 'jsonl' | 'csv',
  rows: readonly RequestRow[],
  table: FeatureTable,
): Promise<void> {
  const out = createWriteStream(path);
  const closed = once(out, 'close');
  try {
    if (format === 'csv') await write(out, csvHeader(table.names));
    for (let start = 0; start < rows.length; start += WRITE_CHUNK_ROWS) {
      const lines: string[] = [];
      const end = Math.min(rows.length, start + WRITE_CHUNK_ROWS);
      for (let row = start; row < end; row++) lines.push(formatRow(format, rows[row]!, table, row));
      await write(out, lines.join(''));
    }
  } finally {
    out.end();
    await closed;
  }
}

const WRITE_CHUNK_ROWS = 1_000;

/** Writes, waiting for the stream to drain when its buffer is full. */
async function write(out: WriteStream, text: string): Promise<void> {
  if (!out.write(text)) await once(out, 'drain');
}

function formatRow(
  format: 'jsonl' | 'csv',
  request: RequestRow,
  table: FeatureTable,
  row: number,
): string {
  if (format === 'jsonl') {
    const { user, item, ts, label } = request;
    return `${JSON.stringify({ user, item, ts, label, features: table.named(row) })}\n`;
  }
  const values: string[] = [];
  for (let column = 0; column < table.width; column++) {
    const value = table.at(row, column);
    values.push(Number.isNaN(value) ? '' : String(value));
  }
  const label = request.label === null ? '' : csvField(String(request.label));
  const head = [csvField(request.user), csvField(request.item), String(request.ts), label];
  return `${[...head, ...values].join(',')}\n`;
}

function csvHeader(names: readonly string[]): string {
  return `${['user_id', 'item_id', 'timestamp_ms', 'label', ...names].join(',')}\n`;
}

/** RFC 4180 quoting, only where a field needs it. */
function csvField(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}
