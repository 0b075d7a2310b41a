/**
 * Ranking metrics of one positive among sampled negatives, and percentile-bootstrap intervals
 * over clusters (users).
 *
 * One query = one positive item and n negatives, each with a score; NaN (a null feature) ranks
 * below every number and ties with other NaNs. Ties are resolved in expectation over a uniformly
 * random order of the tied items, so a constant feature scores exactly chance whatever the
 * order the candidates came in:
 *
 *  - AUC = (#negatives below + #tied / 2) / n, the Mann-Whitney form (Hanley & McNeil 1982).
 *  - With g negatives strictly above the positive and t tied with it, its rank is 1 + g + K,
 *    K uniform on 0..t. Recall@k = P(rank <= k); NDCG@k = E[1 / log2(rank + 1)] when rank <= k,
 *    else 0 (Järvelin & Kekäläinen 2002, one relevant item, so the ideal DCG is 1).
 */

export interface QueryOutcome {
  readonly auc: number;
  readonly ndcg: number;
  readonly recall: number;
}

/** Metrics of `positive` against `negatives` (NaN for null), cutoff `k`. */
export function rankOutcome(
  positive: number,
  negatives: ArrayLike<number>,
  k: number,
): QueryOutcome {
  const { above, tied } = countAboveAndTied(positive, negatives);
  const n = negatives.length;
  const auc = n === 0 ? 0.5 : (n - above - tied / 2) / n;
  return { auc, ...topKOutcome(above, tied, k) };
}

function countAboveAndTied(
  positive: number,
  negatives: ArrayLike<number>,
): { above: number; tied: number } {
  const positiveMissing = Number.isNaN(positive);
  let above = 0;
  let tied = 0;
  for (let i = 0; i < negatives.length; i++) {
    const value = negatives[i]!;
    if (Number.isNaN(value)) {
      if (positiveMissing) tied++;
    } else if (positiveMissing || value > positive) above++;
    else if (value === positive) tied++;
  }
  return { above, tied };
}

/** Expected Recall@k and NDCG@k for rank 1 + above + K, K uniform on 0..tied. */
export function topKOutcome(
  above: number,
  tied: number,
  k: number,
): { ndcg: number; recall: number } {
  const lastK = Math.min(tied, k - 1 - above);
  if (lastK < 0) return { ndcg: 0, recall: 0 };
  let gain = 0;
  for (let extra = 0; extra <= lastK; extra++) gain += 1 / Math.log2(2 + above + extra);
  return { ndcg: gain / (tied + 1), recall: (lastK + 1) / (tied + 1) };
}

export interface Interval {
  /** The statistic on the full sample. */
  readonly value: number;
  readonly low: number;
  readonly high: number;
}

export interface BootstrapOptions {
  readonly resamples: number;
  readonly seed: number;
  /** Two-sided coverage; default 0.95. */
  readonly level?: number;
}

/**
 * Mean of `values` (one per query) with a percentile bootstrap interval (Efron & Tibshirani
 * 1993, ch. 13) that resamples whole clusters: `cluster[q]` is query q's user, in
 * 0..clusterCount-1. Queries of one user share a state and are correlated; resampling them one
 * by one would give intervals that are too narrow. Each resample draws clusterCount users with
 * replacement and takes the mean over all their queries. A NaN value (a query a ranker could
 * not score) is left out of both.
 */
export function clusterBootstrap(
  values: Float64Array,
  cluster: Int32Array,
  clusterCount: number,
  options: BootstrapOptions,
): Interval {
  const { sums, counts } = clusterTotals(values, cluster, clusterCount);
  const value = ratio(sums, counts, null);
  const random = seededRandom(options.seed);
  const draws = new Int32Array(clusterCount);
  const estimates = new Float64Array(options.resamples);
  for (let r = 0; r < options.resamples; r++) {
    for (let c = 0; c < clusterCount; c++) draws[c] = Math.floor(random() * clusterCount);
    estimates[r] = ratio(sums, counts, draws);
  }
  return { value, ...percentiles(estimates, options.level ?? 0.95) };
}

function clusterTotals(values: Float64Array, cluster: Int32Array, clusterCount: number) {
  const sums = new Float64Array(clusterCount);
  const counts = new Float64Array(clusterCount);
  for (let q = 0; q < values.length; q++) {
    const value = values[q]!;
    if (Number.isNaN(value)) continue;
    sums[cluster[q]!]! += value;
    counts[cluster[q]!]!++;
  }
  return { sums, counts };
}

/** Sum over the drawn clusters (all of them when `draws` is null) of sums / of counts. */
function ratio(sums: Float64Array, counts: Float64Array, draws: Int32Array | null): number {
  let total = 0;
  let count = 0;
  const n = draws ? draws.length : sums.length;
  for (let i = 0; i < n; i++) {
    const c = draws ? draws[i]! : i;
    total += sums[c]!;
    count += counts[c]!;
  }
  return count === 0 ? Number.NaN : total / count;
}

/** The (1 - level) / 2 and (1 + level) / 2 quantiles, NaN estimates left out. */
function percentiles(estimates: Float64Array, level: number): { low: number; high: number } {
  const sorted = Float64Array.from(estimates.filter((x) => !Number.isNaN(x))).sort();
  if (sorted.length === 0) return { low: Number.NaN, high: Number.NaN };
  return { low: quantile(sorted, (1 - level) / 2), high: quantile(sorted, (1 + level) / 2) };
}

/** Linear interpolation between closest ranks (NumPy's default, "type 7"). */
export function quantile(sorted: Float64Array, q: number): number {
  const position = (sorted.length - 1) * q;
  const lower = Math.floor(position);
  const upper = Math.ceil(position);
  return sorted[lower]! + (position - lower) * (sorted[upper]! - sorted[lower]!);
}

/** Mulberry32 (Tommy Ettinger's 32-bit generator): uniform in [0, 1), fixed by its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
