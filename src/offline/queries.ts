/**
 * The evaluation protocol's data: a chronological split, the ranking queries of a period (one
 * per positive event, the positive item among sampled negatives) and the non-embedding baseline
 * features of every candidate, all point in time. docs/evaluation.md gives the reasons.
 *
 *  - Split by global time at quantiles of the event timestamps: with the defaults, validation
 *    starts where the last 20% of the events begin and test where the last 10% begin. An event
 *    at a boundary belongs to the later period.
 *  - A query is a positive-type event of the period whose item has an embedding and whose user
 *    has at least one event with a strictly earlier timestamp (otherwise every embedding feature
 *    is null and the query measures only popularity).
 *  - Negatives: `popularity` draws items in proportion to their event counts before the period
 *    starts, `uniform` draws from the whole catalogue; both skip the positive and the items the
 *    exclusion rule names. `point-in-time` (the default) skips the items the user had an event
 *    with up to `windowMs` after the query: the history, plus the rest of the rating session (a
 *    session puts the next positives seconds later; drawing them as negatives would punish the
 *    methods for being right). `whole-log` skips every item the user has an event with anywhere
 *    in the log, which reads the future: an item rated a year later is never a negative, and
 *    those are the hard negatives closest to the user's taste. docs/evaluation.md compares them.
 *    `log` uses the user's own negative-type events of the same period at or after the query
 *    time, on items the user had no event with before it (a disliked item already in the
 *    history would be recognised, not predicted); queries without one are skipped.
 */
import type { InteractionEvent, Signals } from '../events/types.js';
import { FeatureTable } from './feature-table.js';
import { seededRandom } from './metrics.js';

export interface Split {
  readonly validationStartMs: number;
  readonly testStartMs: number;
  /** One past the newest event. */
  readonly endMs: number;
}

export type NegativeMode = 'popularity' | 'uniform' | 'log';

/** Which of the user's items a sampled negative may not be; see the file comment. */
export type ExclusionRule = 'point-in-time' | 'whole-log';

export interface NegativeExclusion {
  readonly rule: ExclusionRule;
  /** `point-in-time` only: items rated up to this long after the query are excluded too. */
  readonly windowMs: number;
}

/** The default: the history plus the same day (95% of MovieLens' rating gaps are under 1 day). */
export const DEFAULT_EXCLUSION: NegativeExclusion = { rule: 'point-in-time', windowMs: 86_400_000 };

export interface QueryOptions {
  readonly negatives: NegativeMode;
  /** For `popularity` and `uniform`; `log` has its own rule. */
  readonly exclusion: NegativeExclusion;
  readonly negativesPerPositive: number;
  readonly seed: number;
  /** A seeded uniform subsample of at most this many queries per period. */
  readonly maxQueries: number;
}

export interface Query {
  readonly user: string;
  /** Index of the user among the period's users: the bootstrap cluster. */
  readonly cluster: number;
  readonly atMs: number;
  /** The positive first, then the negatives. */
  readonly candidates: readonly string[];
}

export interface PeriodQueries {
  readonly name: 'validation' | 'test';
  readonly startMs: number;
  readonly endMs: number;
  readonly queries: readonly Query[];
  /** Row of each query's first candidate in the period's feature tables. */
  readonly offsets: Int32Array;
  readonly rows: number;
  readonly users: readonly string[];
  readonly counts: {
    readonly positives: number;
    readonly noEarlierEvent: number;
    readonly noEmbedding: number;
    readonly noNegatives: number;
    readonly subsampledAway: number;
  };
}

/** Validation and test start at the timestamps where the last fractions of events begin. */
export function chronologicalSplit(
  events: readonly InteractionEvent[],
  validationFraction: number,
  testFraction: number,
): Split {
  const times = events.map((event) => event.ts).sort((a, b) => a - b);
  const at = (fraction: number) => times[Math.floor((1 - fraction) * times.length)]!;
  return {
    validationStartMs: at(validationFraction + testFraction),
    testStartMs: at(testFraction),
    endMs: times[times.length - 1]! + 1,
  };
}

/** Everything about the log the query builder reads, computed once for both periods. */
export interface LogIndex {
  readonly events: readonly InteractionEvent[];
  readonly signals: Signals;
  readonly firstEventMs: Map<string, number>;
  /** Per user, each item they have an event with and the time of their first event with it. */
  readonly firstEventOfItem: Map<string, Map<string, number>>;
  readonly eventsOfUser: Map<string, InteractionEvent[]>;
}

export function indexLog(events: readonly InteractionEvent[], signals: Signals): LogIndex {
  const firstEventMs = new Map<string, number>();
  const firstEventOfItem = new Map<string, Map<string, number>>();
  const eventsOfUser = new Map<string, InteractionEvent[]>();
  for (const event of events) {
    const first = firstEventMs.get(event.user);
    if (first === undefined || event.ts < first) firstEventMs.set(event.user, event.ts);
    let items = firstEventOfItem.get(event.user);
    if (!items) firstEventOfItem.set(event.user, (items = new Map()));
    const itemFirst = items.get(event.item);
    if (itemFirst === undefined || event.ts < itemFirst) items.set(event.item, event.ts);
    const own = eventsOfUser.get(event.user);
    if (own) own.push(event);
    else eventsOfUser.set(event.user, [event]);
  }
  return { events, signals, firstEventMs, firstEventOfItem, eventsOfUser };
}

/** The queries of [startMs, endMs) with their candidates. */
export function buildQueries(
  log: LogIndex,
  period: { name: 'validation' | 'test'; startMs: number; endMs: number },
  catalogue: { readonly ids: readonly string[]; has(item: string): boolean },
  options: QueryOptions,
): PeriodQueries {
  const counts = {
    positives: 0,
    noEarlierEvent: 0,
    noEmbedding: 0,
    noNegatives: 0,
    subsampledAway: 0,
  };
  const positives = periodPositives(log, period, catalogue, counts);
  const kept = subsample(positives, options.maxQueries, options.seed);
  counts.subsampledAway = positives.length - kept.length;

  const sampler = negativeSampler(log, period, catalogue, options);
  const clusters = new Map<string, number>();
  const queries: Query[] = [];
  for (const event of kept) {
    const negatives = sampler(event);
    if (negatives.length === 0) {
      counts.noNegatives++;
      continue;
    }
    if (!clusters.has(event.user)) clusters.set(event.user, clusters.size);
    const cluster = clusters.get(event.user)!;
    queries.push({
      user: event.user,
      cluster,
      atMs: event.ts,
      candidates: [event.item, ...negatives],
    });
  }
  return { ...period, queries, ...rowLayout(queries), users: [...clusters.keys()], counts };
}

function periodPositives(
  log: LogIndex,
  period: { startMs: number; endMs: number },
  catalogue: { has(item: string): boolean },
  counts: { positives: number; noEarlierEvent: number; noEmbedding: number },
): InteractionEvent[] {
  const positives: InteractionEvent[] = [];
  for (const event of log.events) {
    if (event.ts < period.startMs || event.ts >= period.endMs) continue;
    if (log.signals.get(event.type)?.polarity !== 'positive') continue;
    counts.positives++;
    if (!catalogue.has(event.item)) counts.noEmbedding++;
    else if (!(log.firstEventMs.get(event.user)! < event.ts)) counts.noEarlierEvent++;
    else positives.push(event);
  }
  return positives;
}

/** At most `max` of `events`, drawn uniformly without replacement, in their original order. */
function subsample<T>(events: readonly T[], max: number, seed: number): T[] {
  if (events.length <= max) return [...events];
  const random = seededRandom(seed ^ 0x5eed);
  const indices = events.map((_, index) => index);
  for (let i = 0; i < max; i++) {
    const j = i + Math.floor(random() * (indices.length - i));
    [indices[i], indices[j]] = [indices[j]!, indices[i]!];
  }
  return indices
    .slice(0, max)
    .sort((a, b) => a - b)
    .map((index) => events[index]!);
}

function rowLayout(queries: readonly Query[]): { offsets: Int32Array; rows: number } {
  const offsets = new Int32Array(queries.length);
  let rows = 0;
  queries.forEach((query, q) => {
    offsets[q] = rows;
    rows += query.candidates.length;
  });
  return { offsets, rows };
}

type Sampler = (positive: InteractionEvent) => string[];

function negativeSampler(
  log: LogIndex,
  period: { startMs: number; endMs: number },
  catalogue: { readonly ids: readonly string[]; has(item: string): boolean },
  options: QueryOptions,
): Sampler {
  if (options.negatives === 'log') return logNegatives(log, period, catalogue, options);
  const draw =
    options.negatives === 'uniform'
      ? uniformDraw(catalogue.ids, seededRandom(options.seed))
      : popularityDraw(log, period.startMs, catalogue, seededRandom(options.seed));
  return (positive) => {
    const excluded = exclusionOf(log, positive, options.exclusion);
    const chosen = new Set<string>();
    const attempts = MAX_DRAWS_PER_NEGATIVE * options.negativesPerPositive;
    for (let a = 0; a < attempts && chosen.size < options.negativesPerPositive; a++) {
      const item = draw();
      if (item !== positive.item && !excluded(item)) chosen.add(item);
    }
    return [...chosen];
  };
}

/** Whether an item may not be a negative of `positive`'s query, by `exclusion`'s rule. */
function exclusionOf(
  log: LogIndex,
  positive: InteractionEvent,
  exclusion: NegativeExclusion,
): (item: string) => boolean {
  const firstOf = log.firstEventOfItem.get(positive.user)!;
  if (exclusion.rule === 'whole-log') return (item) => firstOf.has(item);

  const untilMs = positive.ts + exclusion.windowMs;
  return (item) => {
    const firstMs = firstOf.get(item);
    return firstMs !== undefined && firstMs <= untilMs;
  };
}

/** Draws before giving up on filling a query's negatives (only tiny catalogues get there). */
const MAX_DRAWS_PER_NEGATIVE = 50;

function uniformDraw(ids: readonly string[], random: () => number): () => string {
  return () => ids[Math.floor(random() * ids.length)]!;
}

/** Items in proportion to their events before `beforeMs` (catalogue items only). */
function popularityDraw(
  log: LogIndex,
  beforeMs: number,
  catalogue: { has(item: string): boolean },
  random: () => number,
): () => string {
  const counts = new Map<string, number>();
  for (const event of log.events) {
    if (event.ts < beforeMs && catalogue.has(event.item))
      counts.set(event.item, (counts.get(event.item) ?? 0) + 1);
  }
  const items = [...counts.keys()];
  const cumulative = new Float64Array(items.length);
  let total = 0;
  items.forEach((item, index) => (cumulative[index] = total += counts.get(item)!));
  return () => items[upperBound(cumulative, random() * total)]!;
}

/** First index whose cumulative count exceeds `target`. */
function upperBound(cumulative: Float64Array, target: number): number {
  let low = 0;
  let high = cumulative.length - 1;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (cumulative[middle]! > target) high = middle;
    else low = middle + 1;
  }
  return low;
}

function logNegatives(
  log: LogIndex,
  period: { endMs: number },
  catalogue: { has(item: string): boolean },
  options: QueryOptions,
): Sampler {
  return (positive) => {
    const own = log.eventsOfUser.get(positive.user)!;
    const before = new Set(own.filter((e) => e.ts < positive.ts).map((e) => e.item));
    const liked = new Set(
      own.filter((e) => log.signals.get(e.type)?.polarity === 'positive').map((e) => e.item),
    );
    const chosen = new Set<string>();
    for (const event of own) {
      if (event.ts < positive.ts || event.ts >= period.endMs) continue;
      if (log.signals.get(event.type)?.polarity !== 'negative') continue;
      if (before.has(event.item) || liked.has(event.item) || !catalogue.has(event.item)) continue;
      if (chosen.size < options.negativesPerPositive) chosen.add(event.item);
    }
    return [...chosen];
  };
}

/** Names of the baseline features, none of them from embeddings. */
export const BASELINE_FEATURES = [
  'base.item.events_log',
  'base.item.recent_log',
  'base.item.positive_share',
  'base.user.events_log',
  'base.user.positive_share',
] as const;

/** The window of `base.item.recent_log`. */
export const RECENT_WINDOW_MS = 30 * 86_400_000;

/**
 * Baseline features of every candidate, from the events strictly before its query's time:
 * log(1 + events on the item), the same over the last 30 days, the item's share of positive
 * events, log(1 + the user's events) and the user's share of positive events. The user features
 * are the same for every candidate of a query: a linear ranker cannot use them to order one
 * user's candidates, and they are there for completeness (a tree model could).
 */
export function baselineFeatures(log: LogIndex, period: PeriodQueries): FeatureTable {
  const table = new FeatureTable(BASELINE_FEATURES, period.rows);
  const counters = new PointInTimeCounts(log);
  const order = period.queries
    .map((_, q) => q)
    .sort((a, b) => period.queries[a]!.atMs - period.queries[b]!.atMs);
  for (const q of order) {
    const query = period.queries[q]!;
    counters.advanceTo(query.atMs);
    query.candidates.forEach((item, c) =>
      table.set(period.offsets[q]! + c, counters.features(query.user, item)),
    );
  }
  return table;
}

/** Event counts per item and user, for a read time that only moves forward. */
class PointInTimeCounts {
  private next = 0;
  private windowStart = 0;
  private readonly itemEvents = new Map<string, number>();
  private readonly itemPositives = new Map<string, number>();
  private readonly itemRecent = new Map<string, number>();
  private readonly userEvents = new Map<string, number>();
  private readonly userPositives = new Map<string, number>();
  private readonly sorted: readonly InteractionEvent[];

  constructor(private readonly log: LogIndex) {
    this.sorted = [...log.events].sort((a, b) => a.ts - b.ts);
  }

  advanceTo(atMs: number): void {
    for (; this.next < this.sorted.length && this.sorted[this.next]!.ts < atMs; this.next++) {
      const event = this.sorted[this.next]!;
      const positive = this.log.signals.get(event.type)?.polarity === 'positive' ? 1 : 0;
      increment(this.itemEvents, event.item, 1);
      increment(this.itemPositives, event.item, positive);
      increment(this.itemRecent, event.item, 1);
      increment(this.userEvents, event.user, 1);
      increment(this.userPositives, event.user, positive);
    }
    const windowStartMs = atMs - RECENT_WINDOW_MS;
    for (
      ;
      this.windowStart < this.next && this.sorted[this.windowStart]!.ts < windowStartMs;
      this.windowStart++
    ) {
      increment(this.itemRecent, this.sorted[this.windowStart]!.item, -1);
    }
  }

  features(user: string, item: string): Record<string, number | null> {
    const itemEvents = this.itemEvents.get(item) ?? 0;
    const userEvents = this.userEvents.get(user) ?? 0;
    return {
      'base.item.events_log': Math.log1p(itemEvents),
      'base.item.recent_log': Math.log1p(this.itemRecent.get(item) ?? 0),
      'base.item.positive_share':
        itemEvents === 0 ? null : (this.itemPositives.get(item) ?? 0) / itemEvents,
      'base.user.events_log': Math.log1p(userEvents),
      'base.user.positive_share':
        userEvents === 0 ? null : (this.userPositives.get(user) ?? 0) / userEvents,
    };
  }
}

function increment(map: Map<string, number>, key: string, by: number): void {
  map.set(key, (map.get(key) ?? 0) + by);
}
