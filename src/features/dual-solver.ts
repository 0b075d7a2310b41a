/**
 * Method 2's serving solve, in the eigenbasis of the catalogue Gramian. It solves the same
 * system as `solveDualCg` and `solveDualExact` (see dual.ts),
 *
 *   (a0 G + sum_h C_h e_h e_h^T + lambda_u I) u = sum_h C_h ybar_h e_h,
 *
 * but first writes G = Q Lambda Q^T once per catalogue (symmetric QR algorithm: Householder
 * tridiagonalisation and implicit QL, ml-matrix's port of JAMA's tred2/tql2). In rotated
 * coordinates, with e~ = Q^T e and u = Q u~, the matrix becomes
 *
 *   A~ = D + sum_h C_h e~_h e~_h^T,   D = a0 Lambda + lambda_u I,
 *
 * a diagonal plus |H| rank-one terms. Conjugate gradient preconditioned by D then works on
 * D^-1/2 A~ D^-1/2 = I + (rank |H|), whose eigenvalues other than 1 are the |H| at most
 * coming from the history, so it converges in a handful of iterations (Saad, "Iterative Methods
 * for Sparse Linear Systems", 2nd ed., algorithm 9.1; the bound on iterations for identity
 * plus low rank is his section 6.11.3). Each iteration costs O(|H| d) instead of the
 * O(d^2 + |H| d) of the plain path; the d x d products are left to the two ends: u = Q u~ once
 * per solve, and u~0 = Q^T u_prev when a warm start is given.
 *
 * Rotated embeddings are cached per item (`rotationCacheItems`), since an item's rotation costs
 * a d x d product and the same items recur across users. The residual is measured in rotated
 * coordinates; Q is orthogonal, so |b - A u| / |b| is the same number as in dual.ts.
 *
 * Catalogue changes. `withGramian(next)` keeps the eigenbasis of the solver's basis Gramian
 * G0 and writes the difference G_next - G0 as a low-rank symmetric term V S V^T, found by the
 * adaptive randomised range finder of Halko, Martinsson and Tropp ("Finding Structure with
 * Randomness", SIAM Review 53(2), 2011, algorithm 4.2, with the a posteriori bound of their
 * section 4.3). The r columns of V, rotated, join the history as r more rank-one terms with
 * weights a0 s_k (possibly negative: a removed item). The difference is recomputed from G0 on
 * every call, so nothing accumulates across versions; once its rank exceeds
 * `maxCorrectionRank`, `withGramian` decomposes G_next from scratch instead. Each changed
 * embedding adds at most 2 to the rank, each added or removed item at most 1.
 *
 * The solver is synchronous and keeps work vectors per basis: not re-entrant, which in a single
 * JavaScript thread only matters if a solve were called from inside another.
 */

import { EigenvalueDecomposition, Matrix } from 'ml-matrix';

import { aggregateHistory, checkDualParams, lambdaForUser } from './dual.js';
import type { AggregatedHistory, DualParams, DualSolution, DualTerm } from './dual.js';
import type { Gramian } from './gramian.js';

/** Options of `DualSolver.create`, inherited by the solvers `withGramian` derives. */
export interface DualSolverOptions {
  /**
   * Most items whose rotated embedding is kept, a non-negative integer; 0 disables the cache.
   * Each entry holds 8 d bytes (the rotation, float64) and a reference to the item's embedding.
   * Default `DEFAULT_ROTATION_CACHE_ITEMS`.
   */
  readonly rotationCacheItems?: number;
  /**
   * Largest rank of G_next - G_basis that `withGramian` carries as correction terms before it
   * decomposes G_next from scratch, a non-negative integer. Each unit of rank costs every solve
   * about 4 d flops per iteration, like one more history item. Default
   * `DEFAULT_MAX_CORRECTION_RANK`.
   */
  readonly maxCorrectionRank?: number;
  /**
   * When `solve` uses the warm start it is given. 'always': whenever it is usable. 'auto' (the
   * default): only when it is expected to pay. Rotating it costs 2 d^2 flops and its residual one
   * application of A~, 4 r d flops for r rank-one rows; it saves about two iterations of 4 r d
   * each (measured on bench/dual.ts: 1 at |H| = 10, 2 at 100, 3 at 500), so it pays when r > d/2.
   */
  readonly warmStart?: 'auto' | 'always';
}

/** Default `rotationCacheItems`: 16384 items, 48 MiB of rotations at d = 384. */
export const DEFAULT_ROTATION_CACHE_ITEMS = 16_384;

/** Default `maxCorrectionRank`: 8 changed embeddings, or 16 added or removed items. */
export const DEFAULT_MAX_CORRECTION_RANK = 16;

/**
 * Relative size, against |G_next|_F, of the part of G_next - G_basis that `withGramian` may
 * leave out: the rounding of a Gramian maintained by rank-one updates stays near 1e-16 |G| per
 * update, far below it, and the solution moves by at most kappa(A) times it, far below any
 * usable CG tolerance.
 */
export const CORRECTION_RELATIVE_TOLERANCE = 1e-10;

/** Counters of the rotated-embedding cache since the basis was built. */
export interface RotationCacheStats {
  /** Items currently cached. */
  readonly items: number;
  /** Look-ups served from the cache (the embedding was the one cached, by object or value). */
  readonly hits: number;
  /** Look-ups that rotated the embedding: the item was absent or its embedding had changed. */
  readonly misses: number;
}

/**
 * Solves dual vectors against one catalogue Gramian. Build one with `create` (an eigen-
 * decomposition, O(d^3)), follow catalogue versions with `withGramian`, and solve per user with
 * `solve`. Solvers derived by `withGramian` share the eigenbasis, the rotation cache and the
 * work vectors of the solver they came from.
 */
export class DualSolver {
  private constructor(
    private readonly basis: SpectralBasis,
    /** The Gramian this solver solves against. */
    readonly gramian: Gramian,
    private readonly correction: GramianCorrection,
    private readonly options: ResolvedOptions,
  ) {}

  /**
   * Decomposes `gramian` (O(d^3); about 0.8 s at d = 384 and 6 s at d = 768 on one core of the
   * development machine, see bench/dual.ts). The solver keeps its own copy of the values, and a
   * reference to `gramian` as `solver.gramian`. Throws a RangeError on non-finite entries or
   * invalid options.
   */
  static create(gramian: Gramian, options: DualSolverOptions = {}): DualSolver {
    const resolved = resolveOptions(options);
    const basis = SpectralBasis.decompose(gramian, resolved.rotationCacheItems);
    return new DualSolver(basis, gramian, EMPTY_CORRECTION, resolved);
  }

  /** Embedding dimension d. */
  get dim(): number {
    return this.basis.dim;
  }

  /** Rank of the correction carried for G - G_basis: 0 right after `create`. */
  get correctionRank(): number {
    return this.correction.rank;
  }

  /**
   * A solver for the catalogue Gramian `next`. Keeps this solver's eigenbasis (and its rotation
   * cache) and carries next - G_basis as a low-rank correction when its numerical rank is at most
   * `maxCorrectionRank`, for O((r + 8) d^2) work; otherwise decomposes `next` afresh, with an
   * empty rotation cache. Solutions agree with a solver built by `create(next)` up to a change
   * of the system matrix of at most 3e-10 |next|_F (see `CORRECTION_RELATIVE_TOLERANCE`).
   */
  withGramian(next: Gramian): DualSolver {
    if (next.dim !== this.dim) {
      throw new RangeError(`Gramian has dimension ${next.dim}, the solver's basis ${this.dim}`);
    }
    const correction = gramianCorrection(this.basis, next.values, this.options.maxCorrectionRank);
    if (correction === null) return DualSolver.create(next, this.options);
    return new DualSolver(this.basis, next, correction, this.options);
  }

  /**
   * Solves the dual vector for `terms`, with the semantics of `solveDualCg`: events merged per
   * item, lambda_u from `catalogueSize`, stop at relative residual `params.tolerance` or after
   * `params.maxIterations` iterations, `warmStart` scaled by its optimal factor and ignored when
   * unusable (wrong length, non-finite, zero) or, with the option `warmStart: 'auto'`, when it
   * would cost more than it saves. `params.preconditioner` is ignored: the eigenbasis
   * preconditioner D is always used. Throws a RangeError on invalid input.
   */
  solve(
    catalogueSize: number,
    terms: readonly DualTerm[],
    params: DualParams,
    warmStart?: Float32Array | null,
  ): DualSolution {
    checkDualParams(params, catalogueSize);
    const dim = this.dim;
    const history = aggregateHistory(terms, dim);
    const zero = { vector: new Float32Array(dim), iterations: 0, relativeResidual: 0 };
    if (history.embeddings.length === 0) return zero;

    const work = this.basis.work;
    const system = this.loadSystem(history, catalogueSize, params);
    if (system.rhsNorm === 0) return zero;

    const worthIt = this.options.warmStart === 'always' || 2 * system.rowCount > dim;
    const initialised = warmStart != null && worthIt && this.startFrom(system, warmStart);
    if (!initialised) {
      work.x.fill(0);
      work.r.set(work.rhs);
    }
    const iterations = preconditionedCg(system, work, params);
    const relativeResidual = Math.sqrt(dot(work.r, work.r)) / system.rhsNorm;

    matrixVectorProduct(this.basis.eigenvectorColumns, dim, work.x, work.scratch);
    return { vector: Float32Array.from(work.scratch), iterations, relativeResidual };
  }

  /**
   * Drops the cached rotations of `itemIds`. Not needed for correctness when a changed item
   * arrives as a new embedding object (a look-up compares values whenever the object differs),
   * only when an embedding array was modified in place.
   */
  invalidate(itemIds: Iterable<string>): void {
    this.basis.rotations.invalidate(itemIds);
  }

  /** Size and hit counts of the rotation cache shared by this basis. */
  rotationCacheStats(): RotationCacheStats {
    return this.basis.rotations.stats();
  }

  /**
   * Fills the work rows with the rotated history (weights C_h) followed by the correction
   * (weights a0 s_k), the right-hand side b~ = sum_h C_h ybar_h e~_h and the preconditioner.
   */
  private loadSystem(
    history: AggregatedHistory,
    catalogueSize: number,
    params: DualParams,
  ): RotatedSystem {
    const { dim, work, rotations } = this.basis;
    const { itemIds, embeddings, confidences, targets } = history;
    const historySize = embeddings.length;
    const correctionRank = params.a0 > 0 ? this.correction.rank : 0;
    const rowCount = historySize + correctionRank;
    work.reserveRows(rowCount);

    const { rows, weights, coefficients, rhs } = work;
    for (let h = 0; h < historySize; h++) {
      rotations.rotated(itemIds[h]!, embeddings[h]!, rows, h * dim);
      weights[h] = confidences[h]!;
      coefficients[h] = confidences[h]! * targets[h]!;
    }
    rhs.fill(0);
    addRowCombination(rows, historySize, coefficients, rhs);
    if (correctionRank > 0) {
      rows.set(this.correction.rows, historySize * dim);
      for (let k = 0; k < correctionRank; k++) {
        weights[historySize + k] = params.a0 * this.correction.weights[k]!;
      }
    }

    const lambdaUser = lambdaForUser(params, historySize, catalogueSize);
    const { eigenvalues } = this.basis;
    for (let k = 0; k < dim; k++) work.diagonal[k] = params.a0 * eigenvalues[k]! + lambdaUser;
    inversePreconditioner(work, rowCount);
    return { dim, rowCount, rhsNorm: Math.sqrt(dot(rhs, rhs)) };
  }

  /**
   * Seeds x with g Q^T warmStart, g = (w·b) / (w·A w) minimising the A-norm error along w, and
   * r with b - A x. Returns false, leaving x and r unset, when the warm start is unusable.
   */
  private startFrom(system: RotatedSystem, warmStart: Float32Array): boolean {
    const { dim } = system;
    if (warmStart.length !== dim) return false;
    for (let i = 0; i < dim; i++) if (!Number.isFinite(warmStart[i]!)) return false;

    const { x, r, ap, rhs, scratch } = this.basis.work;
    scratch.set(warmStart);
    matrixVectorProduct(this.basis.eigenvectorRows, dim, scratch, x);
    applySystem(system, this.basis.work, x, ap);
    const curvature = dot(x, ap);
    if (!(curvature > 0)) return false;

    const factor = dot(x, rhs) / curvature;
    for (let k = 0; k < dim; k++) {
      x[k]! *= factor;
      r[k] = rhs[k]! - factor * ap[k]!;
    }
    return true;
  }
}

/** The options with their defaults applied and checked. */
interface ResolvedOptions {
  readonly rotationCacheItems: number;
  readonly maxCorrectionRank: number;
  readonly warmStart: 'auto' | 'always';
}

function resolveOptions(options: DualSolverOptions): ResolvedOptions {
  const rotationCacheItems = options.rotationCacheItems ?? DEFAULT_ROTATION_CACHE_ITEMS;
  const maxCorrectionRank = options.maxCorrectionRank ?? DEFAULT_MAX_CORRECTION_RANK;
  if (!(Number.isInteger(rotationCacheItems) && rotationCacheItems >= 0)) {
    throw new RangeError(
      `rotationCacheItems must be a non-negative integer, got ${rotationCacheItems}`,
    );
  }
  if (!(Number.isInteger(maxCorrectionRank) && maxCorrectionRank >= 0)) {
    throw new RangeError(
      `maxCorrectionRank must be a non-negative integer, got ${maxCorrectionRank}`,
    );
  }
  const warmStart = options.warmStart ?? 'auto';
  if (warmStart !== 'auto' && warmStart !== 'always') {
    throw new RangeError(`warmStart must be 'auto' or 'always', got ${String(warmStart)}`);
  }
  return { rotationCacheItems, maxCorrectionRank, warmStart };
}

/** G_basis = Q Lambda Q^T and what every solver over it shares. */
class SpectralBasis {
  readonly rotations: RotationCache;
  readonly work: SolveWork;

  private constructor(
    readonly dim: number,
    /** Copy of G_basis, row-major, to measure later Gramians against. */
    readonly gramianValues: Float64Array,
    /** Lambda, clamped at 0 (see `decompose`). */
    readonly eigenvalues: Float64Array,
    /** Q^T row-major: row k is the k-th eigenvector, so Q^T v is a product by rows. */
    readonly eigenvectorRows: Float64Array,
    /** Q row-major, for u = Q u~. */
    readonly eigenvectorColumns: Float64Array,
    rotationCacheItems: number,
  ) {
    this.rotations = new RotationCache(this, rotationCacheItems);
    this.work = new SolveWork(dim);
  }

  /**
   * Eigendecomposition of a symmetric G. G is positive semi-definite, so a negative computed
   * eigenvalue is rounding (of order d eps |G|): it is set to 0, which changes G by no more.
   */
  static decompose(gramian: Gramian, rotationCacheItems: number): SpectralBasis {
    const { dim, values } = gramian;
    for (let k = 0; k < values.length; k++) {
      if (!Number.isFinite(values[k]!)) throw new RangeError('Gramian has a non-finite entry');
    }

    const rows = Array.from({ length: dim }, (_, i) => values.subarray(i * dim, (i + 1) * dim));
    const decomposition = new EigenvalueDecomposition(new Matrix(rows), { assumeSymmetric: true });
    const vectors = decomposition.eigenvectorMatrix;
    const eigenvalues = Float64Array.from(decomposition.realEigenvalues, (v) => Math.max(v, 0));
    const eigenvectorRows = new Float64Array(dim * dim);
    const eigenvectorColumns = new Float64Array(dim * dim);
    for (let i = 0; i < dim; i++) {
      for (let k = 0; k < dim; k++) {
        const value = vectors.get(i, k);
        eigenvectorColumns[i * dim + k] = value;
        eigenvectorRows[k * dim + i] = value;
      }
    }
    return new SpectralBasis(
      dim,
      Float64Array.from(values),
      eigenvalues,
      eigenvectorRows,
      eigenvectorColumns,
      rotationCacheItems,
    );
  }

  /** out = Q^T e, through the work's scratch vector (e converted to float64 first). */
  rotate(embedding: Float32Array, out: Float64Array): void {
    const scratch = this.work.scratch;
    scratch.set(embedding);
    matrixVectorProduct(this.eigenvectorRows, this.dim, scratch, out);
  }
}

/** One cached rotation: `rotated` = Q^T `embedding`. */
interface RotatedItem {
  embedding: Float32Array;
  readonly rotated: Float64Array;
  /** Set on every hit, cleared when the eviction sweep passes: second-chance (CLOCK). */
  referenced: boolean;
}

/**
 * Rotated embeddings by item id, at most `capacity` of them. An entry is served only for the
 * embedding it was computed from: same object, or same values (compared in O(d), when the
 * embedding cache has handed out a new array for an unchanged item); a different embedding is
 * rotated again. Eviction is second chance: insertion order, skipping once the entries hit since
 * the sweep last passed, so recurring items stay without the cost of LRU reordering per hit.
 */
class RotationCache {
  private readonly entries = new Map<string, RotatedItem>();
  private hits = 0;
  private misses = 0;

  constructor(
    private readonly basis: SpectralBasis,
    private readonly capacity: number,
  ) {}

  /** Writes Q^T embedding into `out` from `offset`, from the cache when it holds it. */
  rotated(itemId: string, embedding: Float32Array, out: Float64Array, offset: number): void {
    const entry = this.entries.get(itemId);
    if (entry !== undefined) {
      if (entry.embedding === embedding || sameValues(entry.embedding, embedding)) {
        entry.embedding = embedding;
        entry.referenced = true;
        this.hits++;
        out.set(entry.rotated, offset);
        return;
      }
      this.entries.delete(itemId);
    }

    this.misses++;
    const row = out.subarray(offset, offset + embedding.length);
    this.basis.rotate(embedding, row);
    if (this.capacity === 0) return;
    this.makeRoom();
    this.entries.set(itemId, { embedding, rotated: Float64Array.from(row), referenced: false });
  }

  invalidate(itemIds: Iterable<string>): void {
    for (const itemId of itemIds) this.entries.delete(itemId);
  }

  stats(): RotationCacheStats {
    return { items: this.entries.size, hits: this.hits, misses: this.misses };
  }

  /** Evicts until one entry fits; each pass clears a flag, so it ends within size + 1 steps. */
  private makeRoom(): void {
    while (this.entries.size >= this.capacity) {
      const oldest = this.entries.entries().next();
      if (oldest.done === true) return;
      const [itemId, entry] = oldest.value;
      this.entries.delete(itemId);
      if (!entry.referenced) continue;
      entry.referenced = false;
      this.entries.set(itemId, entry);
    }
  }
}

/** G_target - G_basis = V S V^T in rotated coordinates: `rank` rows of d, and S. */
interface GramianCorrection {
  readonly rank: number;
  /** Row-major rank x d: row k is Q^T v_k, v_k orthonormal. */
  readonly rows: Float64Array;
  readonly weights: Float64Array;
}

const EMPTY_CORRECTION: GramianCorrection = {
  rank: 0,
  rows: new Float64Array(0),
  weights: new Float64Array(0),
};

/** Consecutive probes below the threshold that end the range finder: failure odds 10^-8. */
const RANGE_PROBES = 8;

/** Fixed seed of the range finder's probes, so a given pair of Gramians always gives one V. */
const RANGE_SEED = 0x5eed_0d1a;

/**
 * The low-rank form of next - G_basis, or null when its numerical rank exceeds `maxRank`.
 *
 * Range finder (Halko et al., algorithm 4.2): Gaussian probes w, y = (I - P P^T) Delta w, a y
 * above the probe threshold becomes a new column of P; it stops after `RANGE_PROBES` probes in a
 * row stay below. By their bound (4.3), |(I - P P^T) Delta|_2 <= 10 sqrt(2/pi) max |y| with
 * probability 1 - 10^-8, so the probe threshold tau / (10 sqrt(2/pi)) keeps the part outside P
 * below tau = CORRECTION_RELATIVE_TOLERANCE |next|_F. Then B = P^T Delta P = W S W^T (r x r) and
 * Delta = (P W) S (P W)^T up to 2 tau; eigenvalues of B below the probe threshold are dropped.
 */
function gramianCorrection(
  basis: SpectralBasis,
  next: Float64Array,
  maxRank: number,
): GramianCorrection | null {
  const { dim, gramianValues } = basis;
  const difference = new Float64Array(dim * dim);
  let nextSquared = 0;
  let nonzero = false;
  for (let k = 0; k < difference.length; k++) {
    const value = next[k]! - gramianValues[k]!;
    difference[k] = value;
    nextSquared += next[k]! * next[k]!;
    if (value !== 0) nonzero = true;
  }
  if (!Number.isFinite(nextSquared)) throw new RangeError('Gramian has a non-finite entry');
  if (!nonzero) return EMPTY_CORRECTION;

  const threshold = CORRECTION_RELATIVE_TOLERANCE * Math.sqrt(nextSquared);
  const probeThreshold = threshold / (10 * Math.sqrt(2 / Math.PI));
  const range = rangeOf(difference, dim, probeThreshold, maxRank);
  if (range === null) return null;

  return compressedCorrection(basis, difference, range, probeThreshold);
}

/** Orthonormal columns spanning the range of `matrix` up to `probeThreshold`, or null. */
function rangeOf(
  matrix: Float64Array,
  dim: number,
  probeThreshold: number,
  maxRank: number,
): Float64Array[] | null {
  const random = mulberry32(RANGE_SEED);
  const columns: Float64Array[] = [];
  const probe = new Float64Array(dim);
  let quiet = 0;

  while (quiet < RANGE_PROBES) {
    for (let i = 0; i < dim; i++) probe[i] = gaussian(random);
    const y = new Float64Array(dim);
    matrixVectorProduct(matrix, dim, probe, y);
    // Classical Gram-Schmidt twice ("twice is enough", Giraud et al. 2005) keeps P orthonormal.
    projectOut(columns, y);
    projectOut(columns, y);
    const norm = Math.sqrt(dot(y, y));
    if (norm <= probeThreshold) {
      quiet++;
      continue;
    }
    if (columns.length === maxRank) return null;
    for (let i = 0; i < dim; i++) y[i]! /= norm;
    columns.push(y);
    quiet = 0;
  }
  return columns;
}

/** V S V^T from P: B = P^T Delta P, its eigenpairs, then V = Q^T P W (rotated). */
function compressedCorrection(
  basis: SpectralBasis,
  difference: Float64Array,
  columns: readonly Float64Array[],
  probeThreshold: number,
): GramianCorrection {
  const { dim } = basis;
  const rank = columns.length;
  if (rank === 0) return EMPTY_CORRECTION;

  const image = columns.map((column) => {
    const out = new Float64Array(dim);
    matrixVectorProduct(difference, dim, column, out);
    return out;
  });
  const projected = Matrix.zeros(rank, rank);
  for (let i = 0; i < rank; i++) {
    for (let j = 0; j <= i; j++) {
      const value = (dot(columns[i]!, image[j]!) + dot(columns[j]!, image[i]!)) / 2;
      projected.set(i, j, value);
      projected.set(j, i, value);
    }
  }
  const small = new EigenvalueDecomposition(projected, { assumeSymmetric: true });

  const kept: number[] = [];
  small.realEigenvalues.forEach((value, m) => {
    if (Math.abs(value) > probeThreshold) kept.push(m);
  });
  const rows = new Float64Array(kept.length * dim);
  const direction = new Float64Array(dim);
  kept.forEach((m, k) => {
    direction.fill(0);
    for (let j = 0; j < rank; j++)
      addScaled(small.eigenvectorMatrix.get(j, m), columns[j]!, direction);
    matrixVectorProduct(
      basis.eigenvectorRows,
      dim,
      direction,
      rows.subarray(k * dim, (k + 1) * dim),
    );
  });
  const weights = Float64Array.from(kept, (m) => small.realEigenvalues[m]!);
  return { rank: kept.length, rows, weights };
}

/** Shape of the rotated system loaded into the work vectors. */
interface RotatedSystem {
  readonly dim: number;
  /** Rank-one rows in `work.rows`: the history, then the correction. */
  readonly rowCount: number;
  readonly rhsNorm: number;
}

/** Work vectors of a basis, allocated once and grown for longer histories. */
class SolveWork {
  readonly x: Float64Array;
  readonly r: Float64Array;
  readonly z: Float64Array;
  readonly p: Float64Array;
  readonly ap: Float64Array;
  readonly rhs: Float64Array;
  /** D = a0 Lambda + lambda_u I for the current user. */
  readonly diagonal: Float64Array;
  /** The preconditioner's inverse, entry by entry. */
  readonly inverse: Float64Array;
  /** A float64 copy of a float32 vector, or the result of Q u~ before it becomes float32. */
  readonly scratch: Float64Array;
  /** Row-major rotated rows, contiguous: one typed array serves the kernel faster than many. */
  rows: Float64Array;
  /** Weight of each row in A~: C_h, then a0 s_k. */
  weights: Float64Array;
  /** Weight of each history row in b~: C_h ybar_h. */
  coefficients: Float64Array;

  constructor(private readonly dim: number) {
    this.x = new Float64Array(dim);
    this.r = new Float64Array(dim);
    this.z = new Float64Array(dim);
    this.p = new Float64Array(dim);
    this.ap = new Float64Array(dim);
    this.rhs = new Float64Array(dim);
    this.diagonal = new Float64Array(dim);
    this.inverse = new Float64Array(dim);
    this.scratch = new Float64Array(dim);
    this.rows = new Float64Array(0);
    this.weights = new Float64Array(0);
    this.coefficients = new Float64Array(0);
  }

  reserveRows(count: number): void {
    if (this.weights.length >= count) return;
    const capacity = Math.max(count, 2 * this.weights.length, 16);
    this.rows = new Float64Array(capacity * this.dim);
    this.weights = new Float64Array(capacity);
    this.coefficients = new Float64Array(capacity);
  }
}

/**
 * Preconditioner M = D where D is trustworthy. Where D_k is below 1e-12 max D (lambda_u = 0
 * and a direction the catalogue does not span), M_k is A~_kk itself, Jacobi's choice; where
 * that is 0 too, no row touches the direction, its residual stays 0, and M_k = 1 is harmless.
 */
function inversePreconditioner(work: SolveWork, rowCount: number): void {
  const { diagonal, inverse, rows, weights } = work;
  const dim = diagonal.length;
  let largest = 0;
  for (let k = 0; k < dim; k++) largest = Math.max(largest, diagonal[k]!);
  const floor = 1e-12 * largest;

  let degenerate = false;
  for (let k = 0; k < dim; k++) {
    const value = diagonal[k]!;
    if (value > floor) inverse[k] = 1 / value;
    else degenerate = true;
  }
  if (!degenerate) return;

  for (let k = 0; k < dim; k++) {
    if (diagonal[k]! > floor) continue;
    let jacobi = diagonal[k]!;
    for (let h = 0; h < rowCount; h++) jacobi += weights[h]! * rows[h * dim + k]! ** 2;
    inverse[k] = jacobi > 0 ? 1 / jacobi : 1;
  }
}

/**
 * Preconditioned CG from the x and r in `work` (Saad, algorithm 9.1), stopping on the
 * recurrence residual |r| <= tolerance |b|. Returns the iterations; x holds u~, r its residual.
 */
function preconditionedCg(system: RotatedSystem, work: SolveWork, params: DualParams): number {
  const { x, r, z, p, ap, inverse } = work;
  const { dim } = system;
  const threshold = params.tolerance * system.rhsNorm;
  if (Math.sqrt(dot(r, r)) <= threshold) return 0;

  for (let k = 0; k < dim; k++) z[k] = inverse[k]! * r[k]!;
  p.set(z);
  let rz = dot(r, z);

  let iterations = 0;
  while (iterations < params.maxIterations) {
    applySystem(system, work, p, ap);
    const curvature = dot(p, ap);
    // Zero curvature: p lies in the null space of a singular A (lambda = 0); stop where we are.
    if (!(curvature > 0)) break;
    const step = rz / curvature;
    let residualSquared = 0;
    for (let k = 0; k < dim; k++) {
      x[k]! += step * p[k]!;
      const rk = r[k]! - step * ap[k]!;
      r[k] = rk;
      residualSquared += rk * rk;
    }
    iterations++;
    if (Math.sqrt(residualSquared) <= threshold) break;

    let rzNext = 0;
    for (let k = 0; k < dim; k++) {
      const zk = inverse[k]! * r[k]!;
      z[k] = zk;
      rzNext += r[k]! * zk;
    }
    const beta = rzNext / rz;
    rz = rzNext;
    for (let k = 0; k < dim; k++) p[k] = z[k]! + beta * p[k]!;
  }
  return iterations;
}

/** out = A~ v = D v + sum_rows w_h row_h (row_h·v). */
function applySystem(
  system: RotatedSystem,
  work: SolveWork,
  v: Float64Array,
  out: Float64Array,
): void {
  const { diagonal, rows, weights } = work;
  for (let k = 0; k < system.dim; k++) out[k] = diagonal[k]! * v[k]!;
  addLowRankProduct(rows, system.rowCount, weights, v, out);
}

/**
 * out += sum_h w_h row_h (row_h·v) for `count` contiguous rows of length v.length. Rows go four
 * at a time, so each v_j and out_j loaded serves four of them.
 */
function addLowRankProduct(
  rows: Float64Array,
  count: number,
  weights: Float64Array,
  v: Float64Array,
  out: Float64Array,
): void {
  const dim = v.length;
  let h = 0;
  for (; h + 3 < count; h += 4) {
    const o0 = h * dim;
    const o1 = o0 + dim;
    const o2 = o1 + dim;
    const o3 = o2 + dim;
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let j = 0; j < dim; j++) {
      const vj = v[j]!;
      s0 += rows[o0 + j]! * vj;
      s1 += rows[o1 + j]! * vj;
      s2 += rows[o2 + j]! * vj;
      s3 += rows[o3 + j]! * vj;
    }

    const w0 = weights[h]! * s0;
    const w1 = weights[h + 1]! * s1;
    const w2 = weights[h + 2]! * s2;
    const w3 = weights[h + 3]! * s3;
    for (let j = 0; j < dim; j++) {
      out[j]! += w0 * rows[o0 + j]! + w1 * rows[o1 + j]! + w2 * rows[o2 + j]! + w3 * rows[o3 + j]!;
    }
  }
  for (; h < count; h++) {
    const offset = h * dim;
    let s = 0;
    for (let j = 0; j < dim; j++) s += rows[offset + j]! * v[j]!;
    const w = weights[h]! * s;
    for (let j = 0; j < dim; j++) out[j]! += w * rows[offset + j]!;
  }
}

/** out += sum_h coefficients_h row_h over `count` contiguous rows, four rows at a time. */
function addRowCombination(
  rows: Float64Array,
  count: number,
  coefficients: Float64Array,
  out: Float64Array,
): void {
  const dim = out.length;
  let h = 0;
  for (; h + 3 < count; h += 4) {
    const o0 = h * dim;
    const o1 = o0 + dim;
    const o2 = o1 + dim;
    const o3 = o2 + dim;
    const c0 = coefficients[h]!;
    const c1 = coefficients[h + 1]!;
    const c2 = coefficients[h + 2]!;
    const c3 = coefficients[h + 3]!;
    for (let j = 0; j < dim; j++) {
      out[j]! += c0 * rows[o0 + j]! + c1 * rows[o1 + j]! + c2 * rows[o2 + j]! + c3 * rows[o3 + j]!;
    }
  }
  for (; h < count; h++) {
    const offset = h * dim;
    const c = coefficients[h]!;
    for (let j = 0; j < dim; j++) out[j]! += c * rows[offset + j]!;
  }
}

/**
 * out = M v for a row-major d x d M. Rows go four at a time, each with two partial sums (even
 * and odd j), as in dual.ts's Gramian product.
 */
function matrixVectorProduct(
  m: Float64Array,
  dim: number,
  v: Float64Array,
  out: Float64Array,
): void {
  const pairEnd = dim - (dim % 2);
  let i = 0;
  for (; i + 3 < dim; i += 4) {
    const r0 = i * dim;
    const r1 = r0 + dim;
    const r2 = r1 + dim;
    const r3 = r2 + dim;
    let a0 = 0;
    let a1 = 0;
    let b0 = 0;
    let b1 = 0;
    let c0 = 0;
    let c1 = 0;
    let d0 = 0;
    let d1 = 0;
    let j = 0;
    for (; j < pairEnd; j += 2) {
      const v0 = v[j]!;
      const v1 = v[j + 1]!;
      a0 += m[r0 + j]! * v0;
      b0 += m[r1 + j]! * v0;
      c0 += m[r2 + j]! * v0;
      d0 += m[r3 + j]! * v0;
      a1 += m[r0 + j + 1]! * v1;
      b1 += m[r1 + j + 1]! * v1;
      c1 += m[r2 + j + 1]! * v1;
      d1 += m[r3 + j + 1]! * v1;
    }
    if (j < dim) {
      const vj = v[j]!;
      a0 += m[r0 + j]! * vj;
      b0 += m[r1 + j]! * vj;
      c0 += m[r2 + j]! * vj;
      d0 += m[r3 + j]! * vj;
    }
    out[i] = a0 + a1;
    out[i + 1] = b0 + b1;
    out[i + 2] = c0 + c1;
    out[i + 3] = d0 + d1;
  }
  for (; i < dim; i++) {
    const row = i * dim;
    let sum = 0;
    for (let j = 0; j < dim; j++) sum += m[row + j]! * v[j]!;
    out[i] = sum;
  }
}

/** Removes from y its components along the orthonormal `columns` (one Gram-Schmidt sweep). */
function projectOut(columns: readonly Float64Array[], y: Float64Array): void {
  for (const column of columns) {
    const coefficient = dot(column, y);
    for (let i = 0; i < y.length; i++) y[i]! -= coefficient * column[i]!;
  }
}

/** out += alpha v. */
function addScaled(alpha: number, v: Float64Array, out: Float64Array): void {
  for (let j = 0; j < v.length; j++) out[j]! += alpha * v[j]!;
}

function dot(a: Float64Array, b: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) return false;
  return true;
}

/** Mulberry32 (Tommy Ettinger's 32-bit generator): uniform in [0, 1), fixed by its seed. */
function mulberry32(seed: number): () => number {
  let state = seed | 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Standard normal by the Box-Muller transform. */
function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}
