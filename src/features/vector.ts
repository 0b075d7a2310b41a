/**
 * Small dense-vector kernels shared by every method. Plain loops over typed arrays: V8 compiles
 * them to tight machine code, and at the dimensions we serve (64 to 1024) they beat any call
 * into a matrix library, whose per-call overhead dominates.
 */

export type Vector = Float32Array | Float64Array;

/** Dot product of two vectors of the same length. */
export function dot(a: Vector, b: Vector): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}

/** Euclidean norm. */
export function norm(a: Vector): number {
  return Math.sqrt(dot(a, a));
}

/** Cosine similarity, or null when either vector has zero length (undefined angle). */
export function cosine(a: Vector, b: Vector): number | null {
  const denominator = norm(a) * norm(b);
  if (denominator === 0 || !Number.isFinite(denominator)) return null;
  return dot(a, b) / denominator;
}

/** y += alpha * x, in place. */
export function axpy(alpha: number, x: Vector, y: Vector): void {
  for (let i = 0; i < x.length; i++) y[i]! += alpha * x[i]!;
}

/** x *= alpha, in place. */
export function scale(alpha: number, x: Vector): void {
  for (let i = 0; i < x.length; i++) x[i]! *= alpha;
}

/** |actual - expected| / |expected|, in float64 whatever the arrays hold. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let difference = 0;
  let reference = 0;
  for (let i = 0; i < expected.length; i++) {
    difference += (actual[i]! - expected[i]!) ** 2;
    reference += expected[i]! ** 2;
  }
  return Math.sqrt(difference / reference);
}
