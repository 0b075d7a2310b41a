/**
 * The sampled softmax's log-Q correction. Candidates are m popularity draws with repeats
 * removed, so the probability that an item is among them is 1 - (1 - q)^m, not the single-draw
 * q; the correction must be the log of that (see logInclusionProbability in train.ts). Checked
 * against values worked out by hand and against the frequency with which the real sampler puts
 * each item in a batch.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRandom } from '../../src/neural/model.js';
import {
  batchCandidates,
  logInclusionProbability,
  popularitySampler,
} from '../../src/neural/train.js';

test('the inclusion probability of m draws with repeats removed is 1 - (1 - q)^m', () => {
  // Worked by hand: 1 - 0.5² = 0.75; one draw is q itself; an item drawn for sure stays in.
  assert.ok(Math.abs(logInclusionProbability(0.5, 2) - Math.log(0.75)) < 1e-15);
  assert.ok(Math.abs(logInclusionProbability(0.3, 1) - Math.log(0.3)) < 1e-15);
  assert.equal(logInclusionProbability(1, 2_048), 0);
  // For tiny q it tends to log(m·q); 1 - (1 - q)^m computed naively would have lost 4 of its
  // 16 digits at q = 1e-12. Relative error of the limit: about m·q / 2 = 1e-9.
  const tiny = logInclusionProbability(1e-12, 2_048);
  assert.ok(Math.abs(tiny - Math.log(2_048e-12)) < 2e-9, `${tiny}`);
});

test('each candidate carries the log of how often the sampler puts it in a batch', () => {
  // q = 0.05, 0.1, 0.15, 0.7; with m = 8 draws the inclusion probabilities are 0.337, 0.570,
  // 0.728, 0.99993: far from q, so the single-draw correction fails this test by far.
  const setup = popularitySampler(Float64Array.from([1, 2, 3, 14]));
  const draws = 8;
  const batches = 20_000;
  const random = createRandom(17);
  const seen = new Float64Array(4);
  const reported = new Float64Array(4).fill(Number.NaN);
  for (let b = 0; b < batches; b++) {
    const candidates = batchCandidates(4, new Int32Array(0), setup, draws, random);
    candidates.items.forEach((item, column) => {
      seen[item]! += 1;
      reported[item] = candidates.logQ![column]!;
    });
  }

  for (let item = 0; item < 4; item++) {
    const expected = Math.exp(reported[item]!);
    const frequency = seen[item]! / batches;
    // 5 binomial standard deviations (plus a floor for the all-but-certain item).
    const bound = 5 * Math.sqrt((expected * (1 - expected)) / batches) + 1e-3;
    assert.ok(
      Math.abs(frequency - expected) <= bound,
      `item ${item}: in ${frequency} of the batches, correction says ${expected} (± ${bound})`,
    );
  }
});
