/**
 * Each class of bad message lands in the dead-letter topic with its original bytes, its reason
 * and its source position, and the worker goes on applying the good ones around it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KafkaMessage } from 'kafkajs';
import { Redis } from 'ioredis';
import { loadCatalogueIntoRedis, randomCatalogue, startWorker } from '../helpers/fixtures.js';
import {
  REDIS_URL,
  appliedCount,
  produce,
  provision,
  testConfig,
  testKafka,
  uniqueName,
  waitFor,
} from '../helpers/services.js';

test('bad messages go to the dead-letter topic with their reason; good ones are applied', async (t) => {
  const config = testConfig({ AFFINITY_MAX_MESSAGE_BYTES: '300' });
  await provision(t, config, 1);
  await loadCatalogueIntoRedis(config, randomCatalogue(5, 4, 1));
  const nowMs = Date.now();
  const good = (n: number) =>
    JSON.stringify({ user: 'u', item: 'i1', ts: nowMs - n, type: 'click' });
  const bad: [string, string][] = [
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
    ['too_large', JSON.stringify({ user: 'u', item: 'i'.repeat(400), ts: nowMs, type: 'click' })],
  ];
  const messages = [{ key: 'u', value: good(1) }];
  for (const [, value] of bad)
    messages.push({ key: 'u', value }, { key: 'u', value: good(messages.length) });
  await produce(config.eventsTopic, messages);

  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.quit());
  await waitFor(
    'good events applied',
    async () => (await appliedCount(redis, config, ['u'])) === bad.length + 1,
  );

  const letters = await readTopic(config.deadLetterTopic, bad.length);
  assert.equal(letters.length, bad.length);
  letters.forEach((letter, index) => {
    const [reason, value] = bad[index]!;
    assert.equal(letter.headers?.['affinity-reason']?.toString(), reason);
    assert.ok((letter.headers?.['affinity-detail']?.toString() ?? '').length > 0);
    assert.equal(letter.value?.toString(), value, 'original bytes');
    assert.equal(letter.headers?.['affinity-source-topic']?.toString(), config.eventsTopic);
    assert.equal(letter.headers?.['affinity-source-partition']?.toString(), '0');
    assert.equal(letter.headers?.['affinity-source-offset']?.toString(), String(2 * index + 1));
  });
});

async function readTopic(topic: string, count: number): Promise<KafkaMessage[]> {
  const consumer = testKafka().consumer({ groupId: uniqueName('dlq-reader') });
  const received: KafkaMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => void received.push(message) });
    await waitFor(`${count} dead letters`, () => received.length >= count);
  } finally {
    await consumer.disconnect();
  }
  return received;
}
