import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EigenvalueDecomposition, Matrix, solve } from 'ml-matrix';

import { DualSolver } from '../../src/features/dual-solver.js';
import {
  aggregateHistory,
  lambdaForUser,
  solveDualCg,
  solveDualExact,
} from '../../src/features/dual.js';
import type { DualParams, DualTerm } from '../../src/features/dual.js';
import { computeGramian } from '../../src/features/gramian.js';
import type { Gramian } from '../../src/features/gramian.js';
import { errorSlack, referenceSolve, relativeError } from '../helpers/dual-reference.js';
import { seededRandom } from '../helpers/services.js';

interface Problem {
  readonly catalogue: Float32Array[];
  readonly gramian: Gramian;
  readonly terms: DualTerm[];
}

function params(overrides: Partial<DualParams> = {}): DualParams {
  return { a0: 0.1, lambda: 0.5, nu: 0.5, tolerance: 1e-6, maxIterations: 1000, ...overrides };
}

/** Items uniform in [-1, 1]^d; events drawn with repeats, confidence in [1, 5], target [0, 2]. */
function randomProblem(
  random: () => number,
  dim: number,
  historySize: number,
  catalogueSize: number,
): Problem {
  const catalogue = Array.from({ length: catalogueSize }, () =>
    Float32Array.from({ length: dim }, () => 2 * random() - 1),
  );
  const terms: DualTerm[] = [];
  for (let h = 0; h < historySize; h++) {
    const item = Math.floor(random() * catalogueSize);
    terms.push({
      itemId: `item-${item}`,
      embedding: catalogue[item]!,
      confidence: 1 + 4 * random(),
      target: 2 * random(),
    });
  }
  return { catalogue, gramian: computeGramian(catalogue, dim), terms };
}

/**
 * The system written out independently of the library: one rank-one term per event (no merging),
 * lambda_u from the formula with the distinct item count. Rows of A and b in float64.
 */
function systemByDefinition(
  problem: Problem,
  p: DualParams,
): { matrix: number[][]; rhs: number[] } {
  const { gramian, terms, catalogue } = problem;
  const dim = gramian.dim;
  const distinct = new Set(terms.map((term) => term.itemId)).size;
  const lambdaUser = p.lambda * Math.pow(distinct + p.a0 * catalogue.length, p.nu);
  const matrix = Array.from({ length: dim }, (_, j) =>
    Array.from({ length: dim }, (_, k) => p.a0 * gramian.values[j * dim + k]!),
  );
  const rhs = new Array<number>(dim).fill(0);

  for (let j = 0; j < dim; j++) matrix[j]![j]! += lambdaUser;
  for (const { embedding: e, confidence: c, target: y } of terms) {
    for (let j = 0; j < dim; j++) {
      rhs[j]! += c * y * e[j]!;
      for (let k = 0; k < dim; k++) matrix[j]![k]! += c * e[j]! * e[k]!;
    }
  }
  return { matrix, rhs };
}

function conditionNumber(matrix: number[][]): number {
  const eigenvalues = new EigenvalueDecomposition(new Matrix(matrix), { assumeSymmetric: true })
    .realEigenvalues;
  return Math.max(...eigenvalues) / Math.min(...eigenvalues);
}

/** Cramer's rule for a 2 x 2 system. */
function solveCramer2(a: number[][], b: number[]): number[] {
  const [[a11, a12], [a21, a22]] = a as [[number, number], [number, number]];
  const [b1, b2] = b as [number, number];
  const determinant = a11 * a22 - a12 * a21;
  return [(b1 * a22 - a12 * b2) / determinant, (a11 * b2 - a21 * b1) / determinant];
}

/** A^-1 b for a 3 x 3 system through the adjugate: A^-1 = adj(A) / det(A). */
function solveAdjugate3(a: number[][], b: number[]): number[] {
  const m = (i: number, j: number): number => a[i]![j]!;
  const cofactor = (i: number, j: number): number => {
    const rows = [0, 1, 2].filter((r) => r !== i);
    const cols = [0, 1, 2].filter((c) => c !== j);
    const minor =
      m(rows[0]!, cols[0]!) * m(rows[1]!, cols[1]!) - m(rows[0]!, cols[1]!) * m(rows[1]!, cols[0]!);
    return (i + j) % 2 === 0 ? minor : -minor;
  };
  const determinant =
    m(0, 0) * cofactor(0, 0) + m(0, 1) * cofactor(0, 1) + m(0, 2) * cofactor(0, 2);
  // (A^-1)_ij = C_ji / det, the adjugate being the transposed cofactor matrix.
  return [0, 1, 2].map(
    (i) => [0, 1, 2].reduce((sum, j) => sum + cofactor(j, i) * b[j]!, 0) / determinant,
  );
}

test('lambdaForUser is lambda * (|H| + a0 |I|)^nu', () => {
  const base = params({ a0: 0.1, lambda: 0.5 });

  // Tolerance 1e-12 relative: one pow against one sqrt or product, both correctly rounded to ~1e-16.
  const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-12 * Math.abs(b);
  assert.ok(close(lambdaForUser({ ...base, nu: 0.5 }, 30, 10_000), 0.5 * Math.sqrt(1030)));
  assert.ok(close(lambdaForUser({ ...base, nu: 1 }, 30, 10_000), 0.5 * 1030));
  assert.equal(lambdaForUser({ ...base, nu: 0 }, 30, 10_000), 0.5);
});

test('CG is within the configured tolerance of the exact solution on random problems', () => {
  const random = seededRandom(11);
  const settings = [
    { a0: 0.01, lambda: 0.1, nu: 0 },
    { a0: 0.1, lambda: 0.5, nu: 0.5 },
    { a0: 0.1, lambda: 1, nu: 1 },
    { a0: 0.01, lambda: 1, nu: 0.5 },
  ];
  let case_ = 0;

  for (const dim of [8, 32, 100]) {
    for (const historySize of [1, 7, 60, 200]) {
      const p = params({ ...settings[case_++ % settings.length]!, tolerance: 1e-6 });
      const problem = randomProblem(random, dim, historySize, 300);
      const label = `d = ${dim}, |H| = ${historySize}`;
      for (const preconditioner of ['none', 'jacobi'] as const) {
        assertWithinTolerance(
          problem,
          300,
          { ...p, preconditioner },
          `${label}, ${preconditioner}`,
        );
      }
    }
  }
});

test('CG is within the configured tolerance on ill-conditioned problems', () => {
  // Coordinates scaled over three orders of magnitude and a small lambda: kappa(A) of 2e5 to
  // 2e6, where a stop at relative residual = tolerance leaves errors far above the tolerance.
  // (Beyond about 1e6 the float64 rounding of reference and iteration, errorSlack, would rival
  // a 1e-6 tolerance and the comparison would prove little.)
  const random = seededRandom(21);
  for (const [dim, lambda, tolerance] of [
    [12, 1e-2, 1e-6],
    [12, 1e-1, 1e-8],
    [40, 1e-2, 1e-6],
  ] as const) {
    const problem = wideSpectrumProblem(random, dim, 30, 200);
    const p = params({ a0: 0.1, lambda, nu: 0, tolerance, maxIterations: 10_000 });
    const kappa = assertWithinTolerance(problem, 200, p, `d = ${dim}, lambda = ${lambda}`);
    assert.ok(kappa > 1e4, `d = ${dim}: kappa ${kappa} is not ill-conditioned`);
  }
});

/**
 * Items uniform in [-1, 1]^d with coordinate k scaled by 10^(1.5 - 3k / (d - 1)), so that G's
 * eigenvalues span six orders of magnitude; events as in `randomProblem`.
 */
function wideSpectrumProblem(
  random: () => number,
  dim: number,
  historySize: number,
  catalogueSize: number,
): Problem {
  const scales = Array.from({ length: dim }, (_, k) => 10 ** (1.5 - (3 * k) / (dim - 1)));
  const catalogue = Array.from({ length: catalogueSize }, () =>
    Float32Array.from({ length: dim }, (_, k) => (2 * random() - 1) * scales[k]!),
  );
  const terms = Array.from({ length: historySize }, (): DualTerm => {
    const item = Math.floor(random() * catalogue.length);
    return {
      itemId: `item-${item}`,
      embedding: catalogue[item]!,
      confidence: 1 + 4 * random(),
      target: 2 * random(),
    };
  });
  return { catalogue, gramian: computeGramian(catalogue, dim), terms };
}

/**
 * Solves by CG and asserts |u - u*| / |u*| <= tolerance + errorSlack against the float64
 * reference, that the reported bound is within the tolerance and that the cap was not hit.
 * Returns kappa(A).
 */
function assertWithinTolerance(
  problem: Problem,
  catalogueSize: number,
  p: DualParams,
  label: string,
): number {
  const reference = referenceSolve(problem.gramian, catalogueSize, problem.terms, p);
  const cg = solveDualCg(problem.gramian, catalogueSize, problem.terms, p);
  const error = relativeError(cg.vector, reference.solution);
  const slack = errorSlack(p.tolerance, problem.gramian.dim, reference.kappa, cg.iterations);

  const context = `${label}, kappa = ${reference.kappa.toExponential(1)}: error ${error}`;
  assert.ok(cg.iterations < p.maxIterations, `${context}, iteration cap reached`);
  assert.ok(cg.relativeErrorBound <= p.tolerance, `${context}, bound ${cg.relativeErrorBound}`);
  // The bound is rigorous: the actual error lies below it, up to the rounding in errorSlack.
  assert.ok(error <= cg.relativeErrorBound + slack, `${context} above its bound`);
  assert.ok(error <= p.tolerance + slack, context);
  return reference.kappa;
}

test('all three solvers match Cramer’s rule on random 2-dimensional problems', () => {
  const random = seededRandom(12);

  for (let trial = 0; trial < 20; trial++) {
    const problem = randomProblem(random, 2, 1 + Math.floor(random() * 6), 5);
    const p = params({ a0: trial % 2 === 0 ? 0.01 : 0.1, nu: trial % 3 === 0 ? 1 : 0.5 });
    const { matrix, rhs } = systemByDefinition(problem, p);

    const expected = solveCramer2(matrix, rhs);
    const exact = solveDualExact(problem.gramian, 5, problem.terms, p);
    const cg = solveDualCg(problem.gramian, 5, problem.terms, { ...p, tolerance: 1e-12 });
    const spectral = DualSolver.create(problem.gramian).solve(5, problem.terms, {
      ...p,
      tolerance: 1e-12,
    });

    // Tolerance 1e-6 relative: float32 results round to 2^-24 ~ 6e-8; the solves themselves
    // are accurate to ~1e-14 on these 2 x 2 systems (kappa below 1e3).
    assert.ok(relativeError(exact, expected) < 1e-6, `trial ${trial}`);
    assert.ok(relativeError(cg.vector, expected) < 1e-6, `trial ${trial}`);
    assert.ok(relativeError(spectral.vector, expected) < 1e-6, `trial ${trial}`);
  }
});

test('all three solvers match the adjugate formula on random 3-dimensional problems', () => {
  const random = seededRandom(13);

  for (let trial = 0; trial < 20; trial++) {
    const problem = randomProblem(random, 3, 1 + Math.floor(random() * 8), 6);
    const p = params({ lambda: trial % 2 === 0 ? 0.1 : 1, nu: (trial % 3) / 2 });
    const { matrix, rhs } = systemByDefinition(problem, p);

    const expected = solveAdjugate3(matrix, rhs);
    const exact = solveDualExact(problem.gramian, 6, problem.terms, p);
    const cg = solveDualCg(problem.gramian, 6, problem.terms, { ...p, tolerance: 1e-12 });
    const spectral = DualSolver.create(problem.gramian).solve(6, problem.terms, {
      ...p,
      tolerance: 1e-12,
    });

    // Tolerance 1e-6 relative, as for d = 2.
    assert.ok(relativeError(exact, expected) < 1e-6, `trial ${trial}`);
    assert.ok(relativeError(cg.vector, expected) < 1e-6, `trial ${trial}`);
    assert.ok(relativeError(spectral.vector, expected) < 1e-6, `trial ${trial}`);
  }
});

test('a 3-dimensional problem worked by hand', () => {
  // Catalogue (1,0,0), (0,1,0), (0,0,1), (1,1,0): G = [[2,1,0],[1,2,0],[0,0,1]], |I| = 4.
  // History: (1,1,0) with c = 2, y = 1 and (0,0,1) with c = 1, y = 3, so |H| = 2.
  // a0 = 1/2, lambda = 1/4, nu = 1: lambda_u = (2 + 4/2) / 4 = 1.
  // A = G/2 + 2 (1,1,0)(1,1,0)^T + (0,0,1)(0,0,1)^T + I = [[4, 5/2, 0], [5/2, 4, 0], [0, 0, 5/2]],
  // b = (2, 2, 3). By symmetry u1 = u2 = t with (4 + 5/2) t = 2, so t = 4/13; u3 = 3 / (5/2).
  const items = [
    Float32Array.of(1, 0, 0),
    Float32Array.of(0, 1, 0),
    Float32Array.of(0, 0, 1),
    Float32Array.of(1, 1, 0),
  ];
  const terms: DualTerm[] = [
    { itemId: 'pair', embedding: items[3]!, confidence: 2, target: 1 },
    { itemId: 'third', embedding: items[2]!, confidence: 1, target: 3 },
  ];
  const p = params({ a0: 0.5, lambda: 0.25, nu: 1, tolerance: 1e-12 });
  const gramian = computeGramian(items, 3);
  const expected = [4 / 13, 4 / 13, 6 / 5];

  // Tolerance 1e-7 relative: the float32 rounding of the result, 2^-24 ~ 6e-8.
  assert.ok(relativeError(solveDualExact(gramian, 4, terms, p), expected) < 1e-7);
  assert.ok(relativeError(solveDualCg(gramian, 4, terms, p).vector, expected) < 1e-7);
  const spectral = DualSolver.create(gramian).solve(4, terms, p);
  assert.ok(relativeError(spectral.vector, expected) < 1e-7);
  // Identity plus rank |H| = 2 after preconditioning: at most 3 distinct eigenvalues.
  assert.ok(spectral.iterations <= 3);
});

test('a warm start from the exact solution converges in at most one iteration', () => {
  const random = seededRandom(14);

  for (const dim of [8, 32, 100]) {
    const problem = randomProblem(random, dim, 50, 300);
    const p = params({ tolerance: 1e-6 });
    const exact = solveDualExact(problem.gramian, 300, problem.terms, p);

    const warm = solveDualCg(problem.gramian, 300, problem.terms, p, exact);

    // Its float32 rounding, 2^-24 ~ 6e-8 relative, is within the 1e-6 tolerance already.
    assert.ok(warm.iterations <= 1, `d = ${dim}: ${warm.iterations} iterations`);
    assert.ok(warm.relativeErrorBound <= 1e-6);
  }
});

test('a warm start whose error hides along the softest direction is not accepted', () => {
  // Off u* by 100 times the tolerance along A's eigenvector of lambda_min: its residual is
  // lambda_min(A) times its error, small, and only a true lower bound on lambda_min keeps the
  // stop from taking it.
  const random = seededRandom(22);
  for (const dim of [8, 32]) {
    const problem = wideSpectrumProblem(random, dim, 20, 300);
    const p = params({ a0: 0.1, lambda: 0.01, nu: 0, tolerance: 1e-4, maxIterations: 10_000 });
    const {
      solution: exact,
      softestDirection,
      kappa,
    } = referenceSolve(problem.gramian, 300, problem.terms, p);
    const offset = 100 * p.tolerance * Math.hypot(...exact);
    const warmStart = Float32Array.from(exact, (x, k) => x + offset * softestDirection[k]!);

    const warm = solveDualCg(problem.gramian, 300, problem.terms, p, warmStart);
    const error = relativeError(warm.vector, exact);
    assert.ok(error <= p.tolerance + errorSlack(p.tolerance, dim, kappa, warm.iterations));
  }
});

test('a warm start of the wrong dimension is ignored', () => {
  const problem = randomProblem(seededRandom(15), 8, 10, 50);
  const p = params();

  const cold = solveDualCg(problem.gramian, 50, problem.terms, p);
  const mismatched = solveDualCg(problem.gramian, 50, problem.terms, p, new Float32Array(7));

  assert.deepEqual(mismatched, cold);
});

test('repeated events equal one event with summed confidence and weighted target', () => {
  const random = seededRandom(16);
  const problem = randomProblem(random, 6, 0, 40);
  const [a, b] = [problem.catalogue[0]!, problem.catalogue[1]!];
  // nu = 1 with a large lambda: counting events instead of distinct items in |H| would move
  // lambda_u from 4 * (2 + 4) = 24 to 4 * (3 + 4) = 28 and the solution by far more than 1e-6.
  const p = params({ a0: 0.1, lambda: 4, nu: 1, tolerance: 1e-12 });
  const repeated: DualTerm[] = [
    { itemId: 'a', embedding: a, confidence: 1, target: 1 },
    { itemId: 'b', embedding: b, confidence: 2, target: 0.5 },
    { itemId: 'a', embedding: Float32Array.from(a), confidence: 3, target: 0.2 },
  ];
  const merged: DualTerm[] = [
    { itemId: 'a', embedding: a, confidence: 4, target: (1 * 1 + 3 * 0.2) / 4 },
    { itemId: 'b', embedding: b, confidence: 2, target: 0.5 },
  ];

  const exactRepeated = solveDualExact(problem.gramian, 40, repeated, p);
  const exactMerged = solveDualExact(problem.gramian, 40, merged, p);
  const cgRepeated = solveDualCg(problem.gramian, 40, repeated, p).vector;

  // Tolerance 1e-6 relative: the two differ only by rounding of the merged target (~1e-16) and
  // the float32 results (2^-24 ~ 6e-8).
  assert.ok(relativeError(exactRepeated, exactMerged) < 1e-6);
  assert.ok(relativeError(cgRepeated, exactMerged) < 1e-6);
  // The per-event system written out in the test (no merging), solved by LU, agrees as well.
  const { matrix, rhs } = systemByDefinition({ ...problem, terms: repeated }, p);
  const perEvent = solve(new Matrix(matrix), Matrix.columnVector(rhs)).getColumn(0);
  assert.ok(relativeError(exactRepeated, perEvent) < 1e-6);
});

test('aggregateHistory merges per item and drops items with zero total confidence', () => {
  const e = Float32Array.of(1, 2);
  const f = Float32Array.of(3, 4);

  const history = aggregateHistory(
    [
      { itemId: 'e', embedding: e, confidence: 1, target: 2 },
      { itemId: 'f', embedding: f, confidence: 0, target: 5 },
      { itemId: 'e', embedding: e, confidence: 3, target: 6 },
    ],
    2,
  );

  assert.deepEqual(history.itemIds, ['e']);
  assert.deepEqual(history.embeddings, [e]);
  assert.deepEqual(history.confidences, Float64Array.of(4));
  // (1 * 2 + 3 * 6) / 4 = 5, exact in float64.
  assert.deepEqual(history.targets, Float64Array.of(5));
});

test('an empty history gives the zero vector in 0 iterations', () => {
  const problem = randomProblem(seededRandom(17), 8, 0, 20);
  const p = params();
  const zeroConfidence: DualTerm[] = [
    { itemId: 'x', embedding: problem.catalogue[0]!, confidence: 0, target: 1 },
  ];

  for (const terms of [[], zeroConfidence]) {
    const cg = solveDualCg(
      problem.gramian,
      20,
      terms,
      p,
      Float32Array.from({ length: 8 }, () => 1),
    );
    assert.deepEqual(cg, {
      vector: new Float32Array(8),
      iterations: 0,
      relativeResidual: 0,
      relativeErrorBound: 0,
    });
    assert.deepEqual(solveDualExact(problem.gramian, 20, terms, p), new Float32Array(8));
  }
});

test('the Jacobi preconditioner reaches the same solution', () => {
  const problem = randomProblem(seededRandom(18), 32, 80, 300);
  const p = params({ tolerance: 1e-8 });

  const exact = solveDualExact(problem.gramian, 300, problem.terms, p);
  const jacobi = solveDualCg(problem.gramian, 300, problem.terms, {
    ...p,
    preconditioner: 'jacobi',
  });

  // Tolerance 1e-8 + 2 * 2^-24: the solve's bound plus the float32 rounding of both vectors.
  assert.ok(relativeError(jacobi.vector, exact) < 1e-8 + 2 * 2 ** -24);
});

test('a singular system is reported by the exact path', () => {
  // d = 4 but the catalogue spans only two directions and lambda = 0: A has rank 2.
  const items = [Float32Array.of(1, 0, 0, 0), Float32Array.of(0, 1, 0, 0)];
  const terms: DualTerm[] = [{ itemId: 'a', embedding: items[0]!, confidence: 1, target: 1 }];
  const p = params({ lambda: 0 });

  assert.throws(
    () => solveDualExact(computeGramian(items, 4), 2, terms, p),
    /not positive definite/,
  );
});

test('a rank-deficient system whose pivots round to small positive values is reported too', () => {
  // Fewer items than dimensions with lambda = 0: A is singular, but rounding usually leaves the
  // last Cholesky pivot small and positive rather than 0, so ml-matrix alone accepts it.
  const random = seededRandom(19);

  for (const [dim, items] of [
    [3, 2],
    [8, 5],
    [40, 39],
  ] as const) {
    for (let trial = 0; trial < 10; trial++) {
      const problem = randomProblem(random, dim, items, items);
      assert.throws(
        () => solveDualExact(problem.gramian, items, problem.terms, params({ lambda: 0 })),
        /not positive definite/,
        `d = ${dim}, trial ${trial}`,
      );
    }
  }
});

test('an ill-conditioned but regular system is solved', () => {
  // The same rank-deficient catalogue with lambda = 1e-6: kappa(A) about 1e6 to 1e8, well below
  // the 4.5e11 limit, so the exact path must solve it and agree with the definition.
  const problem = randomProblem(seededRandom(20), 8, 5, 5);
  const p = params({ lambda: 1e-6, nu: 0 });
  const { matrix, rhs } = systemByDefinition(problem, p);

  const exact = solveDualExact(problem.gramian, 5, problem.terms, p);
  const perEvent = solve(new Matrix(matrix), Matrix.columnVector(rhs)).getColumn(0);

  // Tolerance 1e-5 relative: kappa ~ 1e8 times eps ~ 2e-16 for each solve, plus float32 rounding.
  assert.ok(conditionNumber(matrix) > 1e5);
  assert.ok(relativeError(exact, perEvent) < 1e-5);
});

test('invalid input is rejected with a RangeError', () => {
  const gramian = computeGramian([Float32Array.of(1, 0)], 2);
  const e = Float32Array.of(1, 0);
  const solve = (terms: DualTerm[], p: DualParams = params()): unknown =>
    solveDualCg(gramian, 1, terms, p);

  assert.throws(
    () => solve([{ itemId: 'a', embedding: Float32Array.of(1), confidence: 1, target: 1 }]),
    RangeError,
  );
  assert.throws(
    () => solve([{ itemId: 'a', embedding: e, confidence: -1, target: 1 }]),
    RangeError,
  );
  assert.throws(
    () => solve([{ itemId: 'a', embedding: e, confidence: 1, target: NaN }]),
    RangeError,
  );
  assert.throws(
    () =>
      solve([
        { itemId: 'a', embedding: e, confidence: 1, target: 1 },
        { itemId: 'a', embedding: Float32Array.of(0, 1), confidence: 1, target: 1 },
      ]),
    /two different embeddings/,
  );
  assert.throws(() => solve([], params({ tolerance: 0 })), RangeError);
  assert.throws(() => solve([], params({ a0: -1 })), RangeError);
});
