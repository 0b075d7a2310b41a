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
 * a diagonal plus |H| rank-one terms. Conjugate gradient preconditioned by D (Saad, "Iterative
 * Methods for Sparse Linear Systems", 2nd ed., algorithm 9.1) then works on
 * D^-1/2 A~ D^-1/2 = I + (rank |H|), which has at most |H| + 1 distinct eigenvalues, so in exact
 * arithmetic it ends within |H| + 1 iterations (its Krylov spaces have no larger dimension); in
 * practice the |H| eigenvalues above 1 sit in [1, 1 + sigma] with sigma of order 1, and 5 to 9
 * iterations reach 1e-6 (bench/dual.ts). Each iteration costs O(|H| d) instead of the
 * O(d^2 + |H| d) of the plain path; the d x d products are left to the two ends: u = Q u~ once
 * per solve, and u~0 = Q^T u_prev when a warm start is used.
 *
 * Rotated embeddings are cached per item (`rotationCacheItems`), since an item's rotation costs
 * a d x d product and the same items recur across users. The residual is measured in rotated
 * coordinates; Q is orthogonal, so |b - A u| / |b| and |u| are the same numbers as in dual.ts,
 * and the stop is dual.ts's, with which the tolerance bounds the relative error of u; its lower
 * eigenvalue bound comes from the diagonal-plus-rank-one form (`spectralStopRule`). Against
 * stopping at relative residual = tolerance that costs 0 to 3.5 iterations more
 * (docs/benchmarks.md).
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
 * Kernels. The three loops that carry the flops (the rank-one rows applied to a vector, a
 * combination of rows, a d x d product) run in a small WebAssembly module with 128-bit SIMD,
 * two float64 lanes, encoded at the end of this file (no toolchain: the bytes are written out
 * opcode by opcode, WebAssembly Core Specification 2.0, chapter 5). Measured on the development
 * machine at d = 384 they run 3 times faster than the same loops in JavaScript, which V8 does
 * not vectorise. The JavaScript versions stay as the fallback (option `kernels`), and for the
 * one-off products of `withGramian`. The WebAssembly loops add in a different order (two lanes,
 * then the lanes), so results differ from the JavaScript kernels by rounding, ~1e-16 relative.
 * To keep them free of tail cases every vector is padded with zeros to a multiple of 4
 * entries, p = 4 ceil(d / 4), and the number of rows to a multiple of 4 with zero weights.
 *
 * The solver is synchronous and keeps work vectors per basis: not re-entrant, which in a single
 * JavaScript thread only matters if a solve were called from inside another.
 */

import { EigenvalueDecomposition, Matrix } from 'ml-matrix';

import {
  aggregateHistory,
  checkDualParams,
  errorBound,
  lambdaForUser,
  stopReached,
  stopRule,
  zeroSolution,
} from './dual.js';
import type { AggregatedHistory, DualParams, DualSolution, DualTerm, StopRule } from './dual.js';
import type { Gramian } from './gramian.js';
import type { Code, KernelFunction, WasmMemory, WasmModule } from './wasm-assembler.js';
import {
  I32,
  OP,
  V128,
  WASM_PAGE_BYTES,
  add2,
  encodeModule,
  forLoop,
  get,
  i32,
  laneSum,
  load128,
  loadF64,
  mul2,
  set,
  simd,
  store128,
  unsignedLeb128,
  wasm,
  zero128,
} from './wasm-assembler.js';

/** Options of `DualSolver.create`, inherited by the solvers `withGramian` derives. */
export interface DualSolverOptions {
  /**
   * Most items whose rotated embedding is kept, a non-negative integer; 0 disables the cache.
   * Each entry holds 8 p bytes (the rotation in float64, p = d rounded up to a multiple of 4)
   * and a reference to the item's embedding.
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
   * application of A~, 4 r d flops for r rank-one rows; it saves 0.5 to 3 iterations of 4 r d
   * each (bench/dual.ts at d = 384: about 0.5 at |H| = 10, 1.5 at 100, 2.5 at 500). Taking 2 as
   * typical, it pays when r > d/2.
   */
  readonly warmStart?: 'auto' | 'always';
  /**
   * Where the inner loops run: 'webassembly' (SIMD; the default when the runtime accepts the
   * module, as Node 20 does) or 'javascript'.
   */
  readonly kernels?: 'webassembly' | 'javascript';
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
 * `solve`. Solvers derived by `withGramian` (unless it re-decomposes) and `withOptions` share
 * the eigenbasis, the rotation cache and the work memory of the solver they came from.
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
   * Decomposes `gramian`: O(d^3), synchronous, about 1 s at d = 384 and 6 to 10 s at d = 768
   * on one core of the development machine (bench/dual.ts), during which the event loop is
   * blocked. The solver keeps its own copy of the values, and a reference to `gramian` as
   * `solver.gramian`. Throws a RangeError on non-finite entries or invalid options.
   */
  static create(gramian: Gramian, options: DualSolverOptions = {}): DualSolver {
    const resolved = resolveOptions(options);
    const basis = SpectralBasis.decompose(gramian, resolved);
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
   * `maxCorrectionRank`, for O((3 r + 8) d^2) work (7 to 130 ms for one changed item at d = 64 to
   * 768); otherwise decomposes `next` afresh (as `create`), with an empty rotation cache. Values
   * equal to the basis give rank 0. Solutions agree with a solver built by `create(next)` up to
   * a change of the system matrix of at most 3e-10 |next|_F (`CORRECTION_RELATIVE_TOLERANCE`).
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
   * This solver with other options, sharing the basis, the correction and the rotation cache
   * (whose size stays as created). Other `kernels` need their own work memory: Q and Q^T are
   * copied (O(d^2), no new decomposition) and the rotation cache starts empty.
   */
  withOptions(
    options: Pick<DualSolverOptions, 'warmStart' | 'maxCorrectionRank' | 'kernels'>,
  ): DualSolver {
    const resolved = resolveOptions({
      ...this.options,
      warmStart: options.warmStart ?? this.options.warmStart,
      maxCorrectionRank: options.maxCorrectionRank ?? this.options.maxCorrectionRank,
      kernels: options.kernels ?? this.options.kernels,
    });
    const basis =
      resolved.kernels === this.options.kernels ? this.basis : this.basis.withKernels(resolved);
    return new DualSolver(basis, this.gramian, this.correction, resolved);
  }

  /**
   * Solves the dual vector for `terms`, with the semantics of `solveDualCg`: events merged per
   * item, lambda_u from `catalogueSize`, stop once the relative error is bounded by
   * `params.tolerance` (see dual.ts) or after `params.maxIterations` iterations, `warmStart`
   * scaled by its optimal factor and ignored when
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
    const zero = zeroSolution(dim);
    if (history.embeddings.length === 0) return zero;

    const system = this.loadSystem(history, catalogueSize, params);
    if (system.rhsNorm === 0) return zero;
    const work = this.basis.work.views;

    const worthIt = this.options.warmStart === 'always' || 2 * system.rowCount > dim;
    const initialised = warmStart != null && worthIt && this.startFrom(system, warmStart);
    if (!initialised) {
      work.x.fill(0);
      work.r.set(work.rhs);
    }
    const iterations = preconditionedCg(system, work, params);
    const residualNorm = Math.sqrt(dot(work.r, work.r));
    // |u| = |u~|: Q is orthogonal.
    const solutionNorm = Math.sqrt(dot(work.x, work.x));

    system.kernels.matrixVectorProduct(work.eigenvectorColumns, work.x, work.scratch);
    return {
      vector: Float32Array.from(work.scratch.subarray(0, dim)),
      iterations,
      relativeResidual: residualNorm / system.rhsNorm,
      relativeErrorBound: errorBound(system.stop, residualNorm, solutionNorm),
    };
  }

  /**
   * Drops the cached rotations of `itemIds`. Not needed for correctness when a changed item
   * arrives as a new embedding object (a look-up compares values whenever the object differs),
   * only when an embedding array was modified in place.
   */
  invalidate(itemIds: Iterable<string>): void {
    this.basis.rotations.invalidate(itemIds);
  }

  /**
   * Accuracy of the eigenbasis, from `probes` random vectors v (seeded, O(probes d^2)): the
   * largest |G_basis v - Q Lambda Q^T v| / (|G_basis|_F |v|) and |Q^T Q v - v| / |v|. Both
   * are of order d eps for the symmetric QR algorithm; a diagnostic for logs and benchmarks.
   */
  checkBasis(probes = 4): { residual: number; orthogonality: number } {
    return this.basis.check(probes);
  }

  /** Size and hit counts of the rotation cache shared by this basis. */
  rotationCacheStats(): RotationCacheStats {
    return this.basis.rotations.stats();
  }

  /**
   * Fills the work rows with the rotated history (weights C_h) followed by the correction
   * (weights a0 s_k), the right-hand side b~ = sum_h C_h ybar_h e~_h, the preconditioner and
   * the stop.
   */
  private loadSystem(
    history: AggregatedHistory,
    catalogueSize: number,
    params: DualParams,
  ): RotatedSystem {
    const { rotations, eigenvalues, kernels } = this.basis;
    const { itemIds, embeddings, confidences, targets } = history;
    const historySize = embeddings.length;
    const correctionRank = params.a0 > 0 ? this.correction.rank : 0;
    const rowCount = historySize + correctionRank;
    const paddedRows = padded(rowCount);
    const work = this.basis.work.reserveRows(paddedRows);
    const { rows, weights, coefficients, rhs, diagonal } = work;
    const stride = rhs.length;
    // The most negative correction eigenvalue a0 s_k (0 if none), for the stop's lower bound.
    let negativeWeight = 0;

    for (let h = 0; h < historySize; h++) {
      rotations.rotated(itemIds[h]!, embeddings[h]!, rows, h * stride);
      weights[h] = confidences[h]!;
      coefficients[h] = confidences[h]! * targets[h]!;
    }
    if (correctionRank > 0) {
      rows.set(this.correction.rows, historySize * stride);
      for (let k = 0; k < correctionRank; k++) {
        const weight = params.a0 * this.correction.weights[k]!;
        weights[historySize + k] = weight;
        negativeWeight = Math.min(negativeWeight, weight * this.correction.squaredNorms[k]!);
      }
    }
    // The rows beyond rowCount weigh nothing; coefficients past the history neither.
    weights.fill(0, rowCount, paddedRows);
    coefficients.fill(0, historySize, paddedRows);
    rhs.fill(0);
    kernels.addRowCombination(rows, paddedRows, coefficients, rhs);

    const lambdaUser = lambdaForUser(params, historySize, catalogueSize);
    for (let k = 0; k < stride; k++) diagonal[k] = params.a0 * eigenvalues[k]! + lambdaUser;
    inversePreconditioner(work, rowCount);
    const stop = spectralStopRule(diagonal, this.dim, negativeWeight, lambdaUser, params.tolerance);
    return { kernels, rowCount, paddedRows, rhsNorm: Math.sqrt(dot(rhs, rhs)), stop };
  }

  /**
   * Seeds x with g Q^T warmStart, g = (w·b) / (w·A w) minimising the A-norm error along w, and
   * r with b - A x. Returns false, leaving x and r unset, when the warm start is unusable.
   */
  private startFrom(system: RotatedSystem, warmStart: Float32Array): boolean {
    const dim = this.dim;
    if (warmStart.length !== dim) return false;
    for (let i = 0; i < dim; i++) if (!Number.isFinite(warmStart[i]!)) return false;

    const work = this.basis.work.views;
    const { x, r, ap, rhs, scratch } = work;
    scratch.set(warmStart);
    scratch.fill(0, dim);
    system.kernels.matrixVectorProduct(work.eigenvectorRows, scratch, x);
    applySystem(system, work, x, ap);
    const curvature = dot(x, ap);
    if (!(curvature > 0)) return false;

    const factor = dot(x, rhs) / curvature;
    for (let k = 0; k < x.length; k++) {
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
  readonly kernels: 'webassembly' | 'javascript';
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
  const kernels = options.kernels ?? (simdModule() !== null ? 'webassembly' : 'javascript');
  if (kernels !== 'webassembly' && kernels !== 'javascript') {
    throw new RangeError(`kernels must be 'webassembly' or 'javascript', got ${String(kernels)}`);
  }
  if (kernels === 'webassembly' && simdModule() === null) {
    throw new RangeError("kernels 'webassembly': this runtime rejects the SIMD module");
  }
  return { rotationCacheItems, maxCorrectionRank, warmStart, kernels };
}

/** G_basis = Q Lambda Q^T and what every solver over it shares. */
class SpectralBasis {
  readonly rotations: RotationCache;

  private constructor(
    readonly dim: number,
    /** Copy of G_basis, row-major d x d, to measure later Gramians against. */
    readonly gramianValues: Float64Array,
    /** Lambda, clamped at 0 (see `decompose`), padded with zeros to length p. */
    readonly eigenvalues: Float64Array,
    /** Work memory, holding Q and Q^T. */
    readonly work: SolveWork,
    readonly kernels: Kernels,
    rotationCacheItems: number,
  ) {
    this.rotations = new RotationCache(this, rotationCacheItems);
  }

  /**
   * Eigendecomposition of a symmetric G. G is positive semi-definite, so a negative computed
   * eigenvalue is rounding (of order d eps |G|): it is set to 0, which changes G by no more.
   */
  static decompose(gramian: Gramian, options: ResolvedOptions): SpectralBasis {
    const { dim, values } = gramian;
    for (let k = 0; k < values.length; k++) {
      if (!Number.isFinite(values[k]!)) throw new RangeError('Gramian has a non-finite entry');
    }

    const rows = Array.from({ length: dim }, (_, i) => values.subarray(i * dim, (i + 1) * dim));
    const decomposition = new EigenvalueDecomposition(new Matrix(rows), { assumeSymmetric: true });
    const vectors = decomposition.eigenvectorMatrix;
    const stride = padded(dim);
    const eigenvalues = new Float64Array(stride);
    decomposition.realEigenvalues.forEach((value, k) => (eigenvalues[k] = Math.max(value, 0)));

    const work = new SolveWork(stride, options.kernels === 'webassembly');
    const { eigenvectorRows, eigenvectorColumns } = work.views;
    for (let i = 0; i < dim; i++) {
      for (let k = 0; k < dim; k++) {
        const value = vectors.get(i, k);
        eigenvectorColumns[i * stride + k] = value;
        eigenvectorRows[k * stride + i] = value;
      }
    }
    const kernels = work.kernels;
    return new SpectralBasis(
      dim,
      Float64Array.from(values),
      eigenvalues,
      work,
      kernels,
      options.rotationCacheItems,
    );
  }

  /** The same decomposition over new work memory with other kernels. */
  withKernels(options: ResolvedOptions): SpectralBasis {
    const work = new SolveWork(this.stride, options.kernels === 'webassembly');
    work.views.eigenvectorRows.set(this.work.views.eigenvectorRows);
    work.views.eigenvectorColumns.set(this.work.views.eigenvectorColumns);
    return new SpectralBasis(
      this.dim,
      this.gramianValues,
      this.eigenvalues,
      work,
      work.kernels,
      options.rotationCacheItems,
    );
  }

  /** Padded length p of every rotated vector. */
  get stride(): number {
    return this.eigenvalues.length;
  }

  /** See `DualSolver.checkBasis`. */
  check(probes: number): { residual: number; orthogonality: number } {
    const { dim, stride, gramianValues, eigenvalues } = this;
    const { eigenvectorRows, eigenvectorColumns } = this.work.views;
    const random = mulberry32(RANGE_SEED);
    const frobenius = Math.sqrt(dot(gramianValues, gramianValues));
    const v = new Float64Array(stride);
    const rotated = new Float64Array(stride);
    const back = new Float64Array(stride);
    const direct = new Float64Array(dim);
    let residual = 0;
    let orthogonality = 0;

    for (let probe = 0; probe < probes; probe++) {
      for (let i = 0; i < dim; i++) v[i] = gaussian(random);
      const norm = Math.sqrt(dot(v, v));
      matrixVectorProduct(eigenvectorRows, stride, v, rotated);
      matrixVectorProduct(eigenvectorColumns, stride, rotated, back);
      orthogonality = Math.max(orthogonality, distance(back, v, dim) / norm);
      for (let k = 0; k < stride; k++) rotated[k]! *= eigenvalues[k]!;
      matrixVectorProduct(eigenvectorColumns, stride, rotated, back);
      matrixVectorProduct(gramianValues, dim, v.subarray(0, dim), direct);
      residual = Math.max(residual, distance(back, direct, dim) / (frobenius * norm));
    }
    return { residual, orthogonality };
  }

  /** out (length p) = Q^T e, through the work's scratch vector (e in float64, zero-padded). */
  rotate(embedding: Float32Array, out: Float64Array): void {
    const { scratch, eigenvectorRows } = this.work.views;
    scratch.set(embedding);
    scratch.fill(0, embedding.length);
    this.kernels.matrixVectorProduct(eigenvectorRows, scratch, out);
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
    const row = out.subarray(offset, offset + this.basis.stride);
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

/** G_target - G_basis = V S V^T in rotated coordinates: `rank` rows of p, and S. */
interface GramianCorrection {
  readonly rank: number;
  /** Row-major rank x p: row k is Q^T v_k, v_k orthonormal, zero-padded. */
  readonly rows: Float64Array;
  readonly weights: Float64Array;
  /** |row k|^2: 1 up to rounding, kept for the stop's bound on the spectrum. */
  readonly squaredNorms: Float64Array;
}

const EMPTY_CORRECTION: GramianCorrection = {
  rank: 0,
  rows: new Float64Array(0),
  weights: new Float64Array(0),
  squaredNorms: new Float64Array(0),
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
  const { stride } = basis;
  const rotation = basis.work.views.eigenvectorRows;
  const rows = new Float64Array(kept.length * stride);
  const direction = new Float64Array(stride);
  kept.forEach((m, k) => {
    direction.fill(0);
    for (let j = 0; j < rank; j++) {
      addScaled(small.eigenvectorMatrix.get(j, m), columns[j]!, direction);
    }
    const row = rows.subarray(k * stride, (k + 1) * stride);
    matrixVectorProduct(rotation, stride, direction, row);
  });
  const weights = Float64Array.from(kept, (m) => small.realEigenvalues[m]!);
  const squaredNorms = Float64Array.from(kept, (_, k) => {
    const row = rows.subarray(k * stride, (k + 1) * stride);
    return dot(row, row);
  });
  return { rank: kept.length, rows, weights, squaredNorms };
}

/** Shape of the rotated system loaded into the work vectors. */
interface RotatedSystem {
  readonly kernels: Kernels;
  /** Rank-one rows in `work.rows`: the history, then the correction. */
  readonly rowCount: number;
  /** rowCount rounded up to a multiple of 4; the rows past rowCount weigh 0. */
  readonly paddedRows: number;
  readonly rhsNorm: number;
  readonly stop: StopRule;
}

/** The work vectors of a basis, as views on its memory; every vector has length p. */
interface WorkViews {
  /** Q^T row-major, p x p: row k is the k-th eigenvector, zero-padded. */
  readonly eigenvectorRows: Float64Array;
  /** Q row-major, p x p, for u = Q u~. */
  readonly eigenvectorColumns: Float64Array;
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
  /** A float64 copy of a float32 vector, or u = Q u~ before it becomes float32. */
  readonly scratch: Float64Array;
  /** Row-major rotated rows, `capacity` x p, contiguous for the kernels. */
  readonly rows: Float64Array;
  /** Weight of each row in A~: C_h, then a0 s_k. */
  readonly weights: Float64Array;
  /** Weight of each history row in b~: C_h ybar_h. */
  readonly coefficients: Float64Array;
}

/** Vectors of length p in `WorkViews`, in their order in memory after Q^T and Q. */
const WORK_VECTORS = 9;

/**
 * The memory of a basis: Q^T, Q, the work vectors, then the rows, which grow with the longest
 * history seen (capacity doubling). With WebAssembly kernels it is the module's linear memory,
 * whose growth keeps the contents but detaches every view, so callers take `views` afresh
 * after `reserveRows` and hold them only within one operation.
 */
class SolveWork {
  readonly kernels: Kernels;
  private readonly memory: WasmMemory | null;
  private buffer: ArrayBuffer;
  private capacity = 0;
  private current: WorkViews;

  constructor(
    private readonly stride: number,
    webassembly: boolean,
  ) {
    const bytes = this.bytesFor(0);
    if (webassembly) {
      this.memory = new wasm.Memory({ initial: Math.ceil(bytes / WASM_PAGE_BYTES) });
      this.buffer = this.memory.buffer;
      this.kernels = simdKernels(this.memory);
    } else {
      this.memory = null;
      this.buffer = new ArrayBuffer(bytes);
      this.kernels = JAVASCRIPT_KERNELS;
    }
    this.current = this.layout();
  }

  get views(): WorkViews {
    return this.current;
  }

  /** Room for `count` rows (a multiple of 4); returns the views, new if memory moved. */
  reserveRows(count: number): WorkViews {
    if (count <= this.capacity) return this.current;
    this.capacity = Math.max(count, 2 * this.capacity, 16);
    const bytes = this.bytesFor(this.capacity);
    if (this.memory !== null) {
      const pages = Math.ceil((bytes - this.buffer.byteLength) / WASM_PAGE_BYTES);
      if (pages > 0) this.memory.grow(pages);
      this.buffer = this.memory.buffer;
    } else if (bytes > this.buffer.byteLength) {
      const larger = new ArrayBuffer(bytes);
      new Uint8Array(larger).set(new Uint8Array(this.buffer));
      this.buffer = larger;
    }
    this.current = this.layout();
    return this.current;
  }

  private bytesFor(capacity: number): number {
    const p = this.stride;
    return 8 * (2 * p * p + WORK_VECTORS * p + capacity * (p + 2));
  }

  private layout(): WorkViews {
    const p = this.stride;
    let offset = 0;
    const take = (length: number): Float64Array => {
      const view = new Float64Array(this.buffer, 8 * offset, length);
      offset += length;
      return view;
    };
    return {
      eigenvectorRows: take(p * p),
      eigenvectorColumns: take(p * p),
      x: take(p),
      r: take(p),
      z: take(p),
      p: take(p),
      ap: take(p),
      rhs: take(p),
      diagonal: take(p),
      inverse: take(p),
      scratch: take(p),
      rows: take(this.capacity * p),
      weights: take(this.capacity),
      coefficients: take(this.capacity),
    };
  }
}

/** p: d rounded up to a multiple of 4, so the SIMD loops need no tails. */
function padded(count: number): number {
  return 4 * Math.ceil(count / 4);
}

/**
 * Preconditioner M = D where D is trustworthy. Where D_k is below 1e-12 max D (lambda_u = 0
 * and a direction the catalogue does not span), M_k is A~_kk itself, Jacobi's choice; where
 * that is 0 too, no row touches the direction, its residual stays 0, and M_k = 1 is harmless.
 */
function inversePreconditioner(work: WorkViews, rowCount: number): void {
  const { diagonal, inverse, rows, weights } = work;
  const stride = diagonal.length;
  let largest = 0;
  for (let k = 0; k < stride; k++) largest = Math.max(largest, diagonal[k]!);
  const floor = 1e-12 * largest;

  let degenerate = false;
  for (let k = 0; k < stride; k++) {
    const value = diagonal[k]!;
    if (value > floor) inverse[k] = 1 / value;
    else degenerate = true;
  }
  if (!degenerate) return;

  for (let k = 0; k < stride; k++) {
    if (diagonal[k]! > floor) continue;
    let jacobi = diagonal[k]!;
    for (let h = 0; h < rowCount; h++) jacobi += weights[h]! * rows[h * stride + k]! ** 2;
    inverse[k] = jacobi > 0 ? 1 / jacobi : 1;
  }
}

/**
 * The stop of the eigenbasis path (see dual.ts), from a lower bound on the spectrum of
 * A~ = D + sum_h w_h row_h row_h^T itself, kappa(A~) = kappa(A) as Q is orthogonal. By Weyl's
 * inequalities (Horn and Johnson, "Matrix Analysis", 2nd ed., theorem 4.3.1) the rows of
 * positive weight can only raise it, and the correction's rows are orthonormal (V orthonormal,
 * Q orthogonal), so its eigenvalues are its weights a0 s_k and
 * lambda_min >= min D + min(0, min_k a0 s_k); the negative weights come from removed items.
 * A~ stands for a0 G + history + lambda_u I with G positive semi-definite, so lambda_u is a lower
 * bound as well (up to the correction's 3e-10 |G|_F, far below it), the better one when a
 * negative weight is large. D counts over the d real coordinates: the padding carries no row
 * and no right-hand side, so CG never leaves the real ones. max D, of the order of |A~|, is the
 * scale.
 */
function spectralStopRule(
  diagonal: Float64Array,
  dim: number,
  negativeWeight: number,
  lambdaUser: number,
  tolerance: number,
): StopRule {
  let smallest = Number.POSITIVE_INFINITY;
  let largest = 0;
  for (let k = 0; k < dim; k++) {
    smallest = Math.min(smallest, diagonal[k]!);
    largest = Math.max(largest, diagonal[k]!);
  }
  return stopRule(tolerance, Math.max(lambdaUser, smallest + negativeWeight), largest);
}

/**
 * Preconditioned CG from the x and r in `work` (Saad, algorithm 9.1), stopping as
 * `system.stop` says (see dual.ts). Returns the iterations; x holds u~, r its residual.
 */
function preconditionedCg(system: RotatedSystem, work: WorkViews, params: DualParams): number {
  const { x, r, z, p, ap, inverse } = work;
  const stride = x.length;
  const reached = (residualSquared: number, solutionSquared: number): boolean =>
    stopReached(
      system.stop,
      Math.sqrt(residualSquared),
      Math.sqrt(solutionSquared),
      system.rhsNorm,
    );
  if (reached(dot(r, r), dot(x, x))) return 0;

  for (let k = 0; k < stride; k++) z[k] = inverse[k]! * r[k]!;
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
    let solutionSquared = 0;
    for (let k = 0; k < stride; k++) {
      const xk = x[k]! + step * p[k]!;
      x[k] = xk;
      solutionSquared += xk * xk;
      const rk = r[k]! - step * ap[k]!;
      r[k] = rk;
      residualSquared += rk * rk;
    }
    iterations++;
    if (reached(residualSquared, solutionSquared)) break;

    let rzNext = 0;
    for (let k = 0; k < stride; k++) {
      const zk = inverse[k]! * r[k]!;
      z[k] = zk;
      rzNext += r[k]! * zk;
    }
    const beta = rzNext / rz;
    rz = rzNext;
    for (let k = 0; k < stride; k++) p[k] = z[k]! + beta * p[k]!;
  }
  return iterations;
}

/** out = A~ v = D v + sum_rows w_h row_h (row_h·v). */
function applySystem(
  system: RotatedSystem,
  work: WorkViews,
  v: Float64Array,
  out: Float64Array,
): void {
  const { diagonal, rows, weights } = work;
  for (let k = 0; k < v.length; k++) out[k] = diagonal[k]! * v[k]!;
  system.kernels.addLowRankProduct(rows, system.paddedRows, weights, v, out);
}

/**
 * The loops that carry the flops. Vectors have length p and matrices p columns, p a multiple
 * of 4; row counts are multiples of 4. The WebAssembly kernels also require every array to be
 * a view on their memory.
 */
interface Kernels {
  /** out += sum_h w_h row_h (row_h·v) over `count` rows of length v.length. */
  addLowRankProduct(
    rows: Float64Array,
    count: number,
    weights: Float64Array,
    v: Float64Array,
    out: Float64Array,
  ): void;
  /** out += sum_h c_h row_h over `count` rows of length out.length. */
  addRowCombination(
    rows: Float64Array,
    count: number,
    coefficients: Float64Array,
    out: Float64Array,
  ): void;
  /** out = M v for M with out.length rows of v.length entries, row-major. */
  matrixVectorProduct(m: Float64Array, v: Float64Array, out: Float64Array): void;
}

const JAVASCRIPT_KERNELS: Kernels = {
  addLowRankProduct,
  addRowCombination,
  matrixVectorProduct: (m, v, out) => matrixVectorProduct(m, v.length, v, out),
};

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

/** |a - b| over the first `length` entries. */
function distance(a: Float64Array, b: Float64Array, length: number): number {
  let sum = 0;
  for (let i = 0; i < length; i++) sum += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(sum);
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

// ---------------------------------------------------------------------------------------------
// The SIMD kernels, assembled by features/wasm-assembler.ts.
//
// Each kernel mirrors its JavaScript twin above, two float64 lanes at a time (v128 values,
// f64x2 arithmetic). Addresses are byte offsets into the memory the module imports as
// env.memory.

/** base_k = start + k * rowBytes for the four row addresses of a block. */
function fourRows(start: Code, rowBytes: number, bases: readonly number[]): Code {
  return [
    ...start,
    ...set(bases[0]!),
    ...bases
      .slice(1)
      .flatMap((base, k) => [...get(bases[k]!), ...get(rowBytes), OP.i32Add, ...set(base)]),
  ];
}

/**
 * addLowRank(rows, count, weights, v, out, stride): four rows at a time, s_k = row_k·v in two
 * lanes, then out += sum_k (w_k s_k) row_k; `count` a multiple of 4, `stride` of 2.
 */
function lowRankKernel(): KernelFunction {
  const [rows, count, weights, v, out, stride] = [0, 1, 2, 3, 4, 5];
  const [h, j, rowBytes, r0, r1, r2, r3] = [6, 7, 8, 9, 10, 11, 12];
  const sums = [13, 14, 15, 16];
  const vj = 17;
  const scaled = [18, 19, 20, 21];
  const bases = [r0, r1, r2, r3];

  const dotStep: Code = [
    ...get(v),
    ...get(j),
    OP.i32Add,
    ...load128,
    ...set(vj),
    ...bases.flatMap((base, k) => [
      ...get(sums[k]!),
      ...get(base),
      ...get(j),
      OP.i32Add,
      ...load128,
      ...get(vj),
      ...mul2,
      ...add2,
      ...set(sums[k]!),
    ]),
  ];
  const axpyStep: Code = [
    ...get(out),
    ...get(j),
    OP.i32Add,
    ...get(out),
    ...get(j),
    OP.i32Add,
    ...load128,
    ...bases.flatMap((base, k) => [
      ...get(scaled[k]!),
      ...get(base),
      ...get(j),
      OP.i32Add,
      ...load128,
      ...mul2,
      ...add2,
    ]),
    ...store128,
  ];
  const block: Code = [
    ...fourRows([...get(rows), ...get(h), ...get(rowBytes), OP.i32Mul, OP.i32Add], rowBytes, bases),
    ...sums.flatMap((sum) => [...zero128, ...set(sum)]),
    ...forLoop(j, rowBytes, 16, dotStep),
    ...sums.flatMap((sum, k) => [
      ...loadF64(weights, h, k),
      ...laneSum(sum),
      OP.f64Mul,
      ...simd(OP.f64x2Splat),
      ...set(scaled[k]!),
    ]),
    ...forLoop(j, rowBytes, 16, axpyStep),
  ];
  return {
    name: 'addLowRank',
    parameters: 6,
    locals: [I32, I32, I32, I32, I32, I32, I32, ...new Array<number>(9).fill(V128)],
    body: [...get(stride), ...i32(3), OP.i32Shl, ...set(rowBytes), ...forLoop(h, count, 4, block)],
  };
}

/** addRowCombination(rows, count, coefficients, out, stride): out += sum_h c_h row_h. */
function rowCombinationKernel(): KernelFunction {
  const [rows, count, coefficients, out, stride] = [0, 1, 2, 3, 4];
  const [h, j, rowBytes, r0, r1, r2, r3] = [5, 6, 7, 8, 9, 10, 11];
  const scaled = [12, 13, 14, 15];
  const bases = [r0, r1, r2, r3];

  const axpyStep: Code = [
    ...get(out),
    ...get(j),
    OP.i32Add,
    ...get(out),
    ...get(j),
    OP.i32Add,
    ...load128,
    ...bases.flatMap((base, k) => [
      ...get(scaled[k]!),
      ...get(base),
      ...get(j),
      OP.i32Add,
      ...load128,
      ...mul2,
      ...add2,
    ]),
    ...store128,
  ];
  const block: Code = [
    ...fourRows([...get(rows), ...get(h), ...get(rowBytes), OP.i32Mul, OP.i32Add], rowBytes, bases),
    ...scaled.flatMap((local, k) => [
      ...loadF64(coefficients, h, k),
      ...simd(OP.f64x2Splat),
      ...set(local),
    ]),
    ...forLoop(j, rowBytes, 16, axpyStep),
  ];
  return {
    name: 'addRowCombination',
    parameters: 5,
    locals: [I32, I32, I32, I32, I32, I32, I32, V128, V128, V128, V128],
    body: [...get(stride), ...i32(3), OP.i32Shl, ...set(rowBytes), ...forLoop(h, count, 4, block)],
  };
}

/**
 * matrixVectorProduct(m, rowCount, v, out, stride): out_i = (row i of m)·v, four rows at a
 * time, each in two lanes; `rowCount` a multiple of 4, `stride` of 2.
 */
function matrixVectorKernel(): KernelFunction {
  const [m, rowCount, v, out, stride] = [0, 1, 2, 3, 4];
  const [i, j, rowBytes, r0, r1, r2, r3] = [5, 6, 7, 8, 9, 10, 11];
  const sums = [12, 13, 14, 15];
  const vj = 16;
  const bases = [r0, r1, r2, r3];

  const dotStep: Code = [
    ...get(v),
    ...get(j),
    OP.i32Add,
    ...load128,
    ...set(vj),
    ...bases.flatMap((base, k) => [
      ...get(sums[k]!),
      ...get(base),
      ...get(j),
      OP.i32Add,
      ...load128,
      ...get(vj),
      ...mul2,
      ...add2,
      ...set(sums[k]!),
    ]),
  ];
  const storeSum = (k: number): Code => [
    ...get(out),
    ...get(i),
    ...i32(3),
    OP.i32Shl,
    OP.i32Add,
    ...laneSum(sums[k]!),
    OP.f64Store,
    3,
    ...unsignedLeb128(8 * k),
  ];
  const block: Code = [
    ...fourRows([...get(m), ...get(i), ...get(rowBytes), OP.i32Mul, OP.i32Add], rowBytes, bases),
    ...sums.flatMap((sum) => [...zero128, ...set(sum)]),
    ...forLoop(j, rowBytes, 16, dotStep),
    ...[0, 1, 2, 3].flatMap(storeSum),
  ];
  return {
    name: 'matrixVectorProduct',
    parameters: 5,
    locals: [I32, I32, I32, I32, I32, I32, I32, V128, V128, V128, V128, V128],
    body: [
      ...get(stride),
      ...i32(3),
      OP.i32Shl,
      ...set(rowBytes),
      ...forLoop(i, rowCount, 4, block),
    ],
  };
}

/** The compiled kernels, or null where the runtime rejects them (no SIMD); built on first use. */
let compiledKernels: WasmModule | null | undefined;

function simdModule(): WasmModule | null {
  if (compiledKernels !== undefined) return compiledKernels;
  const bytes = encodeModule([lowRankKernel(), rowCombinationKernel(), matrixVectorKernel()]);
  compiledKernels = wasm.validate(bytes) ? new wasm.Module(bytes) : null;
  return compiledKernels;
}

interface SimdExports {
  addLowRank(
    rows: number,
    count: number,
    weights: number,
    v: number,
    out: number,
    stride: number,
  ): void;
  addRowCombination(
    rows: number,
    count: number,
    coefficients: number,
    out: number,
    stride: number,
  ): void;
  matrixVectorProduct(m: number, rowCount: number, v: number, out: number, stride: number): void;
}

/** The SIMD kernels bound to `memory`; the arrays passed must be views on it. */
function simdKernels(memory: WasmMemory): Kernels {
  const compiled = simdModule();
  if (compiled === null) throw new RangeError('this runtime rejects the SIMD module');
  const instance = new wasm.Instance(compiled, { env: { memory } });
  const exported = instance.exports as unknown as SimdExports;
  return {
    addLowRankProduct: (rows, count, weights, v, out) =>
      exported.addLowRank(
        rows.byteOffset,
        count,
        weights.byteOffset,
        v.byteOffset,
        out.byteOffset,
        v.length,
      ),
    addRowCombination: (rows, count, coefficients, out) =>
      exported.addRowCombination(
        rows.byteOffset,
        count,
        coefficients.byteOffset,
        out.byteOffset,
        out.length,
      ),
    matrixVectorProduct: (m, v, out) =>
      exported.matrixVectorProduct(
        m.byteOffset,
        out.length,
        v.byteOffset,
        out.byteOffset,
        v.length,
      ),
  };
}
