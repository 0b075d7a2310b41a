/**
 * Holds the neural model of AFFINITY_NEURAL_MODEL_DIR and picks up a new version without a
 * restart: `refresh` reads the folder's config.json and, when its version differs, loads the
 * model (the loader checks that the weights file carries the same version, so a folder caught
 * mid-copy is refused and retried at the next poll). The previous version stays loaded, so
 * encodings it made can still be scored until they are replaced.
 *
 * A model is accepted only if it reads the catalogue's embeddings: the same dimension, and the
 * same centring and normalisation as in training (`inputTransform`). A wrong dimension would
 * make every encoding throw, a wrong transform would give wrong scores without a sound, so a
 * model that does not fit is refused with an error log and the one in use stays. Refreshes are
 * single-flight: callers that ask while one runs share its result.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AffinityError } from '../errors.js';
import type { AffinityErrorCode } from '../errors.js';
import { LoadedModel } from '../features/neural-encode.js';
import type { Logger } from '../ops/logger.js';
import { CONFIG_FILE, loadModel } from './files.js';
import type { NeuralConfig } from './model.js';

/** What of the catalogue meta a model must agree with. */
export interface CatalogueShape {
  readonly dim: number;
  readonly centered: boolean;
  readonly normalized: boolean;
}

/** Why a loadable model was refused; the `reason` label of the refusal metric. */
export type ModelRefusal = 'input_dim' | 'input_transform';

export interface ModelHolderOptions {
  /** Called once per refused (version, catalogue) pair, e.g. to count it. */
  readonly onRefused?: (reason: ModelRefusal) => void;
}

/** Why the model in use is not the folder's, or why there is none. */
interface Problem {
  readonly code: AffinityErrorCode;
  readonly message: string;
}

export class ModelHolder {
  private currentModel: LoadedModel | null = null;
  private previousModel: LoadedModel | null = null;
  private refreshing: Promise<boolean> | null = null;
  /** The version refused against a catalogue shape, so it is not reloaded at every poll. */
  private refusedKey: string | null = null;
  private lastProblem: Problem | null = null;

  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
    private readonly options: ModelHolderOptions = {},
  ) {}

  get current(): LoadedModel | null {
    return this.currentModel;
  }

  /** The model in use; throws AffinityError naming the folder and why there is none. */
  requireCurrent(): LoadedModel {
    if (this.currentModel) return this.currentModel;
    const problem = this.lastProblem ?? { code: 'CONFIG_INVALID', message: 'not loaded yet' };
    throw new AffinityError(
      problem.code,
      `no usable neural model in ${this.dir}: ${problem.message}`,
    );
  }

  byVersion(version: string | null): LoadedModel | null {
    if (version === null) return null;
    if (this.currentModel?.version === version) return this.currentModel;
    if (this.previousModel?.version === version) return this.previousModel;
    return null;
  }

  /**
   * Loads the folder's model if its version changed and it fits `catalogue` (null: no catalogue
   * yet, nothing to check against); true when a new version is in use.
   */
  refresh(catalogue: CatalogueShape | null): Promise<boolean> {
    this.refreshing ??= this.load(catalogue).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /** Items whose embedding changed: their cached projections are stale in every version. */
  invalidate(changed: string[] | null): void {
    for (const model of [this.currentModel, this.previousModel]) {
      if (!model) continue;
      if (changed === null) model.invalidateAll();
      else model.invalidate(changed);
    }
  }

  private async load(catalogue: CatalogueShape | null): Promise<boolean> {
    const version = await this.folderVersion();
    if (version === null) return false;
    if (version === this.currentModel?.version) {
      this.lastProblem = null;
      return false;
    }
    const refusedKey = `${version} ${shapeKey(catalogue)}`;
    if (refusedKey === this.refusedKey) return false;

    let loaded;
    try {
      loaded = await loadModel(this.dir);
    } catch (err) {
      this.lastProblem = { code: 'CONFIG_INVALID', message: (err as Error).message };
      this.logger.warn(
        { err, dir: this.dir },
        'neural model not loadable yet; retrying at next poll',
      );
      return false;
    }
    const mismatch = catalogue ? catalogueMismatch(loaded.config, catalogue) : null;
    if (mismatch) {
      this.refuse(refusedKey, loaded.config.version, mismatch);
      return false;
    }
    this.accept(new LoadedModel(loaded.config, loaded.weights));
    return true;
  }

  private refuse(key: string, version: string, mismatch: Mismatch): void {
    this.refusedKey = key;
    this.lastProblem = { code: 'CATALOGUE_MISMATCH', message: mismatch.message };
    const inUse = this.currentModel?.version ?? null;
    this.logger.error(
      { dir: this.dir, version, inUse, reason: mismatch.reason, detail: mismatch.message },
      'neural model does not fit the catalogue; refused, the model in use stays',
    );
    this.options.onRefused?.(mismatch.reason);
  }

  private accept(model: LoadedModel): void {
    this.previousModel = this.currentModel;
    this.currentModel = model;
    this.refusedKey = null;
    this.lastProblem = null;
    const previous = this.previousModel?.version ?? null;
    this.logger.info({ version: model.version, previous }, 'neural model loaded');
  }

  private async folderVersion(): Promise<string | null> {
    const path = join(this.dir, CONFIG_FILE);
    try {
      const config = JSON.parse(await readFile(path, 'utf8')) as { version?: unknown };
      if (typeof config.version === 'string') return config.version;
      this.lastProblem = { code: 'CONFIG_INVALID', message: `${path} has no "version" string` };
    } catch (err) {
      this.lastProblem = { code: 'CONFIG_INVALID', message: (err as Error).message };
      this.logger.warn({ err, dir: this.dir }, 'neural model folder unreadable');
    }
    return null;
  }
}

interface Mismatch {
  readonly reason: ModelRefusal;
  readonly message: string;
}

/** Why a model cannot read the catalogue's embeddings, or null when it can. */
export function catalogueMismatch(
  config: NeuralConfig,
  catalogue: CatalogueShape,
): Mismatch | null {
  if (config.inputDim !== catalogue.dim) {
    const message =
      `model ${config.version} has inputDim ${config.inputDim}, ` +
      `the catalogue's embeddings have dimension ${catalogue.dim}`;
    return { reason: 'input_dim', message };
  }
  const { center, normalize } = config.inputTransform;
  if (center !== catalogue.centered || normalize !== catalogue.normalized) {
    const message =
      `model ${config.version} was trained on embeddings with center=${center}, ` +
      `normalize=${normalize}; the catalogue's are centered=${catalogue.centered}, ` +
      `normalized=${catalogue.normalized}`;
    return { reason: 'input_transform', message };
  }
  return null;
}

function shapeKey(catalogue: CatalogueShape | null): string {
  if (!catalogue) return 'none';
  return `${catalogue.dim}/${catalogue.centered}/${catalogue.normalized}`;
}
