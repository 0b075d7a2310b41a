/**
 * Method 3 for the offline tools: the model a `--model DIR` names, loaded with the serving
 * loader and wrapped in the serving `LoadedModel`, after checking that it fits the catalogue.
 * A model trained on centred embeddings scores raw ones as noise, so a transform mismatch is a
 * usage error rather than a warning.
 */
import { AffinityError } from '../errors.js';
import { LoadedModel } from '../features/neural-encode.js';
import { ModelFileError, loadModel } from '../neural/files.js';
import type { NeuralConfig, NeuralWeights } from '../neural/model.js';
import type { OfflineCatalogue } from './catalogue.js';

export async function loadOfflineModel(
  dir: string,
  catalogue: OfflineCatalogue,
): Promise<LoadedModel> {
  return modelForCatalogue(dir, await readOfflineModel(dir), catalogue);
}

/**
 * The model files in `dir`. A missing or broken model is the command line's fault here, so it
 * is a USAGE error (one line from the CLI, exit 2) rather than a ModelFileError with a stack.
 */
export async function readOfflineModel(
  dir: string,
): Promise<{ config: NeuralConfig; weights: NeuralWeights }> {
  try {
    return await loadModel(dir);
  } catch (err) {
    if (err instanceof ModelFileError)
      throw new AffinityError('USAGE', `model ${dir}: ${err.message}`, { cause: err });
    throw err;
  }
}

/** The serving wrapper of a model read from `dir`; throws USAGE when it does not fit. */
export function modelForCatalogue(
  dir: string,
  { config, weights }: { config: NeuralConfig; weights: NeuralWeights },
  catalogue: OfflineCatalogue,
): LoadedModel {
  if (config.inputDim !== catalogue.dim) {
    throw new AffinityError(
      'USAGE',
      `model ${dir} reads ${config.inputDim}-d embeddings, the catalogue has ${catalogue.dim}`,
    );
  }
  const expected = config.inputTransform;
  const actual = catalogue.transform;
  if (expected.center !== actual.center || expected.normalize !== actual.normalize) {
    const flags = [expected.center ? '--center' : '', expected.normalize ? '' : '--no-normalize'];
    const wanted =
      flags.filter((flag) => flag !== '').join(' ') || 'neither --center nor --no-normalize';
    throw new AffinityError(
      'USAGE',
      `model ${dir} was trained with center=${expected.center}, normalize=${expected.normalize}; ` +
        `load the catalogue the same way: ${wanted}`,
    );
  }
  return new LoadedModel(config, weights);
}
