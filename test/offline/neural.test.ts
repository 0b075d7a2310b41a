/**
 * Method 3 in the offline tools. The backfill with a random (untrained) model gives `neural.*`
 * equal to the model's encoding of the neural history as defined here, independently of the
 * replay: the user's newest N events strictly before the request time, whatever the method-1
 * history cap. `evaluate --model` loads and checks the model before the first replay, refuses
 * one trained past the validation start (checkNoLeak), and evaluates one that is not;
 * `--train-model` trains one that stops at the validation start.
 *
 * Tolerance for `neural.*`: the replay and this file call the same `LoadedModel.encode` on the
 * same history, then take a float64 dot product of the same float32 vectors in the same order,
 * so the values are equal exactly (JSON keeps every bit of a double).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import { AffinityError } from '../../src/errors.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { LoadedModel } from '../../src/features/neural-encode.js';
import { cosine, dot } from '../../src/features/vector.js';
import { loadModel, saveModel } from '../../src/neural/files.js';
import type { InputTransform, NeuralConfig, TrainingSummary } from '../../src/neural/model.js';
import { createConfig, initWeights } from '../../src/neural/model.js';
import { runBackfill } from '../../src/offline/backfill.js';
import { checkNoLeak, runEvaluation } from '../../src/offline/evaluate.js';
import type { EvaluationReport } from '../../src/offline/report.js';
import { methodSettings } from '../../src/offline/settings.js';
import { randomCatalogue, randomEvents } from '../helpers/fixtures.js';
import { TASTE_DIM, tasteOptions, writeTasteLog } from '../helpers/taste-log.js';

const DAY_MS = 86_400_000;
const NOW_MS = Date.UTC(2026, 0, 1);
const DIM = 8;
const USERS = ['ann', 'ben', 'cat'];
/** The model reads 8 events; the method-1 history keeps 4, so the two windows differ. */
const HISTORY_LENGTH = 8;
const HISTORY_MAX_EVENTS = '4';
/** `skip` is left out, so events the model does not read still count towards the newest 8. */
const MODEL_TYPES = ['click', 'like', 'purchase', 'dislike'];

async function workspace(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-offline-neural-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A random model in `dir`, with a training summary whose cutoff is `cutoffMs` (or none). */
async function writeModel(
  dir: string,
  options: { dim: number; types: string[]; transform: InputTransform; cutoffMs: number | null },
): Promise<LoadedModel> {
  const base = createConfig({
    inputDim: options.dim,
    types: options.types,
    modelDim: 8,
    heads: 2,
    historyLength: HISTORY_LENGTH,
    inputTransform: options.transform,
    version: 'offline-test-1',
  });
  const config: NeuralConfig = { ...base, training: trainingSummary(options.cutoffMs) };
  const weights = initWeights(config, 11);
  await saveModel(dir, config, weights);
  return new LoadedModel(config, weights);
}

function trainingSummary(cutoffMs: number | null): TrainingSummary | null {
  if (cutoffMs === null) return null;
  return {
    seed: 1,
    objective: 'next-positive-item',
    loss: 'full-softmax',
    sampledNegatives: null,
    historyRule: 'strictly-earlier-timestamp',
    optimizer: 'adam',
    learningRate: 0.001,
    batchSize: 32,
    maxEpochs: 0,
    patience: 0,
    epochsRun: 0,
    bestEpoch: 0,
    trainExamples: 0,
    validationExamples: 0,
    trainFromTs: null,
    trainToTs: null,
    validationStartTs: cutoffMs,
    testCutoffTs: cutoffMs,
  };
}

/**
 * The encoder input by definition: the user's newest N events strictly before `atMs` that it
 * can read, of a type the model knows and with an item in the catalogue.
 */
function definedHistory(
  events: readonly InteractionEvent[],
  user: string,
  atMs: number,
  catalogue: ReadonlyMap<string, Float32Array>,
) {
  return events
    .filter((event) => event.user === user && event.ts < atMs)
    .filter((event) => MODEL_TYPES.includes(event.type) && catalogue.has(event.item))
    .map(({ item, ts, type }) => ({ item, ts, type }))
    .sort((a, b) => a.ts - b.ts || compareText(a.item, b.item) || compareText(a.type, b.type))
    .slice(-HISTORY_LENGTH);
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

test('backfill neural.* equal the model on the newest historyLength events before each request', async (t) => {
  const dir = await workspace(t);
  const items = randomCatalogue(30, DIM, 3);
  const requestTimes = [NOW_MS - 7 * DAY_MS, NOW_MS - 3 * DAY_MS, NOW_MS + 1];
  const events = [
    ...randomEvents(USERS, 30, 30, 5, NOW_MS, 10 * DAY_MS),
    { user: 'ann', item: 'i4', ts: requestTimes[1]!, type: 'like' }, // at a request: not in it
    { user: 'ben', item: 'not-in-catalogue', ts: NOW_MS - 4 * DAY_MS, type: 'like' },
  ];
  const candidates = ['i1', 'i2', 'not-in-catalogue'];
  const rows = [...USERS, 'zed'].flatMap((user) =>
    requestTimes.flatMap((ts) => candidates.map((item) => `${user},${item},${ts}`)),
  );
  const lines = [...items].map(([id, vector]) => JSON.stringify({ id, embedding: [...vector] }));
  await writeFile(join(dir, 'items.jsonl'), lines.join('\n'));
  await writeFile(join(dir, 'events.jsonl'), events.map((e) => JSON.stringify(e)).join('\n'));
  await writeFile(join(dir, 'requests.csv'), rows.join('\n'));
  const transform = { center: false, normalize: false };
  const model = await writeModel(join(dir, 'model'), {
    dim: DIM,
    types: MODEL_TYPES,
    transform,
    cutoffMs: null,
  });

  await runBackfill({
    events: { path: join(dir, 'events.jsonl'), timestampUnit: 'ms' },
    itemsPath: join(dir, 'items.jsonl'),
    catalogue: transform,
    requestsPath: join(dir, 'requests.csv'),
    outPath: join(dir, 'out.jsonl'),
    modelDir: join(dir, 'model'),
    settings: methodSettings(loadConfig({ AFFINITY_HISTORY_MAX_EVENTS: HISTORY_MAX_EVENTS })),
  });

  const output = (await readFile(join(dir, 'out.jsonl'), 'utf8')).trim().split('\n');
  assert.equal(output.length, rows.length);
  let scored = 0;
  for (const line of output) {
    const row = JSON.parse(line) as { user: string; item: string; ts: number; features: never };
    const features = row.features as Record<string, number | null>;
    const label = `${row.user} ${row.item} at ${row.ts}`;
    const history = definedHistory(events, row.user, row.ts, items);
    const embedding = items.get(row.item);
    if (history.length === 0 || !embedding) {
      assert.equal(features['neural.score'], null, label);
      assert.equal(features['neural.cos'], null, label);
      continue;
    }
    const encoding = model.encode(history, (item) => items.get(item));
    const itemVector = model.itemVector(row.item, embedding);
    assert.equal(features['neural.score'], dot(encoding, itemVector), `${label}: score`);
    assert.equal(features['neural.cos'], cosine(encoding, itemVector), `${label}: cos`);
    scored++;
  }
  assert.equal(scored, USERS.length * requestTimes.length * 2, 'rows with a neural score');
});

/** The taste log and a random model of it (centred input) whose training stopped at `cutoffMs`. */
async function tasteWithModel(dir: string, cutoffMs: number): Promise<string> {
  await writeTasteLog(dir);
  const modelDir = join(dir, 'model');
  await writeModel(modelDir, {
    dim: TASTE_DIM,
    types: ['like', 'dislike'],
    transform: { center: true, normalize: true },
    cutoffMs,
  });
  return modelDir;
}

async function readReport(dir: string): Promise<EvaluationReport> {
  return JSON.parse(await readFile(join(dir, 'out', 'report.json'), 'utf8')) as EvaluationReport;
}

/**
 * Where the taste log's validation starts at fractions 0.3 + 0.3: the timestamp at the 40%
 * quantile of its events (every rating is 5 or 1, so every row is an event). Checked against
 * the report in the test that evaluates a model.
 */
const TASTE_VALIDATION_START_MS = await tasteValidationStartMs();

async function tasteValidationStartMs(): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-taste-split-'));
  try {
    await writeTasteLog(dir);
    const text = await readFile(join(dir, 'events.csv'), 'utf8');
    const times = text
      .trim()
      .split('\n')
      .slice(1)
      .map((line) => Number(line.split(',')[2]) * 1_000)
      .sort((a, b) => a - b);
    return times[Math.floor(0.4 * times.length)]!;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('evaluate --model: a model trained up to the validation start is evaluated', async (t) => {
  const dir = await workspace(t);
  const modelDir = await tasteWithModel(dir, TASTE_VALIDATION_START_MS);
  await runEvaluation({ ...tasteOptions(dir, []), modelDir });

  const report = await readReport(dir);
  assert.equal(Date.parse(report.data.split.validationStart), TASTE_VALIDATION_START_MS);
  assert.equal(report.chosenVariant, 'centred', 'the model fixes the transform');
  assert.equal(report.neural?.version, 'offline-test-1');
  assert.equal(report.neural?.trainedHere, false);
  assert.deepEqual(
    report.rankers.map((ranker) => ranker.set),
    ['baseline', '+agg', '+dual', '+neural'],
  );
  const names = report.features.map((feature) => feature.name);
  assert.ok(names.includes('neural.score') && names.includes('neural.cos'), names.join());
});

test('evaluate --model refuses a model trained past the validation start, before any replay', async (t) => {
  const dir = await workspace(t);
  const modelDir = await tasteWithModel(dir, TASTE_VALIDATION_START_MS + 1);
  const stages: string[] = [];
  await assert.rejects(
    runEvaluation({ ...tasteOptions(dir, stages), modelDir }),
    (err: unknown) =>
      err instanceof AffinityError && err.code === 'USAGE' && /must not see/.test(err.message),
  );
  assert.ok(stages.includes('building queries'), stages.join());
  const replays = stages.filter((stage) => stage.includes('replay'));
  assert.deepEqual(replays, [], 'no replay ran before the check');
});

test('checkNoLeak: the cutoff may be at the validation start, not after it, and must be known', async (t) => {
  const dir = await workspace(t);
  const startMs = Date.UTC(2020, 0, 1);
  const configWith = async (cutoffMs: number | null) => {
    const transform = { center: false, normalize: true };
    await writeModel(dir, { dim: 4, types: ['like'], transform, cutoffMs });
    return (await loadModel(dir)).config;
  };
  checkNoLeak(await configWith(startMs), startMs);
  checkNoLeak(await configWith(startMs - DAY_MS), startMs);
  for (const cutoffMs of [startMs + 1, null]) {
    const config = await configWith(cutoffMs);
    assert.throws(
      () => checkNoLeak(config, startMs),
      (err: unknown) => err instanceof AffinityError && err.code === 'USAGE',
      `cutoff ${cutoffMs}`,
    );
  }
});

test('evaluate --train-model trains on the events before the validation start only', async (t) => {
  const dir = await workspace(t);
  await writeTasteLog(dir);
  const modelDir = join(dir, 'trained');
  await runEvaluation({ ...tasteOptions(dir, []), trainModelDir: modelDir, modelEpochs: 1 });

  const report = await readReport(dir);
  const { config } = await loadModel(modelDir);
  assert.equal(config.training?.testCutoffTs, TASTE_VALIDATION_START_MS);
  assert.equal(report.neural?.trainedHere, true);
  assert.equal(report.neural?.testCutoff, TASTE_VALIDATION_START_MS);
  assert.equal(report.rankers.at(-1)?.set, '+neural');
});
