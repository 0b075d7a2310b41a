/**
 * Checks and transforms item embeddings: the validation every row of a catalogue and every
 * message of the `item-embeddings` topic goes through, mean-centring, and L2 normalisation.
 *
 * Why centre. Embeddings from a general-purpose encoder share a large common direction: in
 * ml-latest-small (GloVe vectors of title and genre words) two items drawn at random have a
 * mean cosine of 0.65 before centring and 0.00 after. Every cosine feature built on the raw
 * vectors then sits near 0.65 whatever the user likes, and the differences that carry the
 * signal are a small ripple on top. Subtracting the catalogue mean removes the common part, so
 * cosine measures how two items differ from the typical item, which is what a preference is.
 * Centring is done with the mean of the whole catalogue, kept and reused for items that arrive
 * later, so old and new items live in the same space.
 *
 * Zero vectors. A vector with no direction cannot be normalised nor give a cosine, so it is
 * rejected. "Zero" is a tolerance, not an exact test:
 *  - a raw vector is zero when its norm is at most 1e-12 * sqrt(dim), the norm of a vector
 *    whose every component is 1e-12: no real embedding is that small, and normalising such a
 *    row would blow rounding noise up by a factor of 1e12;
 *  - a centred vector `e - mean` is zero also when its norm is at most 1e-6 times the larger of
 *    |e| and |mean|. The mean is stored as float32, so each of its components carries a
 *    rounding error of up to 2^-24 (6e-8) of itself; in a residual under 1e-6 of the vectors
 *    it came from, that error is 6% or more of the length, and the direction is unreliable.
 */
import type { Catalogue } from './loaders.js';
import { CatalogueError } from './errors.js';
import type { CatalogueLocation } from './errors.js';
import { axpy, norm, scale } from '../features/vector.js';
import { decodeFloat32LE } from '../encoding/float32.js';

/** Absolute floor: a vector whose norm is at most this times sqrt(dim) is zero. */
export const ZERO_NORM_PER_COMPONENT = 1e-12;

/** Relative floor after centring: |e - mean| at most this times max(|e|, |mean|) is zero. */
export const CENTRED_ZERO_TOLERANCE = 1e-6;

/** The column means of a catalogue, accumulated in float64 and returned as float32. */
export function catalogueMean(c: Catalogue): Float32Array {
  checkShape(c);
  if (c.ids.length === 0) throw new CatalogueError('ITEMS_FORMAT', 'catalogue is empty: no mean');

  const sums = new Float64Array(c.dim);
  for (let offset = 0; offset < c.vectors.length; offset += c.dim) {
    for (let j = 0; j < c.dim; j++) sums[j]! += c.vectors[offset + j]!;
  }

  const mean = new Float32Array(c.dim);
  for (let j = 0; j < c.dim; j++) mean[j] = sums[j]! / c.ids.length;
  return mean;
}

/** What to do to each embedding; `mean` null means no centring. */
export interface EmbeddingTransform {
  mean: Float32Array | null;
  normalize: boolean;
}

/**
 * Returns a new array: `e` minus `mean` (when given), then scaled to unit L2 norm (when asked).
 * `e` is left untouched. Throws CatalogueError ITEMS_DIMENSION when the mean has another length,
 * ITEMS_NON_FINITE when `e` holds NaN or infinity, and ITEMS_ZERO_VECTOR when the result has no
 * direction (for instance an item equal to the mean); `id` names the item in the message.
 */
export function transformEmbedding(
  e: Float32Array,
  options: EmbeddingTransform,
  id?: string,
): Float32Array {
  const out = new Float32Array(e.length);
  const meanNorm = options.mean === null ? 0 : norm(options.mean);
  transformInto(e, out, options, meanNorm, id === undefined ? {} : { id });
  return out;
}

/**
 * Centres (with the catalogue's own mean) and/or normalises every row into a new catalogue; the
 * input is not modified. Returns the mean used, or null without centring, so the same transform
 * can be applied to items that arrive later. Throws like `transformEmbedding`, naming the row.
 */
export function transformCatalogue(
  c: Catalogue,
  options: { center: boolean; normalize: boolean },
): { catalogue: Catalogue; mean: Float32Array | null } {
  checkShape(c);
  const mean = options.center ? catalogueMean(c) : null;
  const meanNorm = mean === null ? 0 : norm(mean);
  const transform = { mean, normalize: options.normalize };

  const vectors = new Float32Array(c.vectors.length);
  for (let row = 0; row < c.ids.length; row++) {
    const start = row * c.dim;
    const source = c.vectors.subarray(start, start + c.dim);
    const target = vectors.subarray(start, start + c.dim);
    transformInto(source, target, transform, meanNorm, { row, id: c.ids[row]! });
  }

  return { catalogue: { dim: c.dim, ids: [...c.ids], vectors }, mean };
}

/**
 * Decodes the value of an `item-embeddings` message: either raw little-endian float32 bytes or
 * a JSON array of numbers (UTF-8). It is JSON when its first and last non-blank bytes are
 * `[`/`{` and `]`/`}`; raw float32 bytes practically never are, since a last byte of `]` or `}`
 * is the high byte of a float of magnitude above 1e17. Checks the length against `dim` when
 * given, then finiteness and a non-zero norm. `id` (the message key) names the item in errors.
 */
export function parseEmbeddingValue(bytes: Buffer, dim: number | null, id?: string): Float32Array {
  const location: CatalogueLocation = id === undefined ? {} : { id };
  if (bytes.length === 0) throw new CatalogueError('ITEMS_FORMAT', 'value is empty', location);

  const vector = looksLikeJson(bytes) ? parseJsonValue(bytes, location) : parseRaw(bytes, location);
  if (dim !== null && vector.length !== dim) {
    const detail = `value has ${vector.length} components, expected ${dim}`;
    throw new CatalogueError('ITEMS_DIMENSION', detail, location);
  }

  validateEmbedding(vector, location);
  return vector;
}

/**
 * Throws CatalogueError ITEMS_NON_FINITE when a component is NaN or infinite, naming the first
 * such component, and ITEMS_ZERO_VECTOR when the norm is below the absolute floor.
 */
export function validateEmbedding(v: Float32Array, location: CatalogueLocation): void {
  let sumOfSquares = 0;
  for (let i = 0; i < v.length; i++) sumOfSquares += v[i]! * v[i]!;

  // Squares of float32 values cannot overflow float64, so the sum is finite exactly when every
  // component is; only then is it worth finding which component is not.
  if (!Number.isFinite(sumOfSquares)) {
    const index = v.findIndex((x) => !Number.isFinite(x));
    const detail = `component ${index} is ${v[index]} (float32 holds magnitudes up to 3.4e38)`;
    throw new CatalogueError('ITEMS_NON_FINITE', detail, location);
  }
  const length = Math.sqrt(sumOfSquares);
  if (isZeroNorm(length, v.length, 0)) {
    const floor = `${ZERO_NORM_PER_COMPONENT} * sqrt(${v.length})`;
    const detail = `zero vector: norm ${length} is at most ${floor}`;
    throw new CatalogueError('ITEMS_ZERO_VECTOR', detail, location);
  }
}

/** The zero test described at the top of this file. `reference` is 0 for a raw vector. */
function isZeroNorm(length: number, dim: number, reference: number): boolean {
  const floor = Math.max(
    ZERO_NORM_PER_COMPONENT * Math.sqrt(dim),
    CENTRED_ZERO_TOLERANCE * reference,
  );
  return length <= floor;
}

function transformInto(
  source: Float32Array,
  target: Float32Array,
  transform: EmbeddingTransform,
  meanNorm: number,
  location: CatalogueLocation,
): void {
  const { mean, normalize } = transform;
  if (mean !== null && mean.length !== source.length) {
    const detail = `embedding has ${source.length} components but the mean has ${mean.length}`;
    throw new CatalogueError('ITEMS_DIMENSION', detail, location);
  }

  target.set(source);
  if (mean !== null) axpy(-1, mean, target);
  const length = norm(target);
  if (!Number.isFinite(length)) validateEmbedding(source, location);

  const reference = mean === null ? 0 : Math.max(norm(source), meanNorm);
  if (isZeroNorm(length, source.length, reference)) {
    const what = mean === null ? 'embedding' : 'embedding minus the mean';
    const detail = `${what} is a zero vector (norm ${length}), it has no direction`;
    throw new CatalogueError('ITEMS_ZERO_VECTOR', detail, location);
  }

  if (normalize) scale(1 / length, target);
}

function checkShape(c: Catalogue): void {
  if (c.vectors.length !== c.ids.length * c.dim) {
    const { dim, ids, vectors } = c;
    const detail = `catalogue has ${vectors.length} values for ${ids.length} ids of dim ${dim}`;
    throw new CatalogueError('ITEMS_FORMAT', detail);
  }
}

const BLANK = new Set([0x20, 0x09, 0x0a, 0x0d]);

function looksLikeJson(bytes: Uint8Array): boolean {
  let first = 0;
  let last = bytes.length - 1;
  while (first < last && BLANK.has(bytes[first]!)) first++;
  while (last > first && BLANK.has(bytes[last]!)) last--;

  const open = bytes[first];
  const close = bytes[last];
  return (open === 0x5b && close === 0x5d) || (open === 0x7b && close === 0x7d);
}

function isPrintableAscii(bytes: Uint8Array): boolean {
  return bytes.every((b) => (b >= 0x20 && b < 0x7f) || BLANK.has(b));
}

function parseJsonValue(bytes: Buffer, location: CatalogueLocation): Float32Array {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    const detail = `value is neither valid JSON nor raw float32: ${(err as Error).message}`;
    throw new CatalogueError('ITEMS_FORMAT', detail, location, { cause: err });
  }

  if (!Array.isArray(parsed) || parsed.length === 0) {
    throw new CatalogueError('ITEMS_FORMAT', 'value must be a non-empty JSON array', location);
  }
  return toFloat32(parsed, location, 'value');
}

function parseRaw(bytes: Buffer, location: CatalogueLocation): Float32Array {
  // JSON cut short (by a producer's size limit, say) would otherwise pass as raw bytes when its
  // length is a multiple of 4. Raw float32 is printable ASCII throughout only by chance: each
  // of the 3 mantissa bytes of a float is printable with probability 95/256, so the odds are
  // below 1e-5 at dim 4 and shrink 20-fold with every further dimension.
  if (isPrintableAscii(bytes) && /^\s*[[{]/.test(bytes.toString('latin1', 0, 16))) {
    const detail = 'value starts like JSON but does not end like it: truncated JSON?';
    throw new CatalogueError('ITEMS_FORMAT', detail, location);
  }
  if (bytes.length % 4 !== 0) {
    const detail =
      `value has ${bytes.length} bytes: not a JSON array, ` +
      'and not raw float32 (a multiple of 4 bytes)';
    throw new CatalogueError('ITEMS_FORMAT', detail, location);
  }
  return decodeFloat32LE(bytes);
}

/**
 * Converts a parsed JSON array to float32, or throws ITEMS_FORMAT naming the first element that
 * is not a number. Shared with the JSONL loader; `what` names the array in the message.
 */
export function toFloat32(
  values: readonly unknown[],
  location: CatalogueLocation,
  what: string,
  target?: Float32Array,
): Float32Array {
  const out = target ?? new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const x = values[i];
    if (typeof x !== 'number') {
      const detail = `${what} component ${i} is ${JSON.stringify(x) ?? typeof x}, not a number`;
      throw new CatalogueError('ITEMS_FORMAT', detail, location);
    }
    out[i] = x;
  }
  return out;
}
