/**
 * Exponential decay by half-life: an event of age t counts 2^(-t / halfLife). The factor of a
 * sum of ages is the product of the factors, which is what lets a decayed sum be re-anchored
 * to a later time by one multiplication and a late event be added with its own factor, so the
 * result does not depend on the order in which events arrive.
 */
export function decayFactor(ageMs: number, halfLifeMs: number): number {
  // The common case in the worker (an event at the anchor), and exactly what Math.pow gives.
  if (ageMs === 0) return 1;
  return Math.pow(2, -ageMs / halfLifeMs);
}
