/**
 * Method 3 throughput on this machine, one thread (so "per core"):
 *
 *  - encodings per second at N = 100 events, D = 64, H = 4, for dIn = 100 and 384, through
 *    `LoadedModel.encode`, the neural worker's own call: stored history entries (item id,
 *    time, type name) in, type lookups, embedding lookups in a Map, the per-item projection
 *    cache (warm, as in a running worker) and the arrays the kernel reads built per call;
 *  - for reference, the kernel alone (`encodeHistory` on pre-built events with cached
 *    projections) and the kernel computing every projection P e + b_p afresh (a cold cache);
 *  - training examples per second: full softmax over a 9,741-item catalogue (the size of
 *    ml-latest-small), dIn = 100, batch 256, on a synthetic log.
 *
 * Figures only, no assertions. `npm run bench:neural -- --json` prints one JSON document.
 */
import type { InteractionEvent } from '../src/events/types.js';
import { parseSignals } from '../src/events/types.js';
import type { TimedEvent } from '../src/features/neural-encode.js';
import { LoadedModel } from '../src/features/neural-encode.js';
import type { HistoryEvent, NeuralConfig, NeuralWeights } from '../src/neural/model.js';
import {
  createConfig,
  createRandom,
  encodeHistory,
  initWeights,
  projectTokenInput,
} from '../src/neural/model.js';
import { trainModel } from '../src/neural/train.js';

const TARGET_ENCODINGS_PER_SECOND = 5_000;
const HISTORY_LENGTH = 100;
const MODEL_DIM = 64;
const HEADS = 4;
const TYPES = ['click', 'like', 'purchase', 'dislike', 'skip'];
const CATALOGUE_ITEMS = 2_000;
const HISTORIES = 256;
const DAY_MS = 86_400_000;

/** What one figure times: the serving call, or the kernel with or without cached projections. */
type EncodePath = 'serving' | 'kernel-cached' | 'kernel-computed';

interface EncodeFigure {
  inputDim: number;
  path: EncodePath;
  encodingsPerSecond: number;
  microsecondsPerEncoding: number;
}

function randomUnitVectors(count: number, dim: number, seed: number): Float32Array[] {
  const random = createRandom(seed);
  return Array.from({ length: count }, () => {
    const v = Float32Array.from({ length: dim }, () => random.normal());
    const length = Math.hypot(...v);
    return v.map((x) => x / length);
  });
}

/** Runs `work` repeatedly for about `seconds` after a warm-up; returns calls per second. */
function rate(work: (i: number) => void, seconds: number): number {
  const warmUpEnd = performance.now() + 300;
  let i = 0;
  while (performance.now() < warmUpEnd) work(i++);

  const start = performance.now();
  let calls = 0;
  while (performance.now() - start < seconds * 1000) {
    for (let k = 0; k < 16; k++) work(calls++);
  }
  return calls / ((performance.now() - start) / 1000);
}

/** A model, its catalogue and HISTORIES random histories of N stored events (ascending). */
function encodeSetup(inputDim: number) {
  const config = createConfig({
    inputDim,
    types: TYPES,
    modelDim: MODEL_DIM,
    heads: HEADS,
    historyLength: HISTORY_LENGTH,
  });
  const weights = initWeights(config, 1);
  const vectors = randomUnitVectors(CATALOGUE_ITEMS, inputDim, 2);
  const embeddings = new Map(vectors.map((vector, k) => [`i${k}`, vector]));
  const random = createRandom(3);
  const histories: TimedEvent[][] = Array.from({ length: HISTORIES }, () => {
    let ts = 1_700_000_000_000;
    return Array.from({ length: HISTORY_LENGTH }, () => ({
      item: `i${random.int(CATALOGUE_ITEMS)}`,
      ts: (ts += random.int(DAY_MS)),
      type: TYPES[random.int(TYPES.length)]!,
    }));
  });
  return { config, weights, embeddings, histories };
}

function benchEncode(inputDim: number, path: EncodePath, seconds: number): EncodeFigure {
  const { config, weights, embeddings, histories } = encodeSetup(inputDim);
  const encode = encoder(path, config, weights, embeddings, histories);
  let sink = 0;
  const perSecond = rate((i) => {
    sink += encode(i % HISTORIES)[0]!;
  }, seconds);
  if (Number.isNaN(sink)) throw new Error('encoding produced NaN');
  return {
    inputDim,
    path,
    encodingsPerSecond: perSecond,
    microsecondsPerEncoding: 1e6 / perSecond,
  };
}

/** The call each path times, for history number h. */
function encoder(
  path: EncodePath,
  config: NeuralConfig,
  weights: NeuralWeights,
  embeddings: Map<string, Float32Array>,
  histories: TimedEvent[][],
): (h: number) => Float32Array {
  if (path === 'serving') {
    // As the neural worker calls it: a Map lookup per event, projections cached per item.
    const model = new LoadedModel(config, weights);
    return (h) => model.encode(histories[h]!, (item) => embeddings.get(item));
  }
  const projections = new Map<string, Float32Array>();
  for (const [item, embedding] of embeddings)
    projections.set(item, projectTokenInput(weights, embedding));
  const prepared: HistoryEvent[][] = histories.map((history) => {
    const newestMs = history[history.length - 1]!.ts;
    return history.map((event) => {
      const common = { typeIndex: TYPES.indexOf(event.type), ageMs: newestMs - event.ts };
      return path === 'kernel-cached'
        ? { ...common, projection: projections.get(event.item)! }
        : { ...common, embedding: embeddings.get(event.item)! };
    });
  });
  return (h) => encodeHistory(weights, config, prepared[h]!);
}

/** A synthetic log: users drift between a few of 20 item clusters; 1 in 5 events a dislike. */
function syntheticLog(
  users: number,
  eventsPerUser: number,
  items: number,
  seed: number,
): InteractionEvent[] {
  const random = createRandom(seed);
  const events: InteractionEvent[] = [];
  for (let u = 0; u < users; u++) {
    const cluster = random.int(20);
    let ts = 1_500_000_000_000 + random.int(1_000) * DAY_MS;
    for (let e = 0; e < eventsPerUser; e++) {
      ts += random.int(3 * DAY_MS);
      const inCluster = random.next() < 0.7;
      const item = inCluster
        ? cluster + 20 * random.int(Math.floor(items / 20))
        : random.int(items);
      events.push({
        user: `u${u}`,
        item: `i${item}`,
        ts,
        type: random.next() < 0.2 ? 'dislike' : 'like',
      });
    }
  }
  return events.sort((a, b) => a.ts - b.ts);
}

async function benchTraining(): Promise<{
  examplesPerSecond: number;
  examples: number;
  catalogueItems: number;
  inputDim: number;
  batchSize: number;
}> {
  const items = 9_741;
  const inputDim = 100;
  const vectors = randomUnitVectors(items, inputDim, 4);
  const catalogue = {
    dim: inputDim,
    ids: vectors.map((_, k) => `i${k}`),
    vectors: Float32Array.from(vectors.flatMap((v) => [...v])),
  };
  const result = await trainModel({
    events: syntheticLog(300, 120, items, 5),
    catalogue,
    signals: parseSignals('like:+1,dislike:-1'),
    maxEpochs: 1,
    maxTrainingExamples: 4_096,
    maxValidationExamples: 256,
    seed: 1,
  });
  const epoch = result.progress[1]!;
  return {
    examplesPerSecond: epoch.examplesPerSecond!,
    examples: result.config.training!.trainExamples,
    catalogueItems: items,
    inputDim,
    batchSize: result.config.training!.batchSize,
  };
}

const PATH_LABELS: Record<EncodePath, string> = {
  serving: 'LoadedModel.encode (serving)',
  'kernel-cached': 'kernel, cached projections',
  'kernel-computed': 'kernel, projections computed',
};

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const encoding: EncodeFigure[] = [];
  for (const inputDim of [100, 384]) {
    encoding.push(benchEncode(inputDim, 'serving', 2));
    encoding.push(benchEncode(inputDim, 'kernel-cached', 2));
    encoding.push(benchEncode(inputDim, 'kernel-computed', 1));
  }
  const training = await benchTraining();
  const atTarget = encoding.find((f) => f.inputDim === 384 && f.path === 'serving')!;
  const target = {
    encodingsPerSecondPerCore: TARGET_ENCODINGS_PER_SECOND,
    at: { historyLength: HISTORY_LENGTH, inputDim: 384, modelDim: MODEL_DIM, path: 'serving' },
    measured: atTarget.encodingsPerSecond,
    met: atTarget.encodingsPerSecond >= TARGET_ENCODINGS_PER_SECOND,
  };

  if (json) {
    const settings = {
      historyLength: HISTORY_LENGTH,
      modelDim: MODEL_DIM,
      heads: HEADS,
      catalogueItems: CATALOGUE_ITEMS,
      threads: 1,
      node: process.version,
    };
    console.log(JSON.stringify({ settings, encoding, training, target }, null, 2));
    return;
  }

  console.log(
    `method 3 (history attention encoder), one thread, N = ${HISTORY_LENGTH}, D = ${MODEL_DIM}, ` +
      `H = ${HEADS}, Node ${process.version}`,
  );
  console.log('');
  console.log('dIn   path                            encodings/s   µs/encoding');
  for (const f of encoding) {
    const perSecond = f.encodingsPerSecond.toFixed(0).padStart(11);
    const micros = f.microsecondsPerEncoding.toFixed(1).padStart(11);
    console.log(
      `${String(f.inputDim).padEnd(5)} ${PATH_LABELS[f.path].padEnd(30)} ${perSecond}   ${micros}`,
    );
  }
  console.log('');
  console.log(
    `training: ${training.examplesPerSecond.toFixed(0)} examples/s (full softmax over ` +
      `${training.catalogueItems} items, dIn ${training.inputDim}, batch ${training.batchSize}, ` +
      `${training.examples} examples)`,
  );
  console.log(
    `target: ≥ ${TARGET_ENCODINGS_PER_SECOND} encodings/s per core at N = ${HISTORY_LENGTH}, ` +
      `dIn = 384 (serving path): ${target.measured.toFixed(0)}, ${target.met ? 'met' : 'NOT met'}`,
  );
}

await main();
