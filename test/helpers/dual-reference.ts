/**
 * An independent reference for the dual-vector solvers: the system written out from its
 * definition (one rank-one term per event, no merging; lambda_u with the distinct item count),
 * solved in float64 by ml-matrix's Cholesky decomposition, with its extreme eigenvalues from
 * ml-matrix's symmetric eigensolver. Also the slack a test allows beyond the tolerance.
 */
import { CholeskyDecomposition, EigenvalueDecomposition, Matrix } from 'ml-matrix';
import type { InteractionEvent } from '../../src/events/types.js';
import type { DualParams, DualTerm } from '../../src/features/dual.js';
import type { Gramian } from '../../src/features/gramian.js';

export { relativeError } from '../../src/features/vector.js';

export interface Reference {
  /** u* in float64. */
  readonly solution: Float64Array;
  readonly lambdaMin: number;
  readonly lambdaMax: number;
  readonly kappa: number;
  /** A unit eigenvector of lambda_min: the direction where a residual hides the most error. */
  readonly softestDirection: Float64Array;
}

/** A = a0 G + sum over events c e e^T + lambda_u I and b = sum over events c y e, solved. */
export function referenceSolve(
  gramian: Gramian,
  catalogueSize: number,
  terms: readonly DualTerm[],
  p: DualParams,
): Reference {
  const dim = gramian.dim;
  const distinct = new Set(terms.filter((t) => t.confidence > 0).map((t) => t.itemId)).size;
  const lambdaUser = p.lambda * Math.pow(distinct + p.a0 * catalogueSize, p.nu);
  const matrix = Matrix.zeros(dim, dim);
  const rhs = new Array<number>(dim).fill(0);
  for (let j = 0; j < dim; j++) {
    for (let k = j; k < dim; k++) {
      matrix.set(j, k, p.a0 * gramian.values[j * dim + k]! + (j === k ? lambdaUser : 0));
    }
  }
  for (const { embedding: e, confidence: c, target: y } of terms) {
    for (let j = 0; j < dim; j++) {
      rhs[j]! += c * y * e[j]!;
      for (let k = j; k < dim; k++) matrix.set(j, k, matrix.get(j, k) + c * e[j]! * e[k]!);
    }
  }
  // Upper triangle mirrored: exactly symmetric, as the eigensolver and Cholesky require.
  for (let j = 1; j < dim; j++) for (let k = 0; k < j; k++) matrix.set(j, k, matrix.get(k, j));

  const solution = new CholeskyDecomposition(matrix).solve(Matrix.columnVector(rhs)).getColumn(0);
  const eigen = new EigenvalueDecomposition(matrix, { assumeSymmetric: true });
  const eigenvalues = eigen.realEigenvalues;
  const lambdaMin = Math.min(...eigenvalues);
  const lambdaMax = Math.max(...eigenvalues);
  const softest = eigen.eigenvectorMatrix.getColumn(eigenvalues.indexOf(lambdaMin));
  return {
    solution: Float64Array.from(solution),
    lambdaMin,
    lambdaMax,
    kappa: lambdaMax / lambdaMin,
    softestDirection: Float64Array.from(softest),
  };
}

/** Relative rounding of a float64 value stored as float32 (round to nearest): 2^-24. */
export const FLOAT32_ROUNDING = 2 ** -24;

/**
 * What a test allows beyond the tolerance when it compares a float32 solution with the float64
 * reference:
 * - the float32 rounding of the solution, |fl(u) - u| <= 2^-24 |u| <= 2^-24 (1 + tolerance) |u*|;
 * - float64 rounding, 4 (d + k) kappa eps for k iterations: the Cholesky reference's forward
 *   error (about d kappa u in practice; Higham, "Accuracy and Stability of Numerical Algorithms",
 *   2nd ed., section 10.1) and the drift of CG's recurrence residual from the true one (about
 *   k kappa eps; Greenbaum, SIAM J. Matrix Anal. Appl. 18(3), 1997). Below 1e-10 for
 *   kappa <= 1e3 and d, k <= 100.
 */
export function errorSlack(tolerance: number, dim: number, kappa: number, iterations = 0): number {
  return FLOAT32_ROUNDING * (1 + tolerance) + 4 * (dim + iterations) * kappa * Number.EPSILON;
}

/**
 * Method 2's terms by the definition, from one user's events: the newest `historyMax` by
 * (ts, item, type), confidence |type weight| x value x 2^(-(anchor - ts) / halfLife) with the
 * anchor the newest time of all the user's events, target 1 for a positive weight and 0 for a
 * negative one (the default targets).
 */
export function expectedDualTerms(
  own: readonly InteractionEvent[],
  historyMax: number,
  halfLifeMs: number,
  embeddings: ReadonlyMap<string, Float32Array>,
  weights: Readonly<Record<string, number>>,
): DualTerm[] {
  const anchorMs = Math.max(...own.map((event) => event.ts));
  const newest = [...own].sort(byHistoryOrder).slice(-historyMax);
  return newest.map((event) => {
    const weight = weights[event.type]!;
    return {
      itemId: event.item,
      embedding: embeddings.get(event.item)!,
      confidence:
        Math.abs(weight) * (event.value ?? 1) * 2 ** (-(anchorMs - event.ts) / halfLifeMs),
      target: weight > 0 ? 1 : 0,
    };
  });
}

function byHistoryOrder(a: InteractionEvent, b: InteractionEvent): number {
  if (a.ts !== b.ts) return a.ts - b.ts;
  if (a.item !== b.item) return a.item < b.item ? -1 : 1;
  return a.type < b.type ? -1 : a.type > b.type ? 1 : 0;
}
