/**
 * The item catalogue as the offline tools hold it: loaded and transformed exactly as
 * `affinity items load` does (same loader, same `transformCatalogue`), so an embedding here is
 * bit for bit the one the workers read from Redis, and the Gramian is summed in the same row
 * order as `ItemStore.replaceAll`, so it is bit for bit the one they solve against. Method 2 is
 * solved with the serving `DualSolver` built on that Gramian.
 */
import { DualSolver } from '../features/dual-solver.js';
import type { Gramian } from '../features/gramian.js';
import { computeGramian } from '../features/gramian.js';
import type { CatalogueFormat } from '../items/loaders.js';
import { loadCatalogue } from '../items/loaders.js';
import { transformCatalogue } from '../items/transform.js';

export interface CatalogueOptions extends CatalogueSource {
  /** Subtract the catalogue mean (`--center`). */
  readonly center: boolean;
  /** Scale to unit length (default; `--no-normalize` turns it off). */
  readonly normalize: boolean;
}

export class OfflineCatalogue {
  private readonly byId = new Map<string, Float32Array>();
  private gramianCache: Gramian | null = null;
  private solverCache: DualSolver | null = null;

  constructor(
    readonly dim: number,
    readonly ids: readonly string[],
    /** Row-major, transformed. */
    readonly vectors: Float32Array,
    readonly transform: { readonly center: boolean; readonly normalize: boolean },
  ) {
    ids.forEach((id, row) => this.byId.set(id, vectors.subarray(row * dim, (row + 1) * dim)));
  }

  get size(): number {
    return this.ids.length;
  }

  /** The stored embedding of `item`, or undefined when the catalogue lacks it. */
  embedding = (item: string): Float32Array | undefined => this.byId.get(item);

  has(item: string): boolean {
    return this.byId.has(item);
  }

  /** G = sum_i e_i e_i^T over the transformed rows, computed on first use. */
  gramian(): Gramian {
    this.gramianCache ??= computeGramian(this.rows(), this.dim);
    return this.gramianCache;
  }

  /** Method 2's serving solver for this catalogue (one eigendecomposition of G, on first use). */
  dualSolver(): DualSolver {
    this.solverCache ??= DualSolver.create(this.gramian());
    return this.solverCache;
  }

  private *rows(): Generator<Float32Array> {
    for (let row = 0; row < this.ids.length; row++) {
      yield this.vectors.subarray(row * this.dim, (row + 1) * this.dim);
    }
  }
}

/** Where and how to read a catalogue's files. */
export interface CatalogueSource {
  /** Ids file of a `.npy` catalogue. */
  readonly ids?: string;
  readonly format?: CatalogueFormat;
}

/** Loads, checks and transforms a catalogue; throws CatalogueError as `loadCatalogue` does. */
export async function loadOfflineCatalogue(
  path: string,
  options: CatalogueOptions,
): Promise<OfflineCatalogue> {
  const [catalogue] = await loadCatalogueVariants(path, options, [options]);
  return catalogue!;
}

/** One read of the files, then one catalogue per transform (raw and centred, for instance). */
export async function loadCatalogueVariants(
  path: string,
  source: CatalogueSource,
  transforms: readonly { readonly center: boolean; readonly normalize: boolean }[],
): Promise<OfflineCatalogue[]> {
  const raw = await loadCatalogue(path, {
    ...(source.ids === undefined ? {} : { ids: source.ids }),
    ...(source.format === undefined ? {} : { format: source.format }),
  });
  return transforms.map(({ center, normalize }) => {
    const { catalogue } = transformCatalogue(raw, { center, normalize });
    return new OfflineCatalogue(catalogue.dim, catalogue.ids, catalogue.vectors, {
      center,
      normalize,
    });
  });
}
