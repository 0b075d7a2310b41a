/**
 * The logistic ranker: its solution satisfies the optimality condition of the regularised
 * objective (gradient computed here, independently, from the definition), it recovers the
 * coefficients of data drawn from a known logistic model, and nulls go to the indicator.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { seededRandom } from '../../src/offline/metrics.js';
import { fitLogistic, scoreRows } from '../../src/offline/ranker.js';

function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** n rows of two features ~ N(0, 1) (scaled), labels from sigmoid(b + w·x). */
function logisticData(n: number, b: number, w: [number, number], seed: number) {
  const random = seededRandom(seed);
  const values = new Float64Array(2 * n);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const x0 = gaussian(random);
    const x1 = 3 * gaussian(random) + 5;
    values[2 * i] = x0;
    values[2 * i + 1] = x1;
    const p = 1 / (1 + Math.exp(-(b + w[0] * x0 + w[1] * x1)));
    labels[i] = random() < p ? 1 : 0;
  }
  return { values, rows: n, columns: 2, labels };
}

test('the fit is a stationary point of logloss + lambda/2 |w|^2 (gradient below 1e-6 of n)', () => {
  const data = logisticData(2_000, -1, [1.5, -0.4], 11);
  const l2 = 5;
  const model = fitLogistic(data, { l2 });

  // The model works on standardised columns: rebuild them here and differentiate directly.
  const gradient = [0, 0, 0];
  for (let i = 0; i < data.rows; i++) {
    const z = [0, 1].map((j) => (data.values[2 * i + j]! - model.means[j]!) / model.scales[j]!);
    const eta = model.intercept + model.weights[0]! * z[0]! + model.weights[1]! * z[1]!;
    const residual = 1 / (1 + Math.exp(-eta)) - data.labels[i]!;
    gradient[0]! += residual;
    gradient[1]! += residual * z[0]!;
    gradient[2]! += residual * z[1]!;
  }
  gradient[1]! += l2 * model.weights[0]!;
  gradient[2]! += l2 * model.weights[1]!;
  for (const g of gradient) assert.ok(Math.abs(g) < 1e-6 * data.rows, `gradient ${gradient}`);
});

test('recovers the coefficients of a known logistic model (n = 20,000, within 0.1)', () => {
  // Standard errors at this n are about 0.03; 0.1 is over three of them.
  const data = logisticData(20_000, -1, [1.5, -0.4], 3);
  const model = fitLogistic(data, { l2: 1e-6 });
  const w0 = model.weights[0]! / model.scales[0]!;
  const w1 = model.weights[1]! / model.scales[1]!;
  const b = model.intercept - w0 * model.means[0]! - w1 * model.means[1]!;
  assert.ok(Math.abs(w0 - 1.5) < 0.1, `w0 ${w0}`);
  assert.ok(Math.abs(w1 + 0.4) < 0.1, `w1 ${w1}`);
  assert.ok(Math.abs(b + 1) < 0.1 * 3, `b ${b}`);
});

test('a null becomes the mean plus an indicator; the indicator learns what missingness says', () => {
  // Feature 0 is null exactly on the positives: only the indicator can separate the classes.
  const n = 400;
  const random = seededRandom(9);
  const values = new Float64Array(2 * n);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % 4 === 0 ? 1 : 0;
    values[2 * i] = labels[i] ? Number.NaN : random();
    values[2 * i + 1] = random();
  }
  const model = fitLogistic({ values, rows: n, columns: 2, labels }, { l2: 1 });
  assert.deepEqual(model.indicators, [0]);
  assert.ok(model.weights[2]! > 2, `indicator weight ${model.weights[2]}`);

  const scores = scoreRows(model, Float64Array.from([Number.NaN, 0.5, 0.5, 0.5]), 2);
  assert.ok(scores[0]! > scores[1]!);
});

test('a constant column is dropped, not divided by zero', () => {
  const values = Float64Array.from([1, 0, 1, 1, 1, 2, 1, 3]);
  const labels = Uint8Array.from([0, 0, 1, 1]);
  const model = fitLogistic({ values, rows: 4, columns: 2, labels });
  assert.equal(model.scales[0], 0);
  assert.equal(model.weights[0], 0);
  assert.ok(Number.isFinite(model.intercept));
});
