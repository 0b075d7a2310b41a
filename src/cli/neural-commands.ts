/**
 * The method-3 subcommands: `train` (fit a model on a log), `neural-worker` (serve encodings)
 * and `neural reencode` (refresh every stored encoding with the current model).
 */
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/config.js';
import { AffinityError } from '../errors.js';
import { loadCatalogue } from '../items/loaders.js';
import { transformCatalogue } from '../items/transform.js';
import { parseSignalMap, readEventsFile } from '../neural/events.js';
import { saveModel } from '../neural/files.js';
import { trainModel } from '../neural/train.js';
import { createLogger } from '../ops/logger.js';
import { createRegistry } from '../ops/metrics.js';
import { NeuralMetrics, NeuralWorker } from '../workers/neural-worker.js';
import { extraCommands } from './extra-commands.js';
import { commandLogger, printResult } from './output.js';
import { serve } from './serve.js';

const TRAIN_USAGE = `  train --events FILE --items PATH --out DIR [--signal-map SPEC|FILE] [--timestamps s|ms]
        [--center] [--no-normalize] [--seed N] [--epochs N] [--history N] [--dim D] [--heads H]
                                  train the neural history encoder on a log`;

extraCommands.push(
  {
    name: 'train',
    usage: TRAIN_USAGE,
    run: runTrain,
  },
  {
    name: 'neural-worker',
    usage:
      '  neural-worker                   serve neural encodings (needs AFFINITY_NEURAL_MODEL_DIR)',
    longRunning: true,
    run: runNeuralWorker,
  },
  {
    name: 'neural',
    usage: '  neural reencode                 re-encode every user with the current model',
    run: runNeural,
  },
);

async function runTrain(args: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      events: { type: 'string' },
      items: { type: 'string' },
      out: { type: 'string' },
      'signal-map': { type: 'string' },
      timestamps: { type: 'string', default: 's' },
      center: { type: 'boolean', default: false },
      'no-normalize': { type: 'boolean', default: false },
      seed: { type: 'string', default: '1' },
      epochs: { type: 'string' },
      history: { type: 'string' },
      dim: { type: 'string' },
      heads: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    printResult(`usage: affinity ${TRAIN_USAGE.trimStart()}`);
    return 0;
  }
  if (!values.events || !values.items || !values.out) {
    throw new AffinityError('USAGE', 'train needs --events, --items and --out');
  }
  const config = loadConfig();
  const timestampUnit = values.timestamps === 'ms' ? 'ms' : 's';
  const signalMap = parseSignalMap(values['signal-map'] ?? 'like:>=4,dislike:<=2');
  const logger = commandLogger('train', config.logLevel);
  const read = await readEventsFile(values.events, { timestampUnit, signalMap });
  const { badRowCount, ignored } = read;
  logger.info({ events: read.events.length, badRowCount, ignored }, 'training events read');

  const normalize = !values['no-normalize'];
  const raw = await loadCatalogue(values.items);
  const { catalogue } = transformCatalogue(raw, { center: values.center, normalize });
  const result = await trainModel({
    events: read.events,
    catalogue,
    signals: config.signals,
    seed: Number(values.seed),
    inputTransform: { center: values.center, normalize },
    ...optionalNumber('maxEpochs', values.epochs),
    ...optionalNumber('historyLength', values.history),
    ...optionalNumber('modelDim', values.dim),
    ...optionalNumber('heads', values.heads),
    onProgress: (progress) => logger.info({ progress }, 'training progress'),
  });
  await saveModel(values.out, result.config, result.weights);
  const summary = {
    version: result.config.version,
    untrained: result.untrained,
    trained: result.config.validation,
  };
  printResult(JSON.stringify(summary));
  return 0;
}

function optionalNumber(name: string, text: string | undefined): Record<string, number> {
  return text === undefined ? {} : { [name]: Number(text) };
}

async function runNeuralWorker(args: readonly string[]): Promise<number> {
  if (args.length > 0) throw new AffinityError('USAGE', 'neural-worker takes no arguments');
  const config = loadConfig();
  const logger = createLogger(config.logLevel, { role: 'neural-worker' });
  const registry = createRegistry(true);
  const worker = new NeuralWorker(config, logger, new NeuralMetrics(registry));
  return serve(worker, { host: config.httpHost, port: config.httpPort, registry }, logger);
}

async function runNeural(args: readonly string[]): Promise<number> {
  if (args[0] !== 'reencode')
    throw new AffinityError('USAGE', 'neural: the only subcommand is "reencode"');
  const config = loadConfig();
  const logger = createLogger(config.logLevel, { role: 'neural-reencode' });
  const worker = new NeuralWorker(config, logger, new NeuralMetrics(createRegistry(false)));
  try {
    const summary = await worker.reencodeAll();
    printResult(JSON.stringify({ ...summary, model: worker.models.current?.version ?? null }));
  } finally {
    await worker.close();
  }
  return 0;
}
