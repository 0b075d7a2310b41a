import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import { formatDuration, parseDurationMs } from '../../src/config/duration.js';
import { AffinityError } from '../../src/errors.js';

test('defaults are complete and frozen', () => {
  const config = loadConfig({});
  // The values docs/evaluation.md chose on ml-latest-small.
  assert.deepEqual(config.halfLivesMs, [3_600_000, 21_600_000, 31_536_000_000]);
  assert.deepEqual(config.cosineThresholds, [0, 0.4]);
  assert.deepEqual(
    { a0: config.dual.a0, lambda: config.dual.lambda, nu: config.dual.nu },
    { a0: 0.01, lambda: 1, nu: 0.5 },
  );
  assert.equal(config.dual.halfLifeMs, 31_536_000_000);
  assert.equal(config.signals.get('dislike')?.polarity, 'negative');
  assert.equal(config.signals.get('dislike')?.weight, 3);
  assert.equal(config.signals.get('skip')?.target, 0);
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.dual));
});

test('an invalid variable is named in the error', () => {
  const cases: Record<string, string>[] = [
    { AFFINITY_HALF_LIVES: '1h,soon' },
    { AFFINITY_HALF_LIVES: '1h,1h' },
    { AFFINITY_HISTORY_MAX_EVENTS: '0' },
    { AFFINITY_SIGNALS: 'click:0' },
    { AFFINITY_DUAL_ENABLED: 'perhaps' },
    { AFFINITY_COSINE_THRESHOLDS: '2' },
    { AFFINITY_FLUSH_INTERVAL: '40s' },
    { AFFINITY_DEAD_LETTER_TOPIC: 'interactions' },
  ];
  for (const env of cases) {
    const name = Object.keys(env)[0]!;
    assert.throws(
      () => loadConfig(env),
      (err: unknown) =>
        err instanceof AffinityError && err.code === 'CONFIG_INVALID' && err.message.includes(name),
      name,
    );
  }
});

test('durations parse and print back', () => {
  assert.equal(parseDurationMs('1500ms'), 1_500);
  assert.equal(parseDurationMs('90s'), 90_000);
  assert.equal(parseDurationMs('30d'), 2_592_000_000);
  assert.equal(formatDuration(2_592_000_000), '30d');
  assert.equal(formatDuration(5_400_000), '90m');
  assert.equal(formatDuration(1_500), '1500ms');
});
