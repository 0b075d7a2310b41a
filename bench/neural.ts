/**
 * Method 3 throughput on this machine, one thread (so "per core"):
 *
 *  - encodings per second at N = 100 events, D = 64, H = 4, for dIn = 100 and 384, with the
 *    per-item projections P e + b_p cached as a server holds them (the cost then no longer
 *    depends on dIn), and for reference without the cache;
 *  - training examples per second: full softmax over a 9,741-item catalogue (the size of
 *    ml-latest-small), dIn = 100, batch 256, on a synthetic log.
 *
 * Figures only, no assertions. `npm run bench:neural -- --json` prints one JSON document.
 */
import type { InteractionEvent } from '../src/events/types.js';
import { parseSignals } from '../src/events/types.js';
import type { HistoryEvent } from '../src/neural/model.js';
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

interface EncodeFigure {
  inputDim: number;
  cachedProjections: boolean;
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

function benchEncode(inputDim: number, cached: boolean, seconds: number): EncodeFigure {
  const config = createConfig({
    inputDim,
    types: TYPES,
    modelDim: MODEL_DIM,
    heads: HEADS,
    historyLength: HISTORY_LENGTH,
  });
  const weights = initWeights(config, 1);
  const embeddings = randomUnitVectors(CATALOGUE_ITEMS, inputDim, 2);
  const projections = embeddings.map((e) => projectTokenInput(weights, e));
  const random = createRandom(3);

  const histories: HistoryEvent[][] = Array.from({ length: HISTORIES }, () =>
    Array.from({ length: HISTORY_LENGTH }, (_, j) => {
      const item = random.int(CATALOGUE_ITEMS);
      const common = {
        typeIndex: random.int(TYPES.length),
        ageMs: (HISTORY_LENGTH - 1 - j) * random.next() * DAY_MS,
      };
      return cached
        ? { ...common, projection: projections[item]! }
        : { ...common, embedding: embeddings[item]! };
    }),
  );

  let sink = 0;
  const perSecond = rate((i) => {
    sink += encodeHistory(weights, config, histories[i % HISTORIES]!)[0]!;
  }, seconds);
  if (Number.isNaN(sink)) throw new Error('encoding produced NaN');
  return {
    inputDim,
    cachedProjections: cached,
    encodingsPerSecond: perSecond,
    microsecondsPerEncoding: 1e6 / perSecond,
  };
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

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const encoding = [
    benchEncode(100, true, 2),
    benchEncode(384, true, 2),
    benchEncode(100, false, 1),
    benchEncode(384, false, 1),
  ];
  const training = await benchTraining();
  const atTarget = encoding.find((f) => f.inputDim === 384 && f.cachedProjections)!;
  const target = {
    encodingsPerSecondPerCore: TARGET_ENCODINGS_PER_SECOND,
    at: {
      historyLength: HISTORY_LENGTH,
      inputDim: 384,
      modelDim: MODEL_DIM,
      cachedProjections: true,
    },
    measured: atTarget.encodingsPerSecond,
    met: atTarget.encodingsPerSecond >= TARGET_ENCODINGS_PER_SECOND,
  };

  if (json) {
    const settings = {
      historyLength: HISTORY_LENGTH,
      modelDim: MODEL_DIM,
      heads: HEADS,
      threads: 1,
      node: process.version,
    };
    console.log(JSON.stringify({ settings, encoding, training, target }, null, 2));
    return;
  }

  console.log(
    `method 3 (history attention encoder), one thread, N = ${HISTORY_LENGTH}, D = ${MODEL_DIM}, H = ${HEADS}, Node ${process.version}`,
  );
  console.log('');
  console.log('dIn   item projections   encodings/s   µs/encoding');
  for (const f of encoding) {
    const label = f.cachedProjections ? 'cached' : 'computed';
    console.log(
      `${String(f.inputDim).padEnd(5)} ${label.padEnd(18)} ${f.encodingsPerSecond.toFixed(0).padStart(11)}   ${f.microsecondsPerEncoding.toFixed(1).padStart(11)}`,
    );
  }
  console.log('');
  console.log(
    `training: ${training.examplesPerSecond.toFixed(0)} examples/s (full softmax over ${training.catalogueItems} items, dIn ${training.inputDim}, batch ${training.batchSize}, ${training.examples} examples)`,
  );
  console.log(
    `target: ≥ ${TARGET_ENCODINGS_PER_SECOND} encodings/s per core at N = ${HISTORY_LENGTH}, dIn = 384 (cached projections): ` +
      `${target.measured.toFixed(0)}, ${target.met ? 'met' : 'NOT met'}`,
  );
}

await main();
