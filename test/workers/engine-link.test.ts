/**
 * The engine thread's metrics and log lines reach the main thread's registry and logger as if
 * they had been recorded there, and the events handed to it arrive as they were decoded.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import type { StateMetrics } from '../../src/ops/metrics.js';
import { WorkerMetrics, createRegistry } from '../../src/ops/metrics.js';
import { AffinityError } from '../../src/errors.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { loadConfig } from '../../src/config/config.js';
import { decodeEvent } from '../../src/stream/decode.js';
import { EventScanner } from '../../src/stream/scan.js';
import {
  ColumnsBuilder,
  MetricRecorder,
  applyMetricDelta,
  eventAt,
  isPassing,
  relayLogLine,
  signalTypes,
} from '../../src/workers/engine-link.js';

test('recorded counters and observations replay as the same metric values', async () => {
  const direct = new WorkerMetrics(createRegistry(false));
  const relayed = new WorkerMetrics(createRegistry(false));
  const recorder = new MetricRecorder();
  const record = (metrics: StateMetrics) => {
    metrics.eventsApplied.inc(3);
    metrics.eventsApplied.inc();
    metrics.eventsPending.inc({ outcome: 'added' }, 2);
    metrics.eventsPending.inc({ outcome: 'folded' });
    metrics.eventsPending.inc({ outcome: 'added' }, 5);
  };
  record(direct);
  record(recorder.metrics);
  for (const value of [0.003, 0.2, 7, 0.2]) {
    direct.freshnessSeconds.observe(value);
    recorder.metrics.freshnessSeconds.observe(value);
  }

  const delta = recorder.take();
  applyMetricDelta(relayed, delta);
  assert.equal(recorder.take(), null, 'take() resets the recorder');

  const names = [
    'affinity_events_applied_total',
    'affinity_events_pending_total',
    'affinity_event_freshness_seconds',
  ];
  for (const name of names) {
    const expected = await direct.registry.getSingleMetricAsString(name);
    assert.equal(await relayed.registry.getSingleMetricAsString(name), expected, name);
  }
});

test("a relayed log line keeps its level, message and fields, not the engine's own", () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  const logger = pino({ level: 'info', base: { service: 'affinity' } }, sink);
  const engineLine = JSON.stringify({
    level: 40,
    time: 1,
    pid: 7,
    hostname: 'h',
    msg: 'flush failed',
    users: 3,
    err: { type: 'AffinityError', message: 'boom', stack: 'AffinityError: boom', code: 'X' },
  });

  relayLogLine(logger, engineLine);
  relayLogLine(logger, JSON.stringify({ level: 20, msg: 'below the level' }));
  relayLogLine(logger, 'not json');

  const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.equal(records.length, 2);
  const [relayed, complaint] = records;
  assert.equal(relayed!['level'], 40);
  assert.equal(relayed!['msg'], 'flush failed');
  assert.equal(relayed!['users'], 3);
  assert.equal(relayed!['thread'], 'engine');
  const err = { type: 'AffinityError', message: 'boom', stack: 'AffinityError: boom', code: 'X' };
  assert.deepEqual(relayed!['err'], err);
  assert.notEqual(relayed!['pid'], 7, "the main thread's own pid, not the engine's field");
  assert.equal(complaint!['msg'], 'engine thread wrote a log line that is not JSON');
});

test('events cross to the engine as columns and come back as the same events', () => {
  const types = ['click', 'like', 'dislike'];
  const typeIndex = new Map(types.map((type, i) => [type, i]));
  const events: InteractionEvent[] = [
    { user: 'u1', item: 'a', ts: 1_000, type: 'click' },
    { user: 'ü2', item: 'b', ts: 2_000, type: 'like', value: 0.5 },
    { user: 'u1', item: 'c', ts: 3_000, type: 'dislike', id: 'e-3' },
    { user: 'u3', item: 'a', ts: 4_000, type: 'click', value: 0, id: 'e-4' },
    { user: 'u3', item: 'd', ts: 5_000, type: 'like' },
  ];
  const builder = new ColumnsBuilder(10, typeIndex);
  events.forEach((event, i) => builder.add(event, 100 + 2 * i));
  const { columns, transfer } = builder.build();

  assert.equal(transfer.length, 6);
  assert.deepEqual(columns.userNames, ['u1', 'ü2', 'u3'], 'each user once, first seen first');
  assert.deepEqual(columns.itemNames, ['a', 'b', 'c', 'd']);
  assert.deepEqual([...columns.users], [0, 1, 0, 2, 2]);
  assert.deepEqual([...columns.items], [0, 1, 2, 0, 3]);
  const crossed = structuredClone(columns);
  const decoded = events.map((_, i) => eventAt(crossed, i, 7, types));
  const expected = events.map((event, i) => ({
    event,
    position: { partition: 7, offset: 100 + 2 * i },
  }));
  assert.deepEqual(decoded, expected);
  const withoutIds = new ColumnsBuilder(1, typeIndex);
  withoutIds.add(events[0]!, 1);
  assert.equal(withoutIds.build().columns.ids, null, 'no id column when no event has an id');
});

test('scanned events give the same columns as decoded ones, for thousands of names', () => {
  const limits = { ...loadConfig({}), maxEventAgeMs: Number.MAX_SAFE_INTEGER };
  const { index } = signalTypes(limits.signals);
  const scanner = new EventScanner(limits, index);
  // Enough distinct names, some long, to grow the dictionaries' tables and byte stores; the
  // non-ASCII ones the scanner leaves to decodeEvent, mixed with scanned ones of one batch.
  const messages = Array.from({ length: 6_000 }, (_, n) => {
    const user = n % 7 === 0 ? `ü${n % 900}` : `user-${(n * 31) % 2_500}-${'x'.repeat(n % 40)}`;
    const event = { user, item: `i${n % 1_700}`, ts: 1_000 + n, type: n % 3 ? 'click' : 'like' };
    return Buffer.from(JSON.stringify(n % 5 ? event : { ...event, value: n / 8, id: `e${n}` }));
  });
  const decoded = new ColumnsBuilder(messages.length, index);
  const mixed = new ColumnsBuilder(messages.length, index);
  let scanned = 0;
  messages.forEach((bytes, n) => {
    const result = decodeEvent(bytes, 2_000, limits);
    assert.ok(result.ok);
    decoded.add(result.event, n);
    if (!scanner.scan(bytes, 2_000)) return mixed.add(result.event, n);
    mixed.addScanned(bytes, scanner, n);
    scanned++;
  });

  assert.ok(scanned > 5_000, `${scanned} of the messages were scanned`);
  const expected = decoded.build().columns;
  assert.deepEqual(mixed.build().columns, expected);
  const users = messages.map((bytes) => (JSON.parse(bytes.toString()) as { user: string }).user);
  assert.deepEqual(expected.userNames, [...new Set(users)], 'each user once, first seen first');
  assert.ok(expected.userNames.length > 1_000);
});

test('Redis outages and retriable errors are waited out; other faults are not', () => {
  const named = (name: string, message: string) => Object.assign(new Error(message), { name });
  const coded = (code: string) => Object.assign(new Error(`connect ${code}`), { code });
  const passing = [
    new AffinityError('REDIS_UNAVAILABLE', 'down', { retriable: true }),
    new AffinityError('CATALOGUE_MISSING', 'none yet', { retriable: true }),
    coded('ECONNREFUSED'),
    coded('ECONNRESET'),
    named('MaxRetriesPerRequestError', 'Reached the max retries per request limit'),
    named('ReplyError', 'OOM command not allowed when used memory > maxmemory'),
    named('ReplyError', 'LOADING Redis is loading the dataset in memory'),
    new Error('Connection is closed.'),
  ];
  const failing = [
    new AffinityError('STATE_CORRUPT', 'bad state'),
    named('ReplyError', 'WRONGTYPE Operation against a key holding the wrong kind of value'),
    new TypeError("Cannot read properties of undefined (reading 'x')"),
    new Error('event type "x" is not configured'),
    'not an error',
  ];
  for (const err of passing) assert.equal(isPassing(err), true, String(err));
  for (const err of failing) assert.equal(isPassing(err), false, String(err));
});
