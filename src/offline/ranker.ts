/**
 * The evaluation's ranker: L2-regularised logistic regression, fitted by Newton's method.
 *
 * Why by hand. The one logistic regression on npm from a maintained numeric project
 * (`ml-logistic-regression` 2.0.0, mljs) runs a fixed number of plain gradient steps (50,000 by
 * default) with a fixed learning rate, no intercept, no regularisation and no convergence test.
 * With at most a hundred columns, Newton's method is exact and converges in about ten steps:
 * each builds the Hessian X^T W X + lambda I (O(n p^2)) and solves it with ml-matrix's Cholesky
 * decomposition, which the project already depends on. No well-kept pure-JavaScript gradient-
 * boosted-tree library exists on npm (the mljs `ml-xgboost` is a WebAssembly build of XGBoost
 * 0.x, pinned to ml-matrix 5), so trees are not offered.
 *
 * Inputs. Each feature is standardised with the training rows' mean and standard deviation of
 * its observed values; a null (NaN) then becomes 0, the mean, and a missing-indicator column
 * (1 where the value was null) is added for every feature that had nulls in training. So a null
 * costs the model nothing unless missingness itself predicts the label, in which case the
 * indicator learns it, rather than null being read as a real 0 (a cosine of 0 is a statement).
 * Columns constant in training are dropped. The intercept is not penalised.
 *
 * Objective: sum_i logloss(y_i, sigmoid(b + w·x_i)) + lambda / 2 |w|^2. Each Newton step is
 * halved until the objective decreases (a backtracking line search), so it cannot diverge.
 */
import { CholeskyDecomposition, Matrix } from 'ml-matrix';

export interface RankerOptions {
  /** L2 weight lambda on the standardised coefficients; default 1. */
  readonly l2?: number;
  /** Newton steps at most; default 30. */
  readonly maxIterations?: number;
  /** Stop when the objective improves by less than this fraction; default 1e-9. */
  readonly tolerance?: number;
}

/** A fitted model: standardisation, indicator columns and coefficients. */
export interface LogisticModel {
  /** Per input column: mean and scale of its observed training values; scale 0 = dropped. */
  readonly means: Float64Array;
  readonly scales: Float64Array;
  /** Input columns that get a missing indicator, in design order after the values. */
  readonly indicators: readonly number[];
  readonly intercept: number;
  /** Value coefficients (one per input column, 0 when dropped), then one per indicator. */
  readonly weights: Float64Array;
  readonly iterations: number;
}

/** Training data: `rows` x `columns` row-major values (NaN = null) and 0/1 labels. */
export interface TrainingData {
  readonly values: Float64Array;
  readonly rows: number;
  readonly columns: number;
  readonly labels: Uint8Array;
}

export function fitLogistic(data: TrainingData, options: RankerOptions = {}): LogisticModel {
  const { means, scales } = standardisation(data);
  const indicators = indicatorColumns(data);
  const design = designMatrix(data, means, scales, indicators);
  const fitted = newton(design, data.labels, options);
  const weights = new Float64Array(data.columns + indicators.length);
  weights.set(fitted.coefficients.subarray(1));
  return {
    means,
    scales,
    indicators,
    intercept: fitted.coefficients[0]!,
    weights,
    iterations: fitted.iterations,
  };
}

/** The model's linear score b + w·x for each of `rows` rows (higher = more likely positive). */
export function scoreRows(model: LogisticModel, values: Float64Array, rows: number): Float64Array {
  const columns = model.means.length;
  const scores = new Float64Array(rows);
  for (let row = 0; row < rows; row++) {
    let score = model.intercept;
    const offset = row * columns;
    for (let j = 0; j < columns; j++) {
      const value = values[offset + j]!;
      if (model.scales[j] === 0 || Number.isNaN(value)) continue;
      score += model.weights[j]! * ((value - model.means[j]!) / model.scales[j]!);
    }
    model.indicators.forEach((column, k) => {
      if (Number.isNaN(values[offset + column]!)) score += model.weights[columns + k]!;
    });
    scores[row] = score;
  }
  return scores;
}

function standardisation(data: TrainingData): { means: Float64Array; scales: Float64Array } {
  const { values, rows, columns } = data;
  const sums = new Float64Array(columns);
  const squares = new Float64Array(columns);
  const counts = new Float64Array(columns);
  for (let row = 0; row < rows; row++) {
    for (let j = 0; j < columns; j++) {
      const value = values[row * columns + j]!;
      if (Number.isNaN(value)) continue;
      sums[j]! += value;
      squares[j]! += value * value;
      counts[j]!++;
    }
  }
  const means = new Float64Array(columns);
  const scales = new Float64Array(columns);
  for (let j = 0; j < columns; j++) {
    if (counts[j]! < 2) continue;
    means[j] = sums[j]! / counts[j]!;
    const variance = Math.max(0, squares[j]! / counts[j]! - means[j]! ** 2);
    // A spread below 1e-12 of the values' size is rounding: the column is constant.
    const scale = Math.sqrt(variance);
    scales[j] = scale > 1e-12 * Math.max(1, Math.abs(means[j]!)) ? scale : 0;
  }
  return { means, scales };
}

/** Columns with at least one null and at least one value in training. */
function indicatorColumns(data: TrainingData): number[] {
  const { values, rows, columns } = data;
  const missing = new Float64Array(columns);
  for (let row = 0; row < rows; row++) {
    for (let j = 0; j < columns; j++) if (Number.isNaN(values[row * columns + j]!)) missing[j]!++;
  }
  const indicators: number[] = [];
  for (let j = 0; j < columns; j++) if (missing[j]! > 0 && missing[j]! < rows) indicators.push(j);
  return indicators;
}

/** Row-major design matrix: intercept 1, standardised values (0 for null), indicators. */
function designMatrix(
  data: TrainingData,
  means: Float64Array,
  scales: Float64Array,
  indicators: readonly number[],
): { x: Float64Array; width: number; rows: number } {
  const { values, rows, columns } = data;
  const width = 1 + columns + indicators.length;
  const x = new Float64Array(rows * width);
  for (let row = 0; row < rows; row++) {
    const out = row * width;
    x[out] = 1;
    for (let j = 0; j < columns; j++) {
      const value = values[row * columns + j]!;
      if (scales[j] !== 0 && !Number.isNaN(value))
        x[out + 1 + j] = (value - means[j]!) / scales[j]!;
    }
    indicators.forEach((column, k) => {
      if (Number.isNaN(values[row * columns + column]!)) x[out + 1 + columns + k] = 1;
    });
  }
  return { x, width, rows };
}

interface Design {
  readonly x: Float64Array;
  readonly width: number;
  readonly rows: number;
}

function newton(
  design: Design,
  labels: Uint8Array,
  options: RankerOptions,
): { coefficients: Float64Array; iterations: number } {
  const l2 = options.l2 ?? 1;
  const maxIterations = options.maxIterations ?? 30;
  const tolerance = options.tolerance ?? 1e-9;
  let coefficients: Float64Array = new Float64Array(design.width);
  let objective = objectiveAt(design, labels, coefficients, l2);

  let iterations = 0;
  while (iterations < maxIterations) {
    iterations++;
    const step = newtonStep(design, labels, coefficients, l2);
    const next = lineSearch(design, labels, coefficients, step, objective, l2);
    if (next === null) break;
    const improvement = objective - next.objective;
    coefficients = next.coefficients;
    objective = next.objective;
    if (improvement <= tolerance * Math.max(1, Math.abs(objective))) break;
  }
  return { coefficients, iterations };
}

/** Solves (X^T W X + L) d = -(gradient), L = lambda on every coefficient but the intercept. */
function newtonStep(
  design: Design,
  labels: Uint8Array,
  coefficients: Float64Array,
  l2: number,
): Float64Array {
  const { x, width, rows } = design;
  const hessian = new Float64Array(width * width);
  const gradient = new Float64Array(width);
  for (let row = 0; row < rows; row++) {
    const offset = row * width;
    const p = sigmoid(linear(x, offset, coefficients));
    const weight = Math.max(p * (1 - p), 1e-12);
    const residual = p - labels[row]!;
    for (let i = 0; i < width; i++) {
      const xi = x[offset + i]!;
      if (xi === 0) continue;
      gradient[i]! += residual * xi;
      const wxi = weight * xi;
      for (let j = i; j < width; j++) hessian[i * width + j]! += wxi * x[offset + j]!;
    }
  }
  addPenalty(hessian, gradient, coefficients, width, l2);
  return solveSymmetric(hessian, gradient, width);
}

function addPenalty(
  hessian: Float64Array,
  gradient: Float64Array,
  coefficients: Float64Array,
  width: number,
  l2: number,
): void {
  // A tiny ridge on the intercept too keeps the system definite when every label is equal.
  hessian[0]! += 1e-9;
  for (let i = 1; i < width; i++) {
    hessian[i * width + i]! += l2;
    gradient[i]! += l2 * coefficients[i]!;
  }
}

/** Mirrors the upper triangle and solves H d = -g by Cholesky. */
function solveSymmetric(
  hessian: Float64Array,
  gradient: Float64Array,
  width: number,
): Float64Array {
  const matrix = new Matrix(width, width);
  for (let i = 0; i < width; i++) {
    for (let j = i; j < width; j++) {
      matrix.set(i, j, hessian[i * width + j]!);
      matrix.set(j, i, hessian[i * width + j]!);
    }
  }
  const rhs = Matrix.columnVector(Array.from(gradient, (g) => -g));
  return Float64Array.from(new CholeskyDecomposition(matrix).solve(rhs).getColumn(0));
}

/** Halves the step until the objective decreases; null when 30 halvings do not. */
function lineSearch(
  design: Design,
  labels: Uint8Array,
  coefficients: Float64Array,
  step: Float64Array,
  objective: number,
  l2: number,
): { coefficients: Float64Array; objective: number } | null {
  let scale = 1;
  for (let attempt = 0; attempt < 30; attempt++, scale /= 2) {
    const candidate = coefficients.map((c, i) => c + scale * step[i]!);
    const value = objectiveAt(design, labels, candidate, l2);
    if (value < objective) return { coefficients: candidate, objective: value };
  }
  return null;
}

function objectiveAt(
  design: Design,
  labels: Uint8Array,
  coefficients: Float64Array,
  l2: number,
): number {
  let total = 0;
  for (let row = 0; row < design.rows; row++) {
    const eta = linear(design.x, row * design.width, coefficients);
    // log(1 + e^eta) - y eta, written to stay finite for large |eta|.
    total += Math.max(eta, 0) + Math.log1p(Math.exp(-Math.abs(eta))) - labels[row]! * eta;
  }
  let penalty = 0;
  for (let i = 1; i < coefficients.length; i++) penalty += coefficients[i]! ** 2;
  return total + (l2 / 2) * penalty;
}

function linear(x: Float64Array, offset: number, coefficients: Float64Array): number {
  let eta = 0;
  for (let i = 0; i < coefficients.length; i++) eta += x[offset + i]! * coefficients[i]!;
  return eta;
}

function sigmoid(eta: number): number {
  return eta >= 0 ? 1 / (1 + Math.exp(-eta)) : Math.exp(eta) / (1 + Math.exp(eta));
}
