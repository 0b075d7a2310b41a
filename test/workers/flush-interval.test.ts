/**
 * The write-behind interval stretches after slow flushes (state-buffer.ts): values worked out
 * by hand from "flushes take at most AFFINITY_FLUSH_TIME_SHARE of the time". Exact: the
 * arithmetic is on small binary fractions.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import { flushIntervalAfter } from '../../src/workers/state-buffer.js';

/** Share 0.25 (the default is 0.1, not a binary fraction). */
const quarter = loadConfig({ AFFINITY_FLUSH_TIME_SHARE: '0.25' });

test('a fast flush keeps the configured interval', () => {
  const config = quarter;
  assert.equal(flushIntervalAfter(0, config), 500);
  assert.equal(flushIntervalAfter(100, config), 500);
});

test('a slow flush stretches the interval so that flushes take the configured share', () => {
  const config = quarter;
  // Share 0.25: a 400 ms flush is followed by at least 1,200 ms of consuming.
  assert.equal(flushIntervalAfter(400, config), 1_200);
  const half = loadConfig({ AFFINITY_FLUSH_TIME_SHARE: '0.5' });
  assert.equal(flushIntervalAfter(400, half), 500);
  assert.equal(flushIntervalAfter(800, half), 800);
});

test('share 1 never stretches; the stretch stops at half the session timeout', () => {
  assert.equal(flushIntervalAfter(5_000, loadConfig({ AFFINITY_FLUSH_TIME_SHARE: '1' })), 500);
  assert.equal(flushIntervalAfter(60_000, loadConfig({})), 15_000);
});

test('once the backlog is read, the configured interval applies again', () => {
  const config = quarter;
  assert.equal(flushIntervalAfter(400, config, false), 1_200);
  assert.equal(flushIntervalAfter(400, config, true), 500);
  assert.equal(flushIntervalAfter(60_000, config, true), 500);
});
