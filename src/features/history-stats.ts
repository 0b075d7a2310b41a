/**
 * Statistics of the cosines between one candidate and each item of the user's recent history:
 * decay-weighted mean, max, p50, p90 and the share above each configured threshold.
 *
 * Percentiles interpolate linearly between closest ranks (NumPy's default, "linear" / Hyndman
 * and Fan type 7), so a Python reimplementation reproduces them with `np.percentile`.
 */
export interface CosineSample {
  readonly cosine: number;
  /** Non-negative weight for the mean: the event's weight times its decay. */
  readonly weight: number;
}

export interface CosineStats {
  readonly mean: number | null;
  readonly max: number | null;
  readonly p50: number | null;
  readonly p90: number | null;
  readonly shareAbove: readonly (number | null)[];
  readonly count: number;
}

export function cosineStats(
  samples: readonly CosineSample[],
  thresholds: readonly number[],
): CosineStats {
  if (samples.length === 0) {
    return {
      mean: null,
      max: null,
      p50: null,
      p90: null,
      shareAbove: thresholds.map(() => null),
      count: 0,
    };
  }

  const sorted = samples.map((sample) => sample.cosine).sort((a, b) => a - b);
  const shareAbove = thresholds.map(
    (threshold) => sorted.filter((cosine) => cosine > threshold).length / sorted.length,
  );

  return {
    mean: weightedMean(samples),
    max: sorted[sorted.length - 1]!,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    shareAbove,
    count: samples.length,
  };
}

/** Linear interpolation between closest ranks over an ascending array (type 7). */
export function percentile(sorted: readonly number[], q: number): number {
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  const fraction = position - below;
  return sorted[below]! + fraction * (sorted[above]! - sorted[below]!);
}

/** The weighted mean; when every weight has decayed to zero, the plain mean. */
function weightedMean(samples: readonly CosineSample[]): number {
  let weightSum = 0;
  let weighted = 0;
  for (const sample of samples) {
    weightSum += sample.weight;
    weighted += sample.weight * sample.cosine;
  }
  if (weightSum > 0) return weighted / weightSum;
  return samples.reduce((sum, sample) => sum + sample.cosine, 0) / samples.length;
}
