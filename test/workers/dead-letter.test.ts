/**
 * Each class of bad message lands in the dead-letter topic with its original bytes, its reason
 * and its source position, and the worker goes on applying the good ones around it; the same
 * holds for bad values on the item-embeddings topic.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Message } from 'kafkajs';
import { ItemStore } from '../../src/items/store.js';
import { Redis } from 'ioredis';
import { defer } from '../helpers/cleanup.js';
import { loadCatalogueIntoRedis, randomCatalogue, startWorker } from '../helpers/fixtures.js';
import {
  REDIS_URL,
  appliedCount,
  checkNothingLeftBehind,
  produce,
  provision,
  readDeadLetters,
  testConfig,
  waitFor,
} from '../helpers/services.js';

checkNothingLeftBehind();

test('bad messages go to the dead-letter topic with their reason; good ones are applied', async (t) => {
  // Above the 1,024-character limit of a text field, so field_too_long is reachable.
  const config = testConfig({ AFFINITY_MAX_MESSAGE_BYTES: '2048' });
  await provision(t, config, 1);
  await loadCatalogueIntoRedis(config, randomCatalogue(5, 4, 1));
  const nowMs = Date.now();
  const good = (n: number) =>
    JSON.stringify({ user: 'u', item: 'i1', ts: nowMs - n, type: 'click' });
  const bad: [string, string | null][] = [
    ['not_json', null],
    ['not_json', '{"user": "u", "item"'],
    ['not_object', '"just a string"'],
    ['missing_field', JSON.stringify({ user: 'u', ts: nowMs, type: 'click' })],
    ['wrong_type', JSON.stringify({ user: 'u', item: 7, ts: nowMs, type: 'click' })],
    ['unknown_type', JSON.stringify({ user: 'u', item: 'i1', ts: nowMs, type: 'teleport' })],
    ['non_finite', '{"user":"u","item":"i1","ts":1e999,"type":"click"}'],
    [
      'timestamp_out_of_range',
      JSON.stringify({ user: 'u', item: 'i1', ts: nowMs + 86_400_000, type: 'click' }),
    ],
    [
      'invalid_value',
      JSON.stringify({ user: 'u', item: 'i1', ts: nowMs, type: 'click', value: -2 }),
    ],
    [
      'field_too_long',
      JSON.stringify({ user: 'u', item: 'i'.repeat(1_025), ts: nowMs, type: 'click' }),
    ],
    ['too_large', JSON.stringify({ user: 'u', item: 'i'.repeat(2_100), ts: nowMs, type: 'click' })],
  ];
  const messages: Message[] = [{ key: 'u', value: good(1) }];
  for (const [, value] of bad)
    messages.push({ key: 'u', value }, { key: 'u', value: good(messages.length) });
  await produce(config.eventsTopic, messages);

  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  await waitFor(
    'good events applied',
    async () => (await appliedCount(redis, config, ['u'])) === bad.length + 1,
  );

  const letters = await readDeadLetters(config, bad.length);
  assert.equal(letters.length, bad.length);
  letters.forEach((letter, index) => {
    const [reason, value] = bad[index]!;
    assert.equal(letter.headers?.['affinity-reason']?.toString(), reason);
    assert.ok((letter.headers?.['affinity-detail']?.toString() ?? '').length > 0);
    assert.equal(letter.value?.toString() ?? null, value, 'original bytes (null: a tombstone)');
    assert.equal(letter.headers?.['affinity-source-topic']?.toString(), config.eventsTopic);
    assert.equal(letter.headers?.['affinity-source-partition']?.toString(), '0');
    assert.equal(letter.headers?.['affinity-source-offset']?.toString(), String(2 * index + 1));
  });
});

test('bad item embeddings go to the dead-letter topic with their reason and position', async (t) => {
  const config = testConfig();
  await provision(t, config, 1);
  const dim = 4;
  await loadCatalogueIntoRedis(config, randomCatalogue(5, dim, 3));
  const good = (id: string): Message => ({ key: id, value: JSON.stringify([0.5, 0.5, 0.5, 0.5]) });
  // A keyless message cannot be tested here: the broker rejects it on a compacted topic.
  const bad: Message[] = [
    { key: 'short', value: JSON.stringify([1, 2, 3]) },
    { key: 'zero', value: Buffer.from(new Float32Array(dim).buffer) },
    { key: 'empty', value: Buffer.alloc(0) },
  ];
  const messages = bad.flatMap((message, n) => [good(`good-${n}`), message]);
  await produce(config.itemsTopic, messages);

  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  const store = new ItemStore(redis, { prefix: config.keyPrefix });
  await waitFor('the good items applied', async () => (await store.requireMeta()).count === 8);

  const letters = await readDeadLetters(config, bad.length);
  assert.equal(letters.length, bad.length);
  letters.forEach((letter, index) => {
    const sent = bad[index]!;
    const headers = letter.headers ?? {};
    assert.equal(headers['affinity-reason']?.toString(), 'item_invalid');
    assert.ok((headers['affinity-detail']?.toString() ?? '').length > 0, 'a detail');
    assert.equal(headers['affinity-source-topic']?.toString(), config.itemsTopic);
    assert.equal(headers['affinity-source-partition']?.toString(), '0');
    assert.equal(headers['affinity-source-offset']?.toString(), String(2 * index + 1));
    assert.equal(letter.key?.toString(), sent.key, 'original key');
    assert.deepEqual(letter.value, Buffer.from(sent.value as string | Buffer), 'original bytes');
  });
});
