/**
 * A Prometheus histogram without labels that also takes observations already counted into its
 * buckets: what the engine thread's histograms arrive as (workers/engine-link.ts). Replaying
 * the engine's freshness observations one by one through prom-client's Histogram took the main
 * thread about 150 ms per million events, 100 ms of them in one go after a backlog's last
 * flush (docs/benchmarks.md); counts cost one addition per bucket.
 *
 * It registers like any prom-client metric (a registry asks a metric for `get()`) and exposes
 * exactly what prom-client's Histogram does for the same observations:
 * `<name>_bucket{le="..."}` cumulative, `le="+Inf"`, `<name>_sum` and `<name>_count`.
 */
import type { Registry } from 'prom-client';

/** One line of the exposition, as prom-client's metrics give it to their registry. */
export interface HistogramSample {
  readonly labels: Readonly<Record<string, string | number>>;
  readonly value: number;
  readonly metricName: string;
}

/** What `get()` returns: the shape prom-client's registry formats (its typings say otherwise). */
export interface HistogramSnapshot {
  readonly name: string;
  readonly help: string;
  readonly type: 'histogram';
  readonly aggregator: 'sum';
  readonly values: readonly HistogramSample[];
}

export interface CountedHistogramOptions {
  readonly name: string;
  readonly help: string;
  /** Upper bounds, ascending; an observation above the last counts in +Inf only. */
  readonly buckets: readonly number[];
  readonly registers: readonly Registry[];
}

export class CountedHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  readonly upperBounds: readonly number[];
  /** Observations per bucket, not cumulative; the last one is above every bound. */
  private counts: Float64Array;
  private sum = 0;

  constructor(options: CountedHistogramOptions) {
    this.name = options.name;
    this.help = options.help;
    this.upperBounds = [...options.buckets];
    this.counts = new Float64Array(this.upperBounds.length + 1);
    for (const registry of options.registers) registry.registerMetric(this as never);
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`value is not a finite number: ${value}`);
    this.counts[bucketOf(this.upperBounds, value)]! += 1;
    this.sum += value;
  }

  /** Adds `counts` (per bucket as this histogram's, not cumulative) and their `sum`. */
  observeCounts(counts: ArrayLike<number>, sum: number): void {
    if (counts.length !== this.counts.length) {
      throw new RangeError(`${counts.length} bucket counts for ${this.counts.length} buckets`);
    }
    for (let b = 0; b < counts.length; b++) this.counts[b]! += counts[b]!;
    this.sum += sum;
  }

  get(): Promise<HistogramSnapshot> {
    const values: HistogramSample[] = [];
    let cumulative = 0;
    this.upperBounds.forEach((bound, b) => {
      cumulative += this.counts[b]!;
      values.push({ labels: { le: bound }, value: cumulative, metricName: `${this.name}_bucket` });
    });
    const count = cumulative + this.counts[this.upperBounds.length]!;
    values.push({ labels: { le: '+Inf' }, value: count, metricName: `${this.name}_bucket` });
    values.push({ labels: {}, value: this.sum, metricName: `${this.name}_sum` });
    values.push({ labels: {}, value: count, metricName: `${this.name}_count` });
    const { name, help, type, aggregator } = this;
    return Promise.resolve({ name, help, type, values, aggregator });
  }

  reset(): void {
    this.counts = new Float64Array(this.upperBounds.length + 1);
    this.sum = 0;
  }
}

/** The bucket of `value`: the first bound at or above it, or the one past the last bound. */
export function bucketOf(upperBounds: readonly number[], value: number): number {
  let b = 0;
  while (b < upperBounds.length && value > upperBounds[b]!) b++;
  return b;
}
