/**
 * The interaction event as it travels on the `interactions` topic (JSON value, key = user id)
 * and as the offline tools read it from files.
 */
export interface InteractionEvent {
  readonly user: string;
  readonly item: string;
  /** Event time, epoch milliseconds. */
  readonly ts: number;
  /** A type named in the signals configuration, e.g. `click` or `dislike`. */
  readonly type: string;
  /** Optional non-negative multiplier of the type's weight (a watch fraction, a quantity). */
  readonly value?: number;
  /** Optional producer-side id; used to drop a producer's duplicate sends. */
  readonly id?: string;
}

export type Polarity = 'positive' | 'negative';

/** How one event type counts: its polarity, weight and method-2 target. */
export interface SignalSpec {
  readonly polarity: Polarity;
  /** Magnitude (> 0) of the event's weight in the decayed sums and its dual confidence. */
  readonly weight: number;
  /** Method 2 regression target y: 1 for positive types and 0 for negative ones by default. */
  readonly target: number;
}

export type Signals = ReadonlyMap<string, SignalSpec>;

/** The default signals: click +1, like +3, purchase +5, dislike -3, skip -0.5. */
export const DEFAULT_SIGNALS_SPEC = 'click:+1,like:+3,purchase:+5,dislike:-3,skip:-0.5';

/**
 * Parses `type:±weight[:target]` entries separated by commas. The sign is the polarity and the
 * magnitude the weight; the optional third part overrides the dual target.
 */
export function parseSignals(spec: string): Signals {
  const signals = new Map<string, SignalSpec>();

  for (const entry of spec.split(',').map((part) => part.trim())) {
    if (entry === '') continue;
    const [type, weightText, targetText] = entry.split(':').map((part) => part.trim());
    const weight = Number(weightText);
    if (!type || !weightText || !Number.isFinite(weight) || weight === 0) {
      throw new Error(`signal entry "${entry}" must read type:±weight[:target], weight ≠ 0`);
    }
    if (signals.has(type)) throw new Error(`signal type "${type}" is listed twice`);

    const polarity: Polarity = weight > 0 ? 'positive' : 'negative';
    const target = targetText === undefined ? (weight > 0 ? 1 : 0) : Number(targetText);
    if (!Number.isFinite(target)) throw new Error(`signal "${entry}": target is not a number`);
    signals.set(type, { polarity, weight: Math.abs(weight), target });
  }

  if (signals.size === 0) throw new Error('the signals configuration lists no type');
  return signals;
}
