/**
 * The engine thread's metrics and log lines reach the main thread's registry and logger as if
 * they had been recorded there.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import type { StateMetrics } from '../../src/ops/metrics.js';
import { WorkerMetrics, createRegistry } from '../../src/ops/metrics.js';
import { MetricRecorder, applyMetricDelta, relayLogLine } from '../../src/workers/engine-link.js';

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
