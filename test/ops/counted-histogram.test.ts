/**
 * CountedHistogram against prom-client's own Histogram: the same observations, one by one or
 * counted into buckets first, must give the very same exposition text.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { CountedHistogram, bucketOf } from '../../src/ops/counted-histogram.js';
import { seededRandom } from '../helpers/services.js';

const BUCKETS = [0.01, 0.1, 0.5, 1, 10];
const NAME = 'test_freshness_seconds';
const HELP = 'Seconds, for the test';

/** Bounds themselves, values between, zero, negatives and values above every bound. */
function observations(): number[] {
  const random = seededRandom(77);
  const values = [...BUCKETS, 0, -1, 10.000001, 1e9];
  for (let n = 0; n < 1_000; n++) values.push(20 * random() ** 3 - 0.5);
  return values;
}

async function reference(values: readonly number[]): Promise<string> {
  const registry = new Registry();
  const histogram = new Histogram({ name: NAME, help: HELP, buckets: BUCKETS, registers: [] });
  registry.registerMetric(histogram);
  for (const value of values) histogram.observe(value);
  return registry.metrics();
}

/** A CountedHistogram of the test's buckets, on a registry of its own. */
function counted(): { registry: Registry; histogram: CountedHistogram } {
  const registry = new Registry();
  const options = { name: NAME, help: HELP, buckets: BUCKETS, registers: [registry] };
  return { registry, histogram: new CountedHistogram(options) };
}

test('observed one by one, it exposes what prom-client exposes', async () => {
  const { registry, histogram } = counted();
  const values = observations();
  for (const value of values) histogram.observe(value);

  assert.equal(await registry.metrics(), await reference(values));
  assert.throws(() => histogram.observe(NaN), TypeError);
});

test('counted into buckets first, in two parts, it exposes the same', async () => {
  const { registry, histogram } = counted();
  const values = observations();
  for (const part of [values.slice(0, 300), values.slice(300)]) {
    const counts = new Float64Array(BUCKETS.length + 1);
    for (const value of part) counts[bucketOf(BUCKETS, value)]! += 1;
    histogram.observeCounts(
      counts,
      part.reduce((sum, value) => sum + value, 0),
    );
  }

  // The sum is added in another order, so it may differ in its last digits: 1e-12 relative.
  const [got, expected] = [await registry.metrics(), await reference(values)];
  const sumOf = (text: string) => Number(/_sum (\S+)/.exec(text)![1]);
  const withoutSum = (text: string) => text.replace(/_sum \S+/, '_sum');
  assert.equal(withoutSum(got), withoutSum(expected));
  assert.ok(Math.abs(sumOf(got) / sumOf(expected) - 1) < 1e-12, `${sumOf(got)}`);
  assert.throws(() => histogram.observeCounts([1, 2], 3), RangeError);
  histogram.reset();
  assert.equal(await registry.metrics(), await reference([]));
});
