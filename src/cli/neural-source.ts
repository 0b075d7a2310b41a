import type { Config } from '../config/config.js';
import type { NeuralSource } from '../reader/feature-reader.js';

/** Method 3's feature source for the reader; null until a model is configured. */
export async function neuralSourceFor(_config: Config): Promise<NeuralSource | null> {
  return null;
}
