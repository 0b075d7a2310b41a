/**
 * Holds the neural model of AFFINITY_NEURAL_MODEL_DIR and picks up a new version without a
 * restart: `refresh` reads the folder's config.json and, when its version differs, loads the
 * model (the loader checks that the weights file carries the same version, so a folder caught
 * mid-copy is refused and retried at the next poll). The previous version stays loaded, so
 * encodings it made can still be scored until they are replaced.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LoadedModel } from '../features/neural-encode.js';
import { CONFIG_FILE, loadModel } from './files.js';
import type { Logger } from '../ops/logger.js';

export class ModelHolder {
  private currentModel: LoadedModel | null = null;
  private previousModel: LoadedModel | null = null;

  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
  ) {}

  get current(): LoadedModel | null {
    return this.currentModel;
  }

  byVersion(version: string | null): LoadedModel | null {
    if (version === null) return null;
    if (this.currentModel?.version === version) return this.currentModel;
    if (this.previousModel?.version === version) return this.previousModel;
    return null;
  }

  /** Loads the folder's model if its version changed; true when a new version is in use. */
  async refresh(): Promise<boolean> {
    const version = await this.folderVersion();
    if (version === null || version === this.currentModel?.version) return false;

    try {
      const { config, weights } = await loadModel(this.dir);
      this.previousModel = this.currentModel;
      this.currentModel = new LoadedModel(config, weights);
      const previous = this.previousModel?.version ?? null;
      this.logger.info({ version: config.version, previous }, 'neural model loaded');
      return true;
    } catch (err) {
      this.logger.warn(
        { err, dir: this.dir },
        'neural model not loadable yet; retrying at next poll',
      );
      return false;
    }
  }

  /** Items whose embedding changed: their cached projections are stale in every version. */
  invalidate(changed: string[] | null): void {
    for (const model of [this.currentModel, this.previousModel]) {
      if (!model) continue;
      if (changed === null) model.invalidateAll();
      else model.invalidate(changed);
    }
  }

  private async folderVersion(): Promise<string | null> {
    try {
      const config = JSON.parse(await readFile(join(this.dir, CONFIG_FILE), 'utf8')) as {
        version?: unknown;
      };
      return typeof config.version === 'string' ? config.version : null;
    } catch (err) {
      this.logger.warn({ err, dir: this.dir }, 'neural model folder unreadable');
      return null;
    }
  }
}
