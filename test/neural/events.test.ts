/**
 * The offline event reader: CSV (plain and gzip) through a signal map, JSONL, bad rows reported
 * with the line an editor shows, strict mode, and the signal map grammar.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { gzipSync } from 'node:zlib';
import {
  EventsFileError,
  compareIds,
  mapSignal,
  parseSignalMap,
  readEventsFile,
} from '../../src/neural/events.js';

async function temporaryDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-events-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const signalMap = parseSignalMap('like:>=4,dislike:<=2,click:=click');

/** Line numbers as an editor shows them; the header is line 1. */
const CSV = [
  'user_id,item_id,timestamp,signal', //               1
  '10,200,1000,4.5', //                                 2  like
  '9,201,1000,1.0', //                                  3  dislike (same ts, user 9 < 10)
  '9,202,999,3.0', //                                   4  ignored: no rule for 3.0
  '', //                                                5  blank, skipped
  '9,203,abc,5', //                                     6  bad timestamp
  '9,204,1001', //                                      7  bad: 3 fields
  ',205,1002,5', //                                     8  bad: empty user
  '"u,1",206,1003,click', //                            9  quoted comma, exact string rule
  '"u2,207,1004,5', //                                 10  bad: unclosed quote
  '9,208,998.4,4\r', //                                11  CRLF tail, ts rounds to 998400
].join('\n');

function checkCsvResult(result: Awaited<ReturnType<typeof readEventsFile>>): void {
  assert.equal(result.format, 'csv');
  assert.deepEqual(result.events, [
    { user: '9', item: '208', ts: 998_400, type: 'like' },
    { user: '9', item: '201', ts: 1_000_000, type: 'dislike' },
    { user: '10', item: '200', ts: 1_000_000, type: 'like' },
    { user: 'u,1', item: '206', ts: 1_003_000, type: 'click' },
  ]);
  assert.equal(result.ignored, 1);
  assert.equal(result.badRowCount, 4);
  assert.deepEqual(
    result.badRows.map((row) => row.line),
    [6, 7, 8, 10],
  );
  assert.match(result.badRows[0]!.reason, /timestamp "abc" is not a number/);
  assert.match(result.badRows[1]!.reason, /expected 4 fields, got 3/);
  assert.match(result.badRows[2]!.reason, /empty user_id/);
  assert.match(result.badRows[3]!.reason, /unclosed double quote/);
}

test('reads a CSV log through a signal map, reporting bad rows by line', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'events.csv');
  await writeFile(path, CSV);
  checkCsvResult(await readEventsFile(path, { timestampUnit: 's', signalMap }));
});

test('reads the same log gzip-compressed', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'events.csv.gz');
  await writeFile(path, gzipSync(CSV));
  checkCsvResult(await readEventsFile(path, { timestampUnit: 's', signalMap }));
});

test('strict mode stops at the first bad row with its line', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'events.csv');
  await writeFile(path, CSV);
  await assert.rejects(
    readEventsFile(path, { timestampUnit: 's', signalMap, strict: true }),
    (error: unknown) =>
      error instanceof EventsFileError &&
      error.code === 'EVENTS_ROW' &&
      error.line === 6 &&
      error.message.startsWith(`${path}:6: `),
  );
});

test('a CSV needs its four columns and a signal map', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'events.csv');
  await writeFile(path, 'user_id,item_id,ts,signal\n1,2,3,4\n');
  await assert.rejects(
    readEventsFile(path, { timestampUnit: 's', signalMap }),
    (error: unknown) =>
      error instanceof EventsFileError &&
      error.code === 'EVENTS_FORMAT' &&
      /lacks timestamp/.test(error.message),
  );

  await writeFile(path, 'signal,timestamp,item_id,user_id,extra\n4,5,i,u,x\n');
  const reordered = await readEventsFile(path, { timestampUnit: 'ms', signalMap });
  assert.deepEqual(reordered.events, [{ user: 'u', item: 'i', ts: 5, type: 'like' }]);
  await assert.rejects(readEventsFile(path, { timestampUnit: 'ms' }), /needs a signal map/);
});

test('reads JSONL events with their own types, value and id', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'events.jsonl');
  await writeFile(
    path,
    [
      '{"user":"a","item":"x","ts":2000,"type":"click","value":0.5,"id":"e1"}',
      'not json',
      '{"user":"a","item":"y","ts":1000,"type":"purchase"}',
      '{"user":"a","item":"z","ts":1500}',
      '{"user":7,"item":"z","ts":1500,"type":"skip","value":-1}',
      '[1,2]',
      '{"user":7,"item":8,"ts":1500,"type":"skip","extra":true}',
    ].join('\n'),
  );

  const result = await readEventsFile(path, { timestampUnit: 'ms' });
  assert.equal(result.format, 'jsonl');
  assert.deepEqual(result.events, [
    { user: 'a', item: 'y', ts: 1000, type: 'purchase' },
    { user: '7', item: '8', ts: 1500, type: 'skip' },
    { user: 'a', item: 'x', ts: 2000, type: 'click', value: 0.5, id: 'e1' },
  ]);
  assert.deepEqual(
    result.badRows.map((row) => [row.line, row.reason.split(' ')[0]]),
    [
      [2, 'not'],
      [4, '"type"'],
      [5, '"value"'],
      [6, 'not'],
    ],
  );
  assert.equal(result.ignored, 0);
});

test('a JSONL value above maxEventValue is a bad row, as the worker dead-letters it', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'events.jsonl');
  await writeFile(
    path,
    [
      '{"user":"a","item":"x","ts":1000,"type":"click","value":1000}',
      '{"user":"a","item":"y","ts":2000,"type":"click","value":1e308}',
    ].join('\n'),
  );

  const result = await readEventsFile(path, { timestampUnit: 'ms', maxEventValue: 1_000 });
  assert.deepEqual(result.events, [{ user: 'a', item: 'x', ts: 1000, type: 'click', value: 1000 }]);
  assert.deepEqual(
    result.badRows.map((row) => row.line),
    [2],
  );
  assert.match(result.badRows[0]!.reason, /above the limit 1000/);
});

test('the format of an unknown extension comes from the first line', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'events.log');
  await writeFile(path, '\n{"user":"a","item":"x","ts":1,"type":"click"}\n');
  const result = await readEventsFile(path, { timestampUnit: 's' });
  assert.equal(result.format, 'jsonl');
  assert.deepEqual(result.events, [{ user: 'a', item: 'x', ts: 1000, type: 'click' }]);
});

test('bad rows beyond the report limit are counted, not listed', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'events.jsonl');
  await writeFile(path, 'x\n'.repeat(5));
  const result = await readEventsFile(path, { timestampUnit: 'ms', maxReportedBadRows: 2 });
  assert.equal(result.badRowCount, 5);
  assert.deepEqual(
    result.badRows.map((row) => row.line),
    [1, 2],
  );
});

test('signal maps: comparators, numeric and string equality, first match wins', () => {
  const map = parseSignalMap(' like:>=4, meh:=3 ,dislike:<2.5,low:<3,top:>4.9,click:=click');
  assert.equal(mapSignal(map, '4.0'), 'like');
  assert.equal(mapSignal(map, '5'), 'like', 'like comes before top');
  assert.equal(mapSignal(map, '3.0'), 'meh', '= with a number compares numbers');
  assert.equal(mapSignal(map, '2.5'), 'low');
  assert.equal(mapSignal(map, '2'), 'dislike');
  assert.equal(mapSignal(map, '3.5'), null);
  assert.equal(mapSignal(map, 'click'), 'click');
  assert.equal(mapSignal(map, 'Click'), null);
  assert.equal(mapSignal(map, ''), null);
});

test('signal maps that cannot be read are refused', () => {
  for (const spec of ['', 'like>=4', 'like:', 'like:>=', 'like:>=four', ':>=4', 'like:~4']) {
    assert.throws(
      () => parseSignalMap(spec),
      (error: unknown) => error instanceof EventsFileError && error.code === 'SIGNAL_MAP_INVALID',
      spec,
    );
  }
});

test('signal maps from a JSON file', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'signals.json');
  await writeFile(
    path,
    JSON.stringify({
      rules: [
        { type: 'like', min: 4 },
        { type: 'dislike', max: 2 },
        { type: 'click', equals: 'click' },
      ],
    }),
  );
  const map = parseSignalMap(path);
  assert.deepEqual(map, parseSignalMap('like:>=4,dislike:<=2,click:=click'));

  await writeFile(path, JSON.stringify({ rules: [{ type: 'like', min: 4, max: 5 }] }));
  assert.throws(() => parseSignalMap(path), /exactly one of/);
  await writeFile(path, '{"rules": 3}');
  assert.throws(() => parseSignalMap(path), /expected \{"rules"/);
});

test('ids compare as numbers when both are digit strings', () => {
  const ids = ['b', '10', '9', 'a', '010', '2'];
  assert.deepEqual(ids.sort(compareIds), ['2', '9', '010', '10', 'a', 'b']);
});
