/**
 * Time per dual-vector solve (src/features/dual.ts) for the exact Cholesky path and for
 * conjugate gradient started cold and warm, over embedding dimensions and history sizes.
 *
 * The warm case is the serving workload: the user's stored vector, solved for the history
 * without its newest event, seeds the solve for the history with it. Each configuration runs
 * over a handful of synthetic users and reports the median over batches, to damp a noisy host.
 *
 * Synthetic catalogue: unit vectors e = normalise(m + Q diag(s) z) with z standard normal,
 * s_k = (k + 1)^-1/2 (a spectrum decaying like 1/k), Q a random Gaussian matrix (so the
 * principal axes are not the coordinate axes, as with learned embeddings) and m a common
 * direction with a quarter of the variance (pairwise cosine about 0.25, the "cone" trained
 * encoders show). G is summed over a sample of 2000 such vectors and scaled by 10000 / 2000 to
 * stand for a catalogue of 10000. Events are sampled uniformly, with repeats, from the sample.
 *
 * Usage: node dist/bench/dual.js [--json] [--tolerance=1e-6] [--nu=0.5]
 * Prints figures only; it never asserts on a time.
 */

import { performance } from 'node:perf_hooks';

import { solveDualCg, solveDualExact } from '../src/features/dual.js';
import type { DualParams, DualSolution, DualTerm } from '../src/features/dual.js';
import { computeGramian } from '../src/features/gramian.js';
import type { Gramian } from '../src/features/gramian.js';

const SEED = 20_240_601;
const DIMENSIONS = [64, 128, 384, 768];
const HISTORY_SIZES = [10, 100, 500];
const SAMPLE_SIZE = 2000;
const CATALOGUE_SIZE = 10_000;
const USERS_PER_CONFIGURATION = 8;
const TARGET = { dim: 384, historySize: 100, microseconds: 500 };
/** Wall time spent measuring one path of one configuration, in milliseconds. */
const BUDGET_MS = 400;

interface Options {
  readonly json: boolean;
  readonly tolerance: number;
  readonly nu: number;
}

interface PathFigures {
  readonly microsecondsPerSolve: number;
  readonly meanIterations: number;
  readonly gigaflopsPerSecond: number;
}

interface ConfigurationFigures {
  readonly dim: number;
  readonly historySize: number;
  readonly exact: PathFigures;
  readonly cgCold: PathFigures;
  readonly cgWarm: PathFigures;
  readonly cgWarmJacobi: PathFigures;
  /** max over users of |u_cg - u_exact| / |u_exact| for the warm CG solve. */
  readonly warmRelativeError: number;
}

interface User {
  /** The history with its newest event. */
  readonly terms: DualTerm[];
  /** The stored vector: the CG solution for the history without the newest event. */
  readonly previous: Float32Array;
  readonly distinctItems: number;
}

function main(): void {
  const options = parseOptions(process.argv.slice(2));
  const params: DualParams = {
    a0: 0.1,
    lambda: 0.1,
    nu: options.nu,
    tolerance: options.tolerance,
    maxIterations: 1000,
  };
  const random = mulberry32(SEED);
  const rows: ConfigurationFigures[] = [];
  if (!options.json) printHeader(params);

  for (const dim of DIMENSIONS) {
    const catalogue = syntheticCatalogue(dim, random);
    const gramian = scaledGramian(catalogue, dim);
    for (const historySize of HISTORY_SIZES) {
      const users = syntheticUsers(catalogue, gramian, historySize, params, random);
      const row = measureConfiguration(gramian, users, params);
      rows.push(row);
      if (!options.json) printRow(row);
    }
  }

  const target = targetVerdict(rows);
  if (options.json) {
    const document = {
      benchmark: 'dual',
      node: process.version,
      seed: SEED,
      catalogueSize: CATALOGUE_SIZE,
      sampleSize: SAMPLE_SIZE,
      usersPerConfiguration: USERS_PER_CONFIGURATION,
      params,
      configurations: rows,
      target,
    };
    console.log(JSON.stringify(document, null, 2));
    return;
  }
  console.log(
    `\ntarget: d = ${TARGET.dim}, |H| = ${TARGET.historySize}, warm CG <= ` +
      `${TARGET.microseconds} us per solve on one core: measured ` +
      `${target.measuredMicroseconds.toFixed(0)} us, ${target.met ? 'met' : 'NOT met'}`,
  );
}

function measureConfiguration(
  gramian: Gramian,
  users: readonly User[],
  params: DualParams,
): ConfigurationFigures {
  const dim = gramian.dim;
  const jacobi: DualParams = { ...params, preconditioner: 'jacobi' };
  const exactVectors = users.map((user) =>
    solveDualExact(gramian, CATALOGUE_SIZE, user.terms, params),
  );
  const cold = users.map((user) => solveDualCg(gramian, CATALOGUE_SIZE, user.terms, params));
  const warm = users.map((user) =>
    solveDualCg(gramian, CATALOGUE_SIZE, user.terms, params, user.previous),
  );
  const warmJacobi = users.map((user) =>
    solveDualCg(gramian, CATALOGUE_SIZE, user.terms, jacobi, user.previous),
  );

  const exactTime = timePerCall(users, (user) =>
    solveDualExact(gramian, CATALOGUE_SIZE, user.terms, params),
  );
  const coldTime = timePerCall(users, (user) =>
    solveDualCg(gramian, CATALOGUE_SIZE, user.terms, params),
  );
  const warmTime = timePerCall(users, (user) =>
    solveDualCg(gramian, CATALOGUE_SIZE, user.terms, params, user.previous),
  );
  const warmJacobiTime = timePerCall(users, (user) =>
    solveDualCg(gramian, CATALOGUE_SIZE, user.terms, jacobi, user.previous),
  );

  const meanDistinct = mean(users.map((user) => user.distinctItems));
  const historySize = users[0]!.terms.length;
  return {
    dim,
    historySize,
    exact: figures(exactTime, 0, exactFlops(dim, meanDistinct)),
    cgCold: cgFigures(coldTime, cold, dim, meanDistinct, historySize, false, false),
    cgWarm: cgFigures(warmTime, warm, dim, meanDistinct, historySize, true, false),
    cgWarmJacobi: cgFigures(warmJacobiTime, warmJacobi, dim, meanDistinct, historySize, true, true),
    warmRelativeError: Math.max(
      ...warm.map((solution, k) => relativeError(solution.vector, exactVectors[k]!)),
    ),
  };
}

/**
 * Floating-point operations of one CG solve, counted from the code: b costs 2|E|d (|E| events);
 * each iteration one G product 2d^2 (plus 2d for the shift), the history 4|H|d and about 10d of
 * vector updates and dot products; a warm start one extra application of A and 5d; Jacobi
 * 4|H|d + 3d to form the diagonal and d per iteration.
 */
function cgFlops(
  dim: number,
  distinct: number,
  events: number,
  iterations: number,
  warm: boolean,
  jacobi: boolean,
): number {
  const application = 2 * dim * dim + 2 * dim + 4 * distinct * dim;
  const perIteration = application + 10 * dim + (jacobi ? dim : 0);
  const setup =
    2 * events * dim + (warm ? application + 5 * dim : 0) + (jacobi ? 4 * distinct * dim : 0);
  return setup + iterations * perIteration;
}

/**
 * Floating-point operations of the exact path: forming the upper triangle of A costs about
 * |H| d^2 (d^2/2 multiply-adds per item) plus d^2, Cholesky d^3/3 and the two triangular
 * solves 2d^2.
 */
function exactFlops(dim: number, distinct: number): number {
  return distinct * dim * dim + dim * dim + (dim * dim * dim) / 3 + 2 * dim * dim;
}

function cgFigures(
  microseconds: number,
  solutions: readonly DualSolution[],
  dim: number,
  distinct: number,
  events: number,
  warm: boolean,
  jacobi: boolean,
): PathFigures {
  const iterations = mean(solutions.map((solution) => solution.iterations));
  return figures(
    microseconds,
    iterations,
    cgFlops(dim, distinct, events, iterations, warm, jacobi),
  );
}

function figures(microseconds: number, meanIterations: number, flops: number): PathFigures {
  return {
    microsecondsPerSolve: microseconds,
    meanIterations,
    gigaflopsPerSecond: flops / (microseconds * 1000),
  };
}

/**
 * Median over batches of the mean time per call, in microseconds, cycling through the users.
 * Two untimed calls first let V8 compile the path.
 */
function timePerCall(users: readonly User[], call: (user: User) => unknown): number {
  call(users[0]!);
  call(users[1 % users.length]!);
  const single = performance.now();
  call(users[0]!);
  const singleMs = performance.now() - single;

  const batches = singleMs > 50 ? 3 : 7;
  const callsPerBatch = Math.max(1, Math.round(BUDGET_MS / batches / Math.max(singleMs, 1e-3)));
  const perCall: number[] = [];
  let next = 0;
  for (let batch = 0; batch < batches; batch++) {
    const start = performance.now();
    for (let k = 0; k < callsPerBatch; k++) call(users[next++ % users.length]!);
    perCall.push(((performance.now() - start) * 1000) / callsPerBatch);
  }
  return median(perCall);
}

function syntheticCatalogue(dim: number, random: () => number): Float32Array[] {
  const mixing = Array.from({ length: dim }, () =>
    Float64Array.from({ length: dim }, () => gaussian(random) / Math.sqrt(dim)),
  );
  const spread = Float64Array.from({ length: dim }, (_, k) => 1 / Math.sqrt(k + 1));
  const spreadVariance = spread.reduce((sum, s) => sum + s * s, 0);
  const common = unitGaussian(dim, random).map((v) => v * Math.sqrt(spreadVariance / 3));

  const catalogue: Float32Array[] = [];
  const latent = new Float64Array(dim);
  for (let n = 0; n < SAMPLE_SIZE; n++) {
    for (let k = 0; k < dim; k++) latent[k] = gaussian(random) * spread[k]!;
    const embedding = Float64Array.from(common);
    for (let i = 0; i < dim; i++) {
      const row = mixing[i]!;
      let sum = 0;
      for (let k = 0; k < dim; k++) sum += row[k]! * latent[k]!;
      embedding[i]! += sum;
    }
    catalogue.push(normalised(embedding));
  }
  return catalogue;
}

/** G over the sample, scaled to stand for the full catalogue. */
function scaledGramian(catalogue: readonly Float32Array[], dim: number): Gramian {
  const gramian = computeGramian(catalogue, dim);
  const factor = CATALOGUE_SIZE / catalogue.length;
  for (let k = 0; k < gramian.values.length; k++) gramian.values[k]! *= factor;
  gramian.count = CATALOGUE_SIZE;
  return gramian;
}

function syntheticUsers(
  catalogue: readonly Float32Array[],
  gramian: Gramian,
  historySize: number,
  params: DualParams,
  random: () => number,
): User[] {
  const users: User[] = [];
  for (let u = 0; u < USERS_PER_CONFIGURATION; u++) {
    const terms: DualTerm[] = [];
    for (let h = 0; h < historySize; h++) {
      const item = Math.floor(random() * catalogue.length);
      const confidence = 1 + 4 * random();
      terms.push({ itemId: `item-${item}`, embedding: catalogue[item]!, confidence, target: 1 });
    }
    const before = terms.slice(0, -1);
    const previous = solveDualCg(gramian, CATALOGUE_SIZE, before, params).vector;
    const distinctItems = new Set(terms.map((term) => term.itemId)).size;
    users.push({ terms, previous, distinctItems });
  }
  return users;
}

function targetVerdict(rows: readonly ConfigurationFigures[]): {
  dim: number;
  historySize: number;
  limitMicroseconds: number;
  measuredMicroseconds: number;
  met: boolean;
} {
  const row = rows.find((r) => r.dim === TARGET.dim && r.historySize === TARGET.historySize);
  const measured = row?.cgWarm.microsecondsPerSolve ?? Number.NaN;
  return {
    dim: TARGET.dim,
    historySize: TARGET.historySize,
    limitMicroseconds: TARGET.microseconds,
    measuredMicroseconds: measured,
    met: measured <= TARGET.microseconds,
  };
}

const COLUMNS: readonly [string, number][] = [
  ['d', 4],
  ['|H|', 4],
  ['exact us', 10],
  ['GF/s', 5],
  ['cold us', 9],
  ['it', 5],
  ['GF/s', 5],
  ['warm us', 9],
  ['it', 5],
  ['GF/s', 5],
  ['jac us', 9],
  ['it', 5],
  ['warm err', 9],
];

function printHeader(params: DualParams): void {
  console.log(
    `dual solve, a0 = ${params.a0}, lambda = ${params.lambda}, nu = ${params.nu}, ` +
      `tolerance = ${params.tolerance}, catalogue ${CATALOGUE_SIZE}, seed ${SEED}; ` +
      'us = microseconds per solve, it = mean CG iterations, GF/s = 1e9 flop/s, ' +
      'jac = warm with Jacobi, warm err = max |u_warm - u_exact| / |u_exact|',
  );
  console.log(COLUMNS.map(([name, width]) => name.padStart(width)).join(' '));
}

function printRow(row: ConfigurationFigures): void {
  const cells = [
    String(row.dim),
    String(row.historySize),
    row.exact.microsecondsPerSolve.toFixed(0),
    row.exact.gigaflopsPerSecond.toFixed(2),
    row.cgCold.microsecondsPerSolve.toFixed(0),
    row.cgCold.meanIterations.toFixed(1),
    row.cgCold.gigaflopsPerSecond.toFixed(2),
    row.cgWarm.microsecondsPerSolve.toFixed(0),
    row.cgWarm.meanIterations.toFixed(1),
    row.cgWarm.gigaflopsPerSecond.toFixed(2),
    row.cgWarmJacobi.microsecondsPerSolve.toFixed(0),
    row.cgWarmJacobi.meanIterations.toFixed(1),
    row.warmRelativeError.toExponential(1),
  ];
  console.log(cells.map((cell, k) => cell.padStart(COLUMNS[k]![1])).join(' '));
}

function parseOptions(args: readonly string[]): Options {
  let json = false;
  let tolerance = 1e-6;
  let nu = 0.5;
  for (const arg of args) {
    const [name, value] = arg.split('=', 2);
    if (name === '--json') json = true;
    else if (name === '--tolerance') tolerance = Number(value);
    else if (name === '--nu') nu = Number(value);
    else throw new Error(`unknown argument ${arg}; expected --json, --tolerance=X or --nu=X`);
  }
  if (!(tolerance > 0)) throw new Error(`--tolerance must be a number > 0, got ${tolerance}`);
  if (!Number.isFinite(nu)) throw new Error(`--nu must be a finite number, got ${nu}`);
  return { json, tolerance, nu };
}

function relativeError(actual: Float32Array, expected: Float32Array): number {
  let difference = 0;
  let reference = 0;
  for (let i = 0; i < expected.length; i++) {
    difference += (actual[i]! - expected[i]!) ** 2;
    reference += expected[i]! ** 2;
  }
  return Math.sqrt(difference / reference);
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

function unitGaussian(dim: number, random: () => number): Float64Array {
  return normalised64(Float64Array.from({ length: dim }, () => gaussian(random)));
}

function normalised64(vector: Float64Array): Float64Array {
  const length = Math.hypot(...vector);
  return vector.map((v) => v / length);
}

function normalised(vector: Float64Array): Float32Array {
  return Float32Array.from(normalised64(vector));
}

function mean(values: readonly number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / values.length;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

main();
