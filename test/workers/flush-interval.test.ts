/**
 * The write-behind interval stretches after slow flushes (state-buffer.ts): values worked out
 * by hand from "flushes take at most AFFINITY_FLUSH_TIME_SHARE of the time". Exact: the
 * arithmetic is on small binary fractions.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import { flushIntervalAfter } from '../../src/workers/state-buffer.js';

test('a fast flush keeps the configured interval', () => {
  const config = loadConfig({});
  assert.equal(flushIntervalAfter(0, config), 500);
  assert.equal(flushIntervalAfter(100, config), 500);
});

test('a slow flush stretches the interval so that flushes take the configured share', () => {
  const config = loadConfig({});
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
