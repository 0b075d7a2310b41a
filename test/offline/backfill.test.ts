/**
 * `runBackfill` on a tiny hand-made log: the features at a request time come from the events
 * strictly before it (values worked out by hand from the definitions in docs/features.md), the
 * order of the request rows does not matter, CSV and JSONL logs give the same answers, and bad
 * rows are counted with their line numbers.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import { parseSignalMap } from '../../src/neural/events.js';
import type { BackfillOptions } from '../../src/offline/backfill.js';
import { runBackfill } from '../../src/offline/backfill.js';
import { parseRequestRow } from '../../src/offline/requests.js';
import { methodSettings } from '../../src/offline/settings.js';

const HOUR_S = 3_600;
/** Sums are float32: a hand-computed float64 value agrees to about 1e-7; 1e-6 is the bound. */
const TOLERANCE = 1e-6;

const ITEMS = [
  { id: 'i1', embedding: [1, 0, 0] },
  { id: 'i2', embedding: [0, 1, 0] },
  { id: 'i3', embedding: [1, 1, 0] },
  { id: 'i4', embedding: [0, 0, 1] },
];

// Line 1 is the header. Line 6 has no item (bad); line 7 is a 3-star rating (ignored).
const EVENTS_CSV = `user_id,item_id,timestamp,signal
u1,i1,1000,5
u1,i2,2000,4
u1,i4,1500,1
u2,i3,1000,5
u1,,3000,5
u1,i3,2500,3
`;

const EVENTS_JSONL = [
  { user: 'u1', item: 'i1', ts: 1_000_000, type: 'like' },
  { user: 'u1', item: 'i2', ts: 2_000_000, type: 'like' },
  { user: 'u1', item: 'i4', ts: 1_500_000, type: 'dislike' },
  { user: 'u2', item: 'i3', ts: 1_000_000, type: 'like' },
]
  .map((event) => JSON.stringify(event))
  .join('\n');

const REQUESTS = [
  'u1,i3,2000,1', // exactly at the i2 event: i2 must not count
  'u1,i3,2001,0', // one second later: it does
  'u3,i1,5000', // a user without events
  'u1,missing,2001,0', // a candidate without embedding
  'u2,i1,1000,1', // exactly at u2's only event: nothing yet
];

async function workspace(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-backfill-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'items.jsonl'), ITEMS.map((item) => JSON.stringify(item)).join('\n'));
  await writeFile(join(dir, 'events.csv'), EVENTS_CSV);
  await writeFile(join(dir, 'events.jsonl'), EVENTS_JSONL);
  return dir;
}

function options(dir: string, requests: string, out: string, csvLog = true): BackfillOptions {
  return {
    events: csvLog
      ? {
          path: join(dir, 'events.csv'),
          timestampUnit: 's',
          signalMap: parseSignalMap('like:>=4,dislike:<=2'),
        }
      : { path: join(dir, 'events.jsonl'), timestampUnit: 'ms' },
    itemsPath: join(dir, 'items.jsonl'),
    catalogue: { center: false, normalize: true },
    requestsPath: join(dir, requests),
    outPath: join(dir, out),
    settings: methodSettings(loadConfig({})),
  };
}

interface Row {
  user: string;
  item: string;
  ts: number;
  label: number | null;
  features: Record<string, number | null>;
}

async function readJsonl(path: string): Promise<Row[]> {
  const text = await readFile(path, 'utf8');
  return text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Row);
}

function close(actual: number | null | undefined, expected: number, label: string): void {
  assert.ok(
    typeof actual === 'number' && Math.abs(actual - expected) <= TOLERANCE,
    `${label}: ${actual} vs ${expected}`,
  );
}

test('an event at exactly the request time is not included; one second later it is', async (t) => {
  const dir = await workspace(t);
  await writeFile(
    join(dir, 'requests.csv'),
    `user_id,item_id,timestamp,label\n${REQUESTS.join('\n')}\n`,
  );
  const summary = await runBackfill(options(dir, 'requests.csv', 'out.jsonl'));
  const rows = await readJsonl(join(dir, 'out.jsonl'));
  assert.equal(rows.length, REQUESTS.length);
  assert.equal(summary.requests.groups, 4);

  // At 2000 s: like i1 at 1000 s and dislike i4 at 1500 s. e3 normalised is (1, 1, 0) / sqrt 2.
  const at = rows[0]!.features;
  close(at['agg.pos.1h.weight'], 3 * 2 ** (-1000 / HOUR_S), 'pos weight at 2000 s');
  close(at['agg.pos.1h.cos'], 1 / Math.SQRT2, 'pos cos at 2000 s');
  close(at['agg.neg.1h.weight'], 3 * 2 ** (-500 / HOUR_S), 'neg weight at 2000 s');
  close(at['agg.neg.1h.cos'], 0, 'neg cos at 2000 s');
  assert.equal(at['agg.hist.pos.count'], 1);

  // At 2001 s: the sum anchored at 2000 s is a e1 + 3 e2 with a = 3 * 2^(-1000/h).
  const after = rows[1]!.features;
  const a = 3 * 2 ** (-1000 / HOUR_S);
  close(after['agg.pos.1h.weight'], (a + 3) * 2 ** (-1 / HOUR_S), 'pos weight at 2001 s');
  close(after['agg.pos.1h.cos'], (a + 3) / (Math.hypot(a, 3) * Math.SQRT2), 'pos cos at 2001 s');
  assert.equal(after['agg.hist.pos.count'], 2);
  assert.equal(rows[1]!.label, 0);
});

test('users without earlier events and candidates without embeddings give nulls, not zeros', async (t) => {
  const dir = await workspace(t);
  await writeFile(join(dir, 'requests.csv'), REQUESTS.join('\n'));
  await runBackfill(options(dir, 'requests.csv', 'out.jsonl'));
  const rows = await readJsonl(join(dir, 'out.jsonl'));

  for (const index of [2, 4]) {
    const features = rows[index]!.features;
    assert.equal(features['agg.pos.1h.cos'], null, `row ${index}`);
    assert.equal(features['agg.pos.1h.weight'], 0, `row ${index}`);
    assert.equal(features['dual.score'], null, `row ${index}`);
  }
  assert.equal(rows[2]!.label, null);

  const missing = rows[3]!.features;
  assert.equal(missing['agg.pos.1h.cos'], null);
  assert.equal(missing['dual.score'], null);
  assert.ok((missing['agg.pos.1h.weight'] as number) > 0);
  assert.ok(typeof rows[1]!.features['dual.score'] === 'number');
});

test('request rows in another order, and the JSONL log, give the same features row for row', async (t) => {
  const dir = await workspace(t);
  await writeFile(join(dir, 'requests.csv'), REQUESTS.join('\n'));
  const shuffled = [REQUESTS[4], REQUESTS[1], REQUESTS[3], REQUESTS[0], REQUESTS[2]];
  await writeFile(join(dir, 'shuffled.csv'), shuffled.join('\n'));

  await runBackfill(options(dir, 'requests.csv', 'a.jsonl'));
  await runBackfill(options(dir, 'shuffled.csv', 'b.jsonl'));
  // The JSONL log is in ms; the request file keeps seconds, said by its own unit.
  await runBackfill({
    ...options(dir, 'requests.csv', 'c.jsonl', false),
    requestTimestampUnit: 's',
  });
  const key = (row: Row) => `${row.user}|${row.item}|${row.ts}`;
  const a = new Map((await readJsonl(join(dir, 'a.jsonl'))).map((row) => [key(row), row]));
  const b = await readJsonl(join(dir, 'b.jsonl'));
  assert.deepEqual(
    b.map((row) => row.user + row.ts),
    shuffled.map((line) => line!.split(',')[0]! + Number(line!.split(',')[2]) * 1000),
  );
  for (const row of b) assert.deepEqual(row, a.get(key(row)));
  assert.deepEqual(await readJsonl(join(dir, 'c.jsonl')), [...a.values()]);
});

test('bad rows are counted with line numbers; CSV output has a header of feature names', async (t) => {
  const dir = await workspace(t);
  await writeFile(join(dir, 'requests.csv'), `${REQUESTS.join('\n')}\nu1,i1,soon\n`);
  const summary = await runBackfill(options(dir, 'requests.csv', 'out.csv'));

  assert.equal(summary.events.badRowCount, 1);
  assert.equal(summary.events.badRows[0]!.line, 6);
  assert.equal(summary.events.ignored, 1);
  assert.equal(summary.requests.badRowCount, 1);
  assert.equal(summary.requests.badRows[0]!.line, 6);

  const lines = (await readFile(join(dir, 'out.csv'), 'utf8')).trim().split('\n');
  const header = lines[0]!.split(',');
  assert.deepEqual(header.slice(0, 4), ['user_id', 'item_id', 'timestamp_ms', 'label']);
  assert.deepEqual(header.slice(4), summary.features);
  assert.equal(lines.length, 1 + REQUESTS.length);
  const third = lines[3]!.split(',');
  assert.equal(third[header.indexOf('agg.pos.1h.cos')], '');
  assert.equal(third[header.indexOf('agg.pos.1h.weight')], '0');
});

test('strict mode stops at the first bad row with its line', async (t) => {
  const dir = await workspace(t);
  await writeFile(join(dir, 'requests.csv'), REQUESTS.join('\n'));
  await assert.rejects(
    runBackfill({
      ...options(dir, 'requests.csv', 'out.jsonl'),
      strict: true,
      events: { ...options(dir, '', '').events, strict: true },
    }),
    /events\.csv:6: empty item_id/,
  );
});

test('request rows are read as RFC 4180 CSV: quoted commas and doubled quotes', () => {
  assert.deepEqual(parseRequestRow('"u,1","i ""x""",2,1', 's'), {
    user: 'u,1',
    item: 'i "x"',
    ts: 2_000,
    label: 1,
  });
  assert.deepEqual(parseRequestRow('u1,"i1,3', 's'), { bad: 'unclosed double quote' });
  assert.ok('bad' in parseRequestRow('u1,i1', 's'));
});
