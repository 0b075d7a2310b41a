/**
 * A model on disk is a directory with two files: `config.json` (the NeuralConfig, pretty JSON)
 * and `model.safetensors` (every tensor of TENSOR_NAMES, float32, with `format`, `architecture`
 * and `version` in the metadata). Both are written to a temporary name and renamed into place,
 * weights first, so a reader never sees half a file; `loadModel` checks every tensor name and
 * shape against the config and refuses a mismatch with a message naming the tensor.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NeuralConfig, NeuralWeights, Tensor, TensorName } from './model.js';
import { TENSOR_NAMES, tensorShapes, validateConfig } from './model.js';
import { SafetensorsError, encodeSafetensors, readSafetensors } from './safetensors.js';

export const CONFIG_FILE = 'config.json';
export const WEIGHTS_FILE = 'model.safetensors';

export type ModelFileErrorCode =
  /** config.json is missing fields, has wrong types or breaks a cross-field rule. */
  | 'MODEL_CONFIG_INVALID'
  /** model.safetensors is not a readable safetensors file of F32 tensors. */
  | 'MODEL_FORMAT'
  /** A tensor the config requires is absent, or one it does not know is present. */
  | 'MODEL_TENSOR_MISSING'
  | 'MODEL_TENSOR_UNEXPECTED'
  /** A tensor's shape differs from what the config implies. */
  | 'MODEL_TENSOR_SHAPE'
  /** The weights' metadata names no version, or another version than config.json. */
  | 'MODEL_VERSION_MISMATCH'
  /** The file system refused; `cause` has the details. */
  | 'MODEL_IO';

export class ModelFileError extends Error {
  readonly code: ModelFileErrorCode;
  readonly file: string;

  constructor(
    code: ModelFileErrorCode,
    file: string,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(
      `${file}: ${message}`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'ModelFileError';
    this.code = code;
    this.file = file;
  }
}

/** Writes config.json and model.safetensors into `dir` (created if missing). */
export async function saveModel(
  dir: string,
  config: NeuralConfig,
  weights: NeuralWeights,
): Promise<void> {
  validateConfig(config);
  checkTensors(
    config,
    new Map(TENSOR_NAMES.map((name) => [name, weights[name]])),
    join(dir, WEIGHTS_FILE),
  );

  await mkdir(dir, { recursive: true });
  const tensors = new Map(TENSOR_NAMES.map((name) => [name, weights[name]]));
  const metadata = { format: 'pt', architecture: config.architecture, version: config.version };
  await writeAtomically(join(dir, WEIGHTS_FILE), encodeSafetensors(tensors, metadata));
  await writeAtomically(join(dir, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
}

async function writeAtomically(path: string, content: Buffer | string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, content);
  await rename(temporary, path);
}

/** Reads and checks a model directory; throws ModelFileError with the file and the rule broken. */
export async function loadModel(
  dir: string,
): Promise<{ config: NeuralConfig; weights: NeuralWeights }> {
  const configPath = join(dir, CONFIG_FILE);
  const weightsPath = join(dir, WEIGHTS_FILE);
  const config = parseConfig(await readText(configPath), configPath);

  let content;
  try {
    content = await readSafetensors(weightsPath);
  } catch (cause) {
    if (cause instanceof SafetensorsError) {
      throw new ModelFileError('MODEL_FORMAT', weightsPath, cause.detail, { cause });
    }
    const reason = `cannot read (${(cause as Error).message})`;
    throw new ModelFileError('MODEL_IO', weightsPath, reason, { cause });
  }

  checkVersion(content.metadata['version'], config.version, weightsPath);
  checkTensors(config, content.tensors, weightsPath);

  const weights = {} as Record<TensorName, Tensor>;
  for (const name of TENSOR_NAMES) weights[name] = content.tensors.get(name)!;
  return { config, weights };
}

/**
 * The weights must name the version of config.json. The check is what makes a folder caught
 * mid-copy (new weights, old config or the reverse) refusable, so weights without a version are
 * refused too: nothing would tell them apart from another model's.
 */
function checkVersion(weightsVersion: string | undefined, configVersion: string, file: string) {
  if (weightsVersion === undefined) {
    throw new ModelFileError(
      'MODEL_VERSION_MISMATCH',
      file,
      `weights carry no "version" in their metadata; ${CONFIG_FILE} says "${configVersion}"`,
    );
  }
  if (weightsVersion !== configVersion) {
    throw new ModelFileError(
      'MODEL_VERSION_MISMATCH',
      file,
      `weights are version "${weightsVersion}" but ${CONFIG_FILE} says "${configVersion}"`,
    );
  }
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    throw new ModelFileError('MODEL_IO', path, `cannot read (${(cause as Error).message})`, {
      cause,
    });
  }
}

/** Every tensor present with the shape the config implies, and nothing else. */
function checkTensors(
  config: NeuralConfig,
  tensors: ReadonlyMap<string, Tensor | undefined>,
  file: string,
): void {
  const shapes = tensorShapes(config);
  for (const name of TENSOR_NAMES) {
    const tensor = tensors.get(name);
    if (tensor === undefined)
      throw new ModelFileError('MODEL_TENSOR_MISSING', file, `tensor ${name} is missing`);
    const expected = shapes[name];
    const sameShape =
      tensor.shape.length === expected.length &&
      tensor.shape.every((extent, i) => extent === expected[i]);
    if (!sameShape || tensor.data.length !== expected.reduce((a, b) => a * b, 1)) {
      throw new ModelFileError(
        'MODEL_TENSOR_SHAPE',
        file,
        `tensor ${name} has shape [${tensor.shape.join(', ')}], the config implies [${expected.join(', ')}] ` +
          `(inputDim ${config.inputDim}, modelDim ${config.modelDim}, heads ${config.heads}, ` +
          `${config.types.length} types, ${config.ageBuckets} age buckets)`,
      );
    }
  }

  const known = new Set<string>(TENSOR_NAMES);
  const unexpected = [...tensors.keys()].filter((name) => !known.has(name));
  if (unexpected.length > 0) {
    throw new ModelFileError(
      'MODEL_TENSOR_UNEXPECTED',
      file,
      `tensors not in this architecture: ${unexpected.join(', ')}`,
    );
  }
}

/** Parses config.json and checks every field this code reads. */
function parseConfig(text: string, file: string): NeuralConfig {
  const fail = (message: string, cause?: unknown): ModelFileError =>
    new ModelFileError('MODEL_CONFIG_INVALID', file, message, cause === undefined ? {} : { cause });

  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw fail('not valid JSON', cause);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw fail('not a JSON object');
  const config = raw as NeuralConfig;

  try {
    validateConfig(config);
  } catch (cause) {
    throw fail((cause as Error).message, cause);
  }
  const transform = config.inputTransform as unknown;
  if (
    typeof transform !== 'object' ||
    transform === null ||
    typeof (transform as Record<string, unknown>)['center'] !== 'boolean' ||
    typeof (transform as Record<string, unknown>)['normalize'] !== 'boolean'
  ) {
    throw fail('inputTransform must be {"center": boolean, "normalize": boolean}');
  }
  for (const field of ['training', 'validation'] as const) {
    const value = config[field] as unknown;
    if (value !== null && (typeof value !== 'object' || Array.isArray(value)))
      throw fail(`${field} must be an object or null`);
  }
  return Object.freeze(config);
}
