/**
 * decayFactor against 2 ** (-age / halfLife), V8's own power function: the split into a power
 * of two and an exponential (decay.ts) must not move the factor by more than rounding.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decayFactor } from '../../src/features/decay.js';
import { seededRandom } from '../helpers/services.js';

const HOUR_MS = 3_600_000;
const HALF_LIVES_MS = [HOUR_MS, 24 * HOUR_MS, 30 * 24 * HOUR_MS, 7];

test('the factor is within two units in the last place of 2^(-age / half-life)', () => {
  const random = seededRandom(4_242);
  // Two units in the last place of a float64 in [0.5, 1), relative.
  const tolerance = 2 * 2 ** -53;
  for (let n = 0; n < 200_000; n++) {
    const halfLifeMs = HALF_LIVES_MS[n % HALF_LIVES_MS.length]!;
    const ageMs = Math.floor(random() * 10 ** (1 + 9 * random()));
    const expected = 2 ** (-ageMs / halfLifeMs);
    const got = decayFactor(ageMs, halfLifeMs);
    if (expected === 0) assert.equal(got, 0, `age ${ageMs}, half-life ${halfLifeMs}`);
    else assert.ok(Math.abs(got / expected - 1) <= tolerance, `age ${ageMs}: ${got} ${expected}`);
  }
});

test('whole half-lives give exact powers of two, age zero gives one, negative ages grow', () => {
  for (const halfLives of [0, 1, 2, 4, 24, 1_074]) {
    assert.equal(decayFactor(halfLives * HOUR_MS, HOUR_MS), 2 ** -halfLives);
  }
  assert.equal(decayFactor(0, HOUR_MS), 1);
  assert.equal(decayFactor(1_080 * HOUR_MS, HOUR_MS), 0, 'below the smallest float64');
  assert.equal(decayFactor(-2 * HOUR_MS, HOUR_MS), 4);
});
