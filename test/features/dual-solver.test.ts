import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EigenvalueDecomposition, Matrix } from 'ml-matrix';

import { DualSolver } from '../../src/features/dual-solver.js';
import { lambdaForUser, solveDualExact } from '../../src/features/dual.js';
import type { DualParams, DualSolution, DualTerm } from '../../src/features/dual.js';
import { computeGramian, createGramian, replaceItem } from '../../src/features/gramian.js';
import type { Gramian } from '../../src/features/gramian.js';
import { parseSignals } from '../../src/events/types.js';
import { exactDual, refreshDual } from '../../src/state/dual-step.js';
import { emptyUserState } from '../../src/state/user-state.js';
import { errorSlack, referenceSolve, relativeError } from '../helpers/dual-reference.js';
import type { Reference } from '../helpers/dual-reference.js';
import { seededRandom } from '../helpers/services.js';

interface Problem {
  readonly catalogue: Float32Array[];
  readonly gramian: Gramian;
  readonly terms: DualTerm[];
}

function params(overrides: Partial<DualParams> = {}): DualParams {
  return { a0: 0.1, lambda: 0.5, nu: 0.5, tolerance: 1e-6, maxIterations: 1000, ...overrides };
}

function randomEmbedding(random: () => number, dim: number): Float32Array {
  return Float32Array.from({ length: dim }, () => 2 * random() - 1);
}

/** Items uniform in [-1, 1]^d; events drawn with repeats, confidence in [1, 5], target [0, 2]. */
function randomProblem(
  random: () => number,
  dim: number,
  historySize: number,
  catalogueSize: number,
): Problem {
  const catalogue = Array.from({ length: catalogueSize }, () => randomEmbedding(random, dim));
  return {
    catalogue,
    gramian: computeGramian(catalogue, dim),
    terms: randomTerms(random, catalogue, historySize),
  };
}

function randomTerms(
  random: () => number,
  catalogue: readonly Float32Array[],
  historySize: number,
): DualTerm[] {
  return Array.from({ length: historySize }, () => {
    const item = Math.floor(random() * catalogue.length);
    return {
      itemId: `item-${item}`,
      embedding: catalogue[item]!,
      confidence: 1 + 4 * random(),
      target: 2 * random(),
    };
  });
}

/**
 * kappa(A) for A = a0 G + sum over events c e e^T + lambda_u I written out from its definition
 * (no merging, lambda_u with the distinct item count), by ml-matrix's symmetric eigensolver.
 */
function conditionNumber(
  gramian: Gramian,
  catalogueSize: number,
  terms: DualTerm[],
  p: DualParams,
): number {
  const dim = gramian.dim;
  const distinct = new Set(terms.map((term) => term.itemId)).size;
  const lambdaUser = lambdaForUser(p, distinct, catalogueSize);
  const matrix = Matrix.zeros(dim, dim);
  for (let j = 0; j < dim; j++) {
    for (let k = 0; k < dim; k++) {
      let value = p.a0 * gramian.values[j * dim + k]! + (j === k ? lambdaUser : 0);
      for (const { embedding: e, confidence: c } of terms) value += c * e[j]! * e[k]!;
      matrix.set(j, k, value);
    }
  }
  const eigenvalues = new EigenvalueDecomposition(matrix, { assumeSymmetric: true })
    .realEigenvalues;
  return Math.max(...eigenvalues) / Math.min(...eigenvalues);
}

/** A Gramian with the same values in a new object, so in-place changes leave `gramian` alone. */
function copyGramian(gramian: Gramian): Gramian {
  return { dim: gramian.dim, values: Float64Array.from(gramian.values), count: gramian.count };
}

for (const kernels of ['webassembly', 'javascript'] as const) {
  test(`the spectral solve matches the Cholesky solve on random problems (${kernels})`, () => {
    randomProblemsAgainstCholesky(kernels);
  });
}

/**
 * Asserts |u - u*| / |u*| <= tolerance + errorSlack against the float64 reference, that the
 * reported bound is within the tolerance and holds, and that the iteration cap was not hit. The
 * spectral solve works on Q^T A Q, which differs from A by the eigendecomposition's error,
 * ~1e-14 |G|: inside errorSlack's float64 term.
 */
function assertWithinTolerance(
  solution: DualSolution,
  reference: Reference,
  p: DualParams,
  label: string,
): void {
  const error = relativeError(solution.vector, reference.solution);
  const slack = errorSlack(
    p.tolerance,
    solution.vector.length,
    reference.kappa,
    solution.iterations,
  );
  const context = `${label}, kappa = ${reference.kappa.toExponential(1)}: error ${error}`;
  assert.ok(solution.iterations < p.maxIterations, `${context}, iteration cap reached`);
  assert.ok(solution.relativeErrorBound <= p.tolerance, `${context}, bound above the tolerance`);
  assert.ok(error <= solution.relativeErrorBound + slack, `${context} above its bound`);
  assert.ok(error <= p.tolerance + slack, context);
}

function randomProblemsAgainstCholesky(kernels: 'webassembly' | 'javascript'): void {
  const random = seededRandom(31);
  const settings = [
    { a0: 0.01, lambda: 0.1, nu: 0 },
    { a0: 0.1, lambda: 0.5, nu: 0.5 },
    { a0: 0.1, lambda: 1, nu: 1 },
    { a0: 0.01, lambda: 1, nu: 0.5 },
    { a0: 1, lambda: 0.01, nu: 0 },
  ];
  let case_ = 0;

  for (const dim of [8, 32, 100]) {
    const problem = randomProblem(random, dim, 0, 300);
    // One solver per dimension: its rows grow from 1 to 200 (the work memory moves).
    const solver = DualSolver.create(problem.gramian, { kernels });
    for (const historySize of [1, 7, 60, 200]) {
      const p = params({ ...settings[case_++ % settings.length]!, tolerance: 1e-6 });
      const terms = randomTerms(random, problem.catalogue, historySize);

      const spectral = solver.solve(300, terms, p);
      const distinct = new Set(terms.map((term) => term.itemId)).size;
      const label = `d = ${dim}, |H| = ${historySize}`;
      assertWithinTolerance(spectral, referenceSolve(problem.gramian, 300, terms, p), p, label);
      // D^-1/2 A~ D^-1/2 is the identity plus rank |H|: at most |H| + 1 distinct eigenvalues, so
      // CG ends within |H| + 1 iterations in exact arithmetic; rounding leaves that intact here.
      assert.ok(spectral.iterations <= distinct + 1, `${label}: ${spectral.iterations} iterations`);
    }
  }
}

test('the WebAssembly and JavaScript kernels agree to rounding', () => {
  const random = seededRandom(45);
  for (const dim of [5, 37, 64]) {
    const problem = randomProblem(random, dim, 0, 200);
    const simd = DualSolver.create(problem.gramian, { kernels: 'webassembly' });
    const plain = simd.withOptions({ kernels: 'javascript' });
    const terms = randomTerms(random, problem.catalogue, 41);
    const p = params({ tolerance: 1e-12 });

    const a = simd.solve(200, terms, p);
    const b = plain.solve(200, terms, p);
    // Tolerance 1e-9 relative: the kernels sum in different orders (two lanes, then the lanes),
    // ~1e-16 per operation, amplified at most by kappa (below 1e3 here) through the iteration.
    assert.ok(relativeError(a.vector, b.vector) < 1e-9, `d = ${dim}`);
    assert.ok(Math.abs(a.iterations - b.iterations) <= 1, `d = ${dim}`);
  }
});

test('withOptions keeps the options it is not given', () => {
  // d = 40 and 10 events: fewer than d/2 rows, where 'auto' would decline the warm start.
  const problem = randomProblem(seededRandom(46), 40, 10, 100);
  const p = params();
  const exact = solveDualExact(problem.gramian, 100, problem.terms, p);
  const always = DualSolver.create(problem.gramian, { warmStart: 'always' });

  // Still 'always' after changing only the kernels: the exact warm start is used, and its
  // float32 rounding (6e-8 relative) is within the 1e-6 tolerance.
  const plain = always.withOptions({ kernels: 'javascript' });
  assert.ok(plain.solve(100, problem.terms, p, exact).iterations <= 1);
  assert.ok(plain.solve(100, problem.terms, p).iterations > 1);
  assert.throws(() => always.withOptions({ maxCorrectionRank: -1 }), RangeError);
});

test('an ill-conditioned catalogue with a wide spectrum is solved within the tolerance', () => {
  // Coordinates scaled by 10^1.5 down to 10^-1.5 (G's eigenvalues span six orders of magnitude)
  // and a small lambda: kappa(A) 1e5 to 1e6, where a stop at relative residual = tolerance
  // leaves errors far above it. Larger kappa would let errorSlack's float64 term rival 1e-6.
  const random = seededRandom(32);
  for (const [dim, lambda, tolerance] of [
    [12, 1e-2, 1e-6],
    [12, 1e-1, 1e-8],
    [40, 1e-2, 1e-6],
  ] as const) {
    const scales = Array.from({ length: dim }, (_, k) => 10 ** (1.5 - (3 * k) / (dim - 1)));
    const catalogue = Array.from({ length: 200 }, () =>
      Float32Array.from({ length: dim }, (_, k) => (2 * random() - 1) * scales[k]!),
    );
    const gramian = computeGramian(catalogue, dim);
    const terms = randomTerms(random, catalogue, 30);
    const p = params({ a0: 0.1, lambda, nu: 0, tolerance });

    const reference = referenceSolve(gramian, 200, terms, p);
    const spectral = DualSolver.create(gramian).solve(200, terms, p);
    assertWithinTolerance(spectral, reference, p, `d = ${dim}, lambda = ${lambda}`);
    assert.ok(reference.kappa > 1e4, `d = ${dim}: kappa ${reference.kappa}`);
  }
});

test('a warm start from the exact solution converges in at most one iteration', () => {
  const random = seededRandom(33);

  for (const dim of [8, 32, 100]) {
    const problem = randomProblem(random, dim, 50, 300);
    const p = params({ tolerance: 1e-6 });
    const exact = solveDualExact(problem.gramian, 300, problem.terms, p);
    const solver = DualSolver.create(problem.gramian, { warmStart: 'always' });

    const warm = solver.solve(300, problem.terms, p, exact);

    // Its float32 rounding, 2^-24 ~ 6e-8 relative, is within the 1e-6 tolerance already.
    assert.ok(warm.iterations <= 1, `d = ${dim}: ${warm.iterations} iterations`);
    assert.ok(warm.relativeErrorBound <= 1e-6);
  }
});

test("with warmStart 'auto' a warm start is used only for more than d/2 history items", () => {
  const random = seededRandom(34);
  const problem = randomProblem(random, 40, 0, 300);
  const solver = DualSolver.create(problem.gramian);
  const p = params({ tolerance: 1e-6 });

  // 10 events give at most 10 rows, below d/2 = 20: the warm start would cost more than it saves.
  const short = randomTerms(random, problem.catalogue, 10);
  const shortExact = solveDualExact(problem.gramian, 300, short, p);
  assert.deepEqual(solver.solve(300, short, p, shortExact), solver.solve(300, short, p));

  // 200 events over 300 items give well over 20 distinct rows: the exact warm start is used,
  // and its float32 rounding (6e-8 relative) is within the tolerance.
  const long = randomTerms(random, problem.catalogue, 200);
  const longExact = solveDualExact(problem.gramian, 300, long, p);
  assert.ok(solver.solve(300, long, p, longExact).iterations <= 1);
  assert.ok(solver.solve(300, long, p).iterations > 1);
});

test('an unusable warm start is ignored', () => {
  const problem = randomProblem(seededRandom(35), 8, 10, 50);
  const solver = DualSolver.create(problem.gramian, { warmStart: 'always' });
  const p = params();

  const cold = solver.solve(50, problem.terms, p);
  const nan = Float32Array.from({ length: 8 }, (_, k) => (k === 3 ? NaN : 1));
  for (const warmStart of [new Float32Array(7), new Float32Array(8), nan, null, undefined]) {
    assert.deepEqual(solver.solve(50, problem.terms, p, warmStart), cold);
  }
});

test('repeated events equal one event with summed confidence and weighted target', () => {
  const random = seededRandom(36);
  const problem = randomProblem(random, 6, 0, 40);
  const [a, b] = [problem.catalogue[0]!, problem.catalogue[1]!];
  // nu = 1 with a large lambda, so counting events instead of distinct items would show.
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
  const solver = DualSolver.create(problem.gramian);

  // Tolerance 1e-6 relative: rounding of the merged target (~1e-16), CG at 1e-12 with kappa
  // below 100, and the float32 results (2^-24 ~ 6e-8).
  const exactMerged = solveDualExact(problem.gramian, 40, merged, p);
  assert.ok(relativeError(solver.solve(40, repeated, p).vector, exactMerged) < 1e-6);
});

test('an empty history, or one with all targets 0, gives the zero vector in 0 iterations', () => {
  const problem = randomProblem(seededRandom(37), 8, 0, 20);
  const solver = DualSolver.create(problem.gramian);
  const e = problem.catalogue[0]!;
  const histories: DualTerm[][] = [
    [],
    [{ itemId: 'x', embedding: e, confidence: 0, target: 1 }],
    [{ itemId: 'x', embedding: e, confidence: 2, target: 0 }],
  ];

  for (const terms of histories) {
    const solution = solver.solve(
      20,
      terms,
      params(),
      Float32Array.from({ length: 8 }, () => 1),
    );
    assert.deepEqual(solution, {
      vector: new Float32Array(8),
      iterations: 0,
      relativeResidual: 0,
      relativeErrorBound: 0,
    });
  }
});

test('lambda = 0 with a catalogue that spans only part of the space still converges', () => {
  // d = 6, the catalogue spans the first 3 coordinates, the history the last 3 as well: with
  // lambda = 0, D = a0 Lambda is 0 on three eigenvectors, where the preconditioner falls back to
  // the diagonal of A~; A itself is regular because the history covers what G does not.
  const random = seededRandom(38);
  const dim = 6;
  const catalogue = Array.from({ length: 20 }, () =>
    Float32Array.from({ length: dim }, (_, k) => (k < 3 ? 2 * random() - 1 : 0)),
  );
  const history = Array.from({ length: 8 }, () => randomEmbedding(random, dim));
  const gramian = computeGramian(catalogue, dim);
  const terms = history.map((embedding, h) => ({
    itemId: `h${h}`,
    embedding,
    confidence: 1 + h,
    target: 1,
  }));
  const p = params({ lambda: 0, tolerance: 1e-10 });

  const exact = solveDualExact(gramian, 20, terms, p);
  const spectral = DualSolver.create(gramian).solve(20, terms, p);
  const kappa = conditionNumber(gramian, 20, terms, p);

  // No lower bound on lambda_min(A) is at hand (D is 0 on three directions): the stop falls back
  // to the relative residual and says the error is unbounded. Tolerance kappa * 1e-10 + 2e-7:
  // relative error <= kappa(A) * relative residual plus the float32 rounding of both vectors.
  assert.equal(spectral.relativeErrorBound, Number.POSITIVE_INFINITY);
  assert.ok(spectral.relativeResidual <= 1e-10);
  assert.ok(relativeError(spectral.vector, exact) <= kappa * 1e-10 + 2e-7);
});

test('withGramian follows item changes exactly, as a solver built from scratch would', () => {
  const random = seededRandom(39);
  const dim = 24;
  const problem = randomProblem(random, dim, 0, 200);
  const base = DualSolver.create(problem.gramian);
  const p = params({ tolerance: 1e-10 });

  // Change 2 embeddings, remove 1 item and add 2: rank at most 2 * 2 + 1 + 2 = 7.
  const next = copyGramian(problem.gramian);
  const catalogue = [...problem.catalogue];
  for (const item of [3, 17]) {
    const changed = randomEmbedding(random, dim);
    replaceItem(next, catalogue[item]!, changed);
    catalogue[item] = changed;
  }
  replaceItem(next, catalogue[50]!, null);
  for (let k = 0; k < 2; k++) {
    const added = randomEmbedding(random, dim);
    replaceItem(next, null, added);
    catalogue.push(added);
  }
  catalogue.splice(50, 1);
  const size = next.count;

  const updated = base.withGramian(next);
  const fresh = DualSolver.create(next);
  assert.equal(updated.correctionRank, 7);
  assert.equal(updated.gramian, next);

  for (const historySize of [5, 40]) {
    const terms = randomTerms(random, catalogue, historySize);
    const exact = solveDualExact(next, size, terms, p);
    const kappa = conditionNumber(next, size, terms, p);
    const viaCorrection = updated.solve(size, terms, p).vector;
    const fromScratch = fresh.solve(size, terms, p).vector;

    // Tolerance kappa * 1e-10 + 2e-7 against the exact solve, as above: the correction leaves
    // out at most 3e-10 |G|_F of G, which moves u by at most kappa * a0 * 3e-10 |G|_F / |A|,
    // below 1e-10 kappa here. Against each other, twice that.
    const bound = kappa * 1e-10 + 2e-7;
    assert.ok(relativeError(viaCorrection, exact) <= bound, `|H| = ${historySize}`);
    assert.ok(relativeError(viaCorrection, fromScratch) <= 2 * bound, `|H| = ${historySize}`);
  }
});

test('withGramian measures from the basis and re-decomposes past maxCorrectionRank', () => {
  const random = seededRandom(40);
  const dim = 16;
  const problem = randomProblem(random, dim, 0, 100);
  const base = DualSolver.create(problem.gramian, { maxCorrectionRank: 4 });
  const p = params({ tolerance: 1e-10 });
  base.solve(100, randomTerms(random, problem.catalogue, 12), p);
  const cached = base.rotationCacheStats().items;

  // Same values in a new object: no correction, and the rotation cache is shared.
  const same = base.withGramian(copyGramian(problem.gramian));
  assert.equal(same.correctionRank, 0);
  assert.equal(same.rotationCacheStats().items, cached);

  // One added item per version, chained: the rank counts changes since the basis, not per step.
  const gramian = copyGramian(problem.gramian);
  let solver = base;
  const ranks: number[] = [];
  for (let version = 0; version < 5; version++) {
    replaceItem(gramian, null, randomEmbedding(random, dim));
    solver = solver.withGramian(gramian);
    ranks.push(solver.correctionRank);
  }
  // The fifth addition makes rank 5 > 4: a new basis, decomposed from the current G.
  assert.deepEqual(ranks, [1, 2, 3, 4, 0]);
  assert.equal(solver.rotationCacheStats().items, 0);

  const terms = randomTerms(random, problem.catalogue, 12);
  const exact = solveDualExact(gramian, gramian.count, terms, p);
  const kappa = conditionNumber(gramian, gramian.count, terms, p);
  // Tolerance kappa * 1e-10 + 2e-7, as above.
  assert.ok(
    relativeError(solver.solve(gramian.count, terms, p).vector, exact) <= kappa * 1e-10 + 2e-7,
  );
});

test('withGramian copes with a catalogue that shrinks to part of the space', () => {
  // Removing every item with a nonzero last coordinate leaves G singular on that axis: the
  // correction carries a large negative eigenvalue and the basis preconditioner overestimates
  // D there, which costs iterations but not accuracy. The history keeps an item pointing a
  // little along that axis, so A's smallest eigenvalue, about lambda_u, lies there: a stop that
  // took min D (about 2 here) for lambda_min(A) would end far too early.
  const random = seededRandom(41);
  const dim = 48;
  const kept = Array.from({ length: 300 }, () =>
    Float32Array.from({ length: dim }, (_, k) => (k < dim - 1 ? 2 * random() - 1 : 0)),
  );
  const removed = Array.from({ length: 3 }, () =>
    Float32Array.from({ length: dim }, (_, k) => (k < dim - 1 ? 2 * random() - 1 : 10)),
  );
  const gramian = computeGramian([...kept, ...removed], dim);
  const solver = DualSolver.create(gramian);

  const next = copyGramian(gramian);
  for (const embedding of removed) replaceItem(next, embedding, null);
  const updated = solver.withGramian(next);
  const tilted = Float32Array.from({ length: dim }, (_, k) => (k < dim - 1 ? 0.3 : 0.05));
  const terms = [
    ...randomTerms(random, kept, 20),
    { itemId: 'tilted', embedding: tilted, confidence: 1, target: 1 },
  ];
  const p = params({ a0: 0.1, lambda: 0.01, nu: 0, tolerance: 1e-4 });

  const reference = referenceSolve(next, 300, terms, p);
  assert.equal(updated.correctionRank, 3);
  // The correction leaves out at most about 6e-10 a0 |G|_F of the matrix, which moves u by at
  // most that over lambda_min(A), relative: added to the slack.
  const frobenius = Math.hypot(...next.values);
  const correction = (6e-10 * p.a0 * frobenius) / reference.lambdaMin;
  const solution = updated.solve(300, terms, p);
  const error = relativeError(solution.vector, reference.solution);
  const slack = errorSlack(p.tolerance, dim, reference.kappa, solution.iterations) + correction;
  assert.ok(solution.relativeErrorBound <= p.tolerance, `bound ${solution.relativeErrorBound}`);
  assert.ok(error <= p.tolerance + slack, `error ${error}, kappa ${reference.kappa}`);

  // A warm start off u* by 100 times the tolerance along A's softest direction has a residual
  // lambda_min(A) times smaller than its error: only a true lower bound on lambda_min keeps the
  // stop from accepting it.
  const { solution: exact, softestDirection } = reference;
  const offset = 100 * p.tolerance * Math.hypot(...exact);
  const warmStart = Float32Array.from(exact, (x, k) => x + offset * softestDirection[k]!);
  const warm = updated.withOptions({ warmStart: 'always' }).solve(300, terms, p, warmStart);
  const warmError = relativeError(warm.vector, exact);
  assert.ok(warmError <= p.tolerance + slack, `warm start kept: error ${warmError}`);
});

test('a changed embedding is rotated again, an equal one in a new array is not', () => {
  const random = seededRandom(42);
  const dim = 10;
  const problem = randomProblem(random, dim, 0, 50);
  const solver = DualSolver.create(problem.gramian);
  const p = params({ tolerance: 1e-10 });
  const terms = randomTerms(random, problem.catalogue, 6);
  const distinct = new Set(terms.map((term) => term.itemId)).size;

  solver.solve(50, terms, p);
  assert.deepEqual(solver.rotationCacheStats(), { items: distinct, hits: 0, misses: distinct });

  // The embedding cache hands out a new array for an unchanged item: served from the cache.
  const copied = terms.map((term) => ({ ...term, embedding: Float32Array.from(term.embedding) }));
  solver.solve(50, copied, p);
  assert.equal(solver.rotationCacheStats().misses, distinct);

  // The first item's embedding changes: the rotation is recomputed, the result follows.
  const changed = randomEmbedding(random, dim);
  const first = terms[0]!.itemId;
  const updated = terms.map((term) =>
    term.itemId === first ? { ...term, embedding: changed } : term,
  );
  const exact = solveDualExact(problem.gramian, 50, updated, p);
  const kappa = conditionNumber(problem.gramian, 50, updated, p);
  const solution = solver.solve(50, updated, p);
  assert.equal(solver.rotationCacheStats().misses, distinct + 1);
  // Tolerance kappa * 1e-10 + 2e-7, as for the random problems.
  assert.ok(relativeError(solution.vector, exact) <= kappa * 1e-10 + 2e-7);
});

test('invalidate drops a rotation whose embedding array was modified in place', () => {
  const random = seededRandom(43);
  const dim = 10;
  const problem = randomProblem(random, dim, 0, 50);
  const solver = DualSolver.create(problem.gramian);
  const p = params({ tolerance: 1e-10 });
  const embedding = randomEmbedding(random, dim);
  const terms: DualTerm[] = [
    { itemId: 'mutable', embedding, confidence: 2, target: 1 },
    ...randomTerms(random, problem.catalogue, 5),
  ];
  solver.solve(50, terms, p);

  embedding.set(randomEmbedding(random, dim));
  solver.invalidate(['mutable']);

  const exact = solveDualExact(problem.gramian, 50, terms, p);
  const kappa = conditionNumber(problem.gramian, 50, terms, p);
  // Tolerance kappa * 1e-10 + 2e-7, as for the random problems.
  assert.ok(relativeError(solver.solve(50, terms, p).vector, exact) <= kappa * 1e-10 + 2e-7);
});

test('the rotation cache stays within rotationCacheItems, and 0 disables it', () => {
  const random = seededRandom(44);
  const problem = randomProblem(random, 8, 0, 100);
  const p = params({ tolerance: 1e-10 });
  const bounded = DualSolver.create(problem.gramian, { rotationCacheItems: 5 });
  const uncached = DualSolver.create(problem.gramian, { rotationCacheItems: 0 });

  for (let user = 0; user < 20; user++) {
    const terms = randomTerms(random, problem.catalogue, 8);
    const a = bounded.solve(100, terms, p);
    const b = uncached.solve(100, terms, p);
    assert.ok(bounded.rotationCacheStats().items <= 5);
    // Rotations served from the cache are the very numbers computed on a miss: same result.
    assert.deepEqual(a, b);
  }
  assert.equal(uncached.rotationCacheStats().items, 0);
  assert.equal(uncached.rotationCacheStats().hits, 0);
});

test('an empty catalogue decomposes to the identity basis and solves the ridge problem', () => {
  // G = 0: A = sum c e e^T + lambda_u I, D = lambda_u.
  const dim = 3;
  const p = params({ a0: 0.5, lambda: 2, nu: 0, tolerance: 1e-12 });
  const terms: DualTerm[] = [
    { itemId: 'a', embedding: Float32Array.of(1, 2, 2), confidence: 1, target: 3 },
  ];
  // (e e^T + 2 I) u = 3 e: u = 3 e / (|e|^2 + 2) = 3 e / 11.
  const expected = [3 / 11, 6 / 11, 6 / 11];

  const solution = DualSolver.create(createGramian(dim)).solve(0, terms, p);
  // Tolerance 1e-7 relative: the float32 rounding of the result, 2^-24 ~ 6e-8.
  assert.ok(relativeError(solution.vector, expected) < 1e-7);
});

test('invalid input is rejected with a RangeError', () => {
  const gramian = computeGramian([Float32Array.of(1, 0)], 2);
  const solver = DualSolver.create(gramian);
  const e = Float32Array.of(1, 0);

  assert.throws(() => DualSolver.create(gramian, { rotationCacheItems: -1 }), RangeError);
  assert.throws(() => DualSolver.create(gramian, { maxCorrectionRank: 1.5 }), RangeError);
  const nan: Gramian = { dim: 2, values: Float64Array.of(1, 0, 0, NaN), count: 1 };
  assert.throws(() => DualSolver.create(nan), RangeError);
  assert.throws(() => solver.withGramian(nan), RangeError);
  assert.throws(() => solver.withGramian(createGramian(3)), RangeError);
  assert.throws(
    () =>
      solver.solve(
        1,
        [{ itemId: 'a', embedding: Float32Array.of(1), confidence: 1, target: 1 }],
        params(),
      ),
    RangeError,
  );
  assert.throws(
    () => solver.solve(1, [{ itemId: 'a', embedding: e, confidence: -1, target: 1 }], params()),
    RangeError,
  );
  assert.throws(() => solver.solve(1, [], params({ tolerance: 0 })), RangeError);
  assert.throws(() => solver.solve(-1, [], params()), RangeError);
});

test('refreshDual with a solver stores the solution exactDual computes', () => {
  const random = seededRandom(47);
  const dim = 12;
  const problem = randomProblem(random, dim, 0, 80);
  const items = new Map(problem.catalogue.map((embedding, k) => [`item-${k}`, embedding]));
  const state = emptyUserState({ dim, halfLivesMs: [86_400_000] });
  const types = ['click', 'like', 'purchase', 'dislike'];
  const startMs = 1_700_000_000_000;
  for (let event = 0; event < 30; event++) {
    const ts = startMs + event * 3_600_000;
    const item = `item-${Math.floor(random() * 80)}`;
    state.history.push({ item, ts, type: types[event % types.length]! });
  }
  state.aggregates.anchorMs = startMs + 29 * 3_600_000;
  const base = {
    params: params({ a0: 0.05, lambda: 0.1, nu: 0, tolerance: 1e-10 }),
    halfLifeMs: 7 * 86_400_000,
    signals: parseSignals('click:+1,like:+3,purchase:+5,dislike:-3'),
    embedding: (item: string) => items.get(item),
  };

  const exact = exactDual(state, { ...base, gramian: problem.gramian });
  const solution = refreshDual(state, { ...base, solver: DualSolver.create(problem.gramian) });
  const viaCg = refreshDual(emptyClone(state), { ...base, gramian: problem.gramian });

  assert.equal(state.dual?.vector, solution.vector);
  assert.equal(state.dual?.terms, 30);
  // Tolerance 1e-6 relative: CG at 1e-10 times kappa (below 1e3 here) plus float32 rounding.
  assert.ok(relativeError(solution.vector, exact) < 1e-6);
  assert.ok(relativeError(viaCg.vector, exact) < 1e-6);
});

/** The same history without the stored dual vector. */
function emptyClone(state: ReturnType<typeof emptyUserState>): ReturnType<typeof emptyUserState> {
  return { ...state, history: [...state.history], dual: null };
}
