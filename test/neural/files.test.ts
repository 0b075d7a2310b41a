/**
 * Model directories and the safetensors codec: a bit-exact round trip, a file laid out byte by
 * byte as the safetensors specification describes it, and every way loadModel refuses a model.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import {
  CONFIG_FILE,
  ModelFileError,
  WEIGHTS_FILE,
  loadModel,
  saveModel,
} from '../../src/neural/files.js';
import type { NeuralConfig } from '../../src/neural/model.js';
import { TENSOR_NAMES, createConfig, initWeights } from '../../src/neural/model.js';
import {
  SafetensorsError,
  decodeSafetensors,
  encodeSafetensors,
  readSafetensors,
  writeSafetensors,
} from '../../src/neural/safetensors.js';

async function temporaryDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-neural-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const config: NeuralConfig = {
  ...createConfig({
    inputDim: 7,
    types: ['click', 'like', 'dislike'],
    modelDim: 8,
    heads: 2,
    historyLength: 12,
  }),
  version: 'test-1',
};

function rejectsWith(code: string, pattern: RegExp): (error: unknown) => boolean {
  return (error) =>
    error instanceof ModelFileError && error.code === code && pattern.test(error.message);
}

test('save then load gives the same config and bit-identical tensors', async (t) => {
  const dir = await temporaryDir(t);
  const weights = initWeights(config, 3);
  weights['token.type.weight'].data[1] = -0; // a signed zero survives too
  weights['out.proj.bias'].data[0] = 1e-40; // and a float32 subnormal
  await saveModel(dir, config, weights);

  const loaded = await loadModel(dir);
  assert.deepEqual(loaded.config, config);
  for (const name of TENSOR_NAMES) {
    assert.deepEqual(loaded.weights[name].shape, weights[name].shape, name);
    const expected = new Uint8Array(weights[name].data.buffer);
    const actual = new Uint8Array(
      loaded.weights[name].data.buffer,
      loaded.weights[name].data.byteOffset,
      loaded.weights[name].data.byteLength,
    );
    assert.deepEqual(Buffer.from(actual), Buffer.from(expected), name);
  }
  assert.equal(JSON.parse(await readFile(join(dir, CONFIG_FILE), 'utf8')).version, 'test-1');
});

test('the file layout follows the safetensors specification byte for byte', () => {
  const bytes = encodeSafetensors(
    new Map([['w', { shape: [1, 2], data: Float32Array.from([1, -2]) }]]),
    { k: 'v' },
  );

  // Written out by hand from the specification: u64 LE header length, JSON header padded with
  // spaces to a multiple of 8 (counting the 8 length bytes), then float32 LE data.
  const json = '{"w":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}}';
  const padded = json + ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const expected = Buffer.concat([
    Buffer.from([padded.length, 0, 0, 0, 0, 0, 0, 0]),
    Buffer.from(padded, 'utf8'),
    Buffer.from([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]), // 1.0f and -2.0f
  ]);
  assert.deepEqual(bytes, expected);

  const decoded = decodeSafetensors(expected);
  assert.deepEqual(decoded.metadata, { k: 'v' });
  assert.deepEqual(decoded.tensors.get('w'), { shape: [1, 2], data: Float32Array.from([1, -2]) });
});

test('the reader refuses malformed safetensors', () => {
  const good = encodeSafetensors({ a: { shape: [2], data: Float32Array.from([1, 2]) } });
  assert.throws(() => decodeSafetensors(good.subarray(0, good.length - 1)), SafetensorsError);
  assert.throws(() => decodeSafetensors(Buffer.from([1, 2, 3])), /too short/);

  const huge = Buffer.from(good);
  huge.writeBigUInt64LE(1n << 40n, 0);
  assert.throws(() => decodeSafetensors(huge), /exceeds the file/);

  const f16 = Buffer.from(good.toString('latin1').replace('"F32"', '"F16"'), 'latin1');
  assert.throws(() => decodeSafetensors(f16), /dtype F16/);
  assert.throws(
    () => encodeSafetensors({ a: { shape: [3], data: new Float32Array(2) } }),
    RangeError,
  );
});

test('loadModel rejects a tensor whose shape does not fit the config, naming it', async (t) => {
  const dir = await temporaryDir(t);
  const weights = initWeights(config, 3);
  await saveModel(dir, config, weights);

  const tensors = new Map(TENSOR_NAMES.map((name) => [name, weights[name]] as const));
  tensors.set('token.proj.weight', { shape: [8, 6], data: new Float32Array(48) });
  await writeSafetensors(join(dir, WEIGHTS_FILE), tensors, { version: config.version });
  await assert.rejects(
    loadModel(dir),
    rejectsWith('MODEL_TENSOR_SHAPE', /token\.proj\.weight has shape \[8, 6\].*\[8, 7\]/),
  );

  tensors.set('token.proj.weight', { shape: [56], data: new Float32Array(56) });
  await writeSafetensors(join(dir, WEIGHTS_FILE), tensors, { version: config.version });
  await assert.rejects(loadModel(dir), rejectsWith('MODEL_TENSOR_SHAPE', /token\.proj\.weight/));
});

test('loadModel rejects missing and unknown tensors, a missing or other version, a bad config', async (t) => {
  const dir = await temporaryDir(t);
  const weights = initWeights(config, 3);
  await saveModel(dir, config, weights);
  const all = (): Map<string, { shape: readonly number[]; data: Float32Array }> =>
    new Map(TENSOR_NAMES.map((name) => [name, weights[name]] as const));

  const missing = all();
  missing.delete('pool.queries');
  await writeSafetensors(join(dir, WEIGHTS_FILE), missing, { version: config.version });
  await assert.rejects(loadModel(dir), rejectsWith('MODEL_TENSOR_MISSING', /pool\.queries/));

  const extra = all().set('pool.extra', { shape: [1], data: new Float32Array(1) });
  await writeSafetensors(join(dir, WEIGHTS_FILE), extra, { version: config.version });
  await assert.rejects(loadModel(dir), rejectsWith('MODEL_TENSOR_UNEXPECTED', /pool\.extra/));

  await writeSafetensors(join(dir, WEIGHTS_FILE), all(), { version: 'other' });
  await assert.rejects(loadModel(dir), rejectsWith('MODEL_VERSION_MISMATCH', /"other"/));
  // Without a version the weights cannot be told from another model's: refused as well.
  await writeSafetensors(join(dir, WEIGHTS_FILE), all(), { format: 'pt' });
  await assert.rejects(loadModel(dir), rejectsWith('MODEL_VERSION_MISMATCH', /no "version"/));

  await writeSafetensors(join(dir, WEIGHTS_FILE), all(), { version: config.version });
  await writeFile(join(dir, CONFIG_FILE), JSON.stringify({ ...config, heads: 3 }));
  await assert.rejects(loadModel(dir), rejectsWith('MODEL_CONFIG_INVALID', /multiple of heads/));
  await writeFile(join(dir, CONFIG_FILE), '{"architecture":');
  await assert.rejects(loadModel(dir), rejectsWith('MODEL_CONFIG_INVALID', /not valid JSON/));

  await writeFile(join(dir, WEIGHTS_FILE), Buffer.from('not safetensors'));
  await writeFile(join(dir, CONFIG_FILE), JSON.stringify(config));
  await assert.rejects(loadModel(dir), rejectsWith('MODEL_FORMAT', /model\.safetensors/));
  await assert.rejects(loadModel(join(dir, 'absent')), rejectsWith('MODEL_IO', /config\.json/));
});

test('readSafetensors reads what writeSafetensors wrote', async (t) => {
  const dir = await temporaryDir(t);
  const path = join(dir, 'x.safetensors');
  await writeSafetensors(
    path,
    { b: { shape: [2, 2], data: Float32Array.from([0.1, 0.2, 0.3, 0.4]) } },
    { a: '1' },
  );
  const content = await readSafetensors(path);
  assert.deepEqual([...content.tensors.keys()], ['b']);
  assert.deepEqual(content.tensors.get('b')!.data, Float32Array.from([0.1, 0.2, 0.3, 0.4]));
  assert.deepEqual(content.metadata, { a: '1' });
});
