/**
 * ModelHolder accepts a model only if it reads the catalogue's embeddings: the same dimension
 * and the same centring and normalisation as in training. A wrong dimension would make every
 * encoding throw (the neural consumer stalls), a wrong transform gives wrong scores silently.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { pino } from 'pino';
import { AffinityError } from '../../src/errors.js';
import { saveModel } from '../../src/neural/files.js';
import type { CatalogueShape, ModelRefusal } from '../../src/neural/model-holder.js';
import { ModelHolder } from '../../src/neural/model-holder.js';
import type { InputTransform } from '../../src/neural/model.js';
import { createConfig, initWeights } from '../../src/neural/model.js';

const CATALOGUE: CatalogueShape = { dim: 6, centered: false, normalized: true };
const FITS: InputTransform = { center: false, normalize: true };

async function writeModel(
  dir: string,
  version: string,
  inputDim = 6,
  inputTransform = FITS,
): Promise<void> {
  const options = { inputDim, types: ['click'], modelDim: 4, heads: 2, historyLength: 5 };
  const config = { ...createConfig({ ...options, inputTransform }), version };
  await saveModel(dir, config, initWeights(config, 1));
}

async function setUp(t: TestContext) {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-holder-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const lines: Record<string, unknown>[] = [];
  const stream = {
    write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>),
  };
  const refusals: ModelRefusal[] = [];
  const holder = new ModelHolder(dir, pino({ level: 'info' }, stream), {
    onRefused: (reason) => refusals.push(reason),
  });
  return { dir, holder, lines, refusals };
}

const errors = (lines: readonly Record<string, unknown>[]) =>
  lines.filter((line) => line['level'] === 50);

test('a model of another input dimension is refused and the one in use stays', async (t) => {
  const { dir, holder, lines, refusals } = await setUp(t);
  await writeModel(dir, 'v1');
  assert.equal(await holder.refresh(CATALOGUE), true);

  await writeModel(dir, 'v2', 7);
  assert.equal(await holder.refresh(CATALOGUE), false);
  assert.equal(holder.current?.version, 'v1');
  assert.deepEqual(refusals, ['input_dim']);
  const [logged] = errors(lines);
  assert.equal(logged?.['version'], 'v2');
  assert.equal(logged?.['inUse'], 'v1');
  assert.match(String(logged?.['detail']), /inputDim 7.*dimension 6/);

  // Refused once per version and catalogue: the next polls neither reload nor log it again.
  assert.equal(await holder.refresh(CATALOGUE), false);
  assert.equal(errors(lines).length, 1);
  assert.deepEqual(refusals, ['input_dim']);
  // A catalogue that now fits it takes it.
  assert.equal(await holder.refresh({ ...CATALOGUE, dim: 7 }), true);
  assert.equal(holder.current?.version, 'v2');
});

test('a model trained on differently transformed embeddings is refused', async (t) => {
  const { dir, holder, lines, refusals } = await setUp(t);
  await writeModel(dir, 'v1');
  await holder.refresh(CATALOGUE);

  await writeModel(dir, 'centred', 6, { center: true, normalize: true });
  assert.equal(await holder.refresh(CATALOGUE), false);
  await writeModel(dir, 'raw', 6, { center: false, normalize: false });
  assert.equal(await holder.refresh(CATALOGUE), false);
  assert.equal(holder.current?.version, 'v1');
  assert.deepEqual(refusals, ['input_transform', 'input_transform']);
  assert.match(String(errors(lines)[0]?.['detail']), /center=true.*centered=false/);
});

test('with no model that fits, requireCurrent names the folder and the mismatch', async (t) => {
  const { dir, holder } = await setUp(t);
  assert.throws(
    () => holder.requireCurrent(),
    (err: unknown) => err instanceof AffinityError && err.message.includes(dir),
  );

  await writeModel(dir, 'wide', 9);
  await holder.refresh(CATALOGUE);
  assert.equal(holder.current, null);
  assert.throws(
    () => holder.requireCurrent(),
    (err: unknown) =>
      err instanceof AffinityError &&
      err.code === 'CATALOGUE_MISMATCH' &&
      /inputDim 9/.test(err.message),
  );
});

test('concurrent refreshes load the model once', async (t) => {
  const { dir, holder, lines } = await setUp(t);
  await writeModel(dir, 'v1');
  const results = await Promise.all([holder.refresh(CATALOGUE), holder.refresh(CATALOGUE)]);
  assert.deepEqual(results, [true, true]);
  assert.equal(lines.filter((line) => line['msg'] === 'neural model loaded').length, 1);
  assert.equal(holder.byVersion('v1'), holder.current);
});
