/**
 * Messages that passed an earlier version of validation and then stopped the worker for good:
 * a `value` so large that the user's sums overflow to Infinity (and the dual solve throws on
 * every replay), and a rejected message larger than the dead-letter topic accepts (the
 * dead-letter send failed, so did the batch, and so did every retry of it). Each must end in
 * the dead-letter topic while the worker goes on applying the events around it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { loadCatalogueIntoRedis, randomCatalogue, startWorker } from '../helpers/fixtures.js';
import { defer } from '../helpers/cleanup.js';
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

/** The dead-letter topic's record limit in the second test, far below the 4 KB message. */
const DEAD_LETTER_MAX_BYTES = 2_048;

test('a value that would overflow the sums is dead-lettered; the next events are applied', async (t) => {
  const config = testConfig();
  await provision(t, config, 1);
  await loadCatalogueIntoRedis(config, randomCatalogue(5, 4, 1));
  const nowMs = Date.now();
  const event = (value: number) => ({ user: 'u', item: 'i1', ts: nowMs, type: 'click', value });
  await produce(config.eventsTopic, [
    { key: 'u', value: JSON.stringify(event(1e308)) },
    { key: 'u', value: JSON.stringify(event(2)) },
    { key: 'u', value: JSON.stringify(event(3)) },
  ]);

  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  await waitFor('the two good events applied', async () => {
    return (await appliedCount(redis, config, ['u'])) === 2;
  });

  const [letter] = await readDeadLetters(config, 1);
  assert.equal(letter?.headers?.['affinity-reason']?.toString(), 'invalid_value');
  const weights = await redis.hgetBuffer(`${config.keyPrefix}u:{u}`, 'weights');
  assert.ok(weights, 'the state has its weights');
  const values = [...new Float64Array(new Uint8Array(weights).buffer)];
  assert.ok(
    values.every((value) => Number.isFinite(value)),
    `finite weights: ${values.join(', ')}`,
  );
});

test('a letter larger than the dead-letter topic takes is sent cut, with its length', async (t) => {
  const config = testConfig({ AFFINITY_MAX_MESSAGE_BYTES: '1024' });
  const admin = await provision(t, config, 1);
  await admin.alterConfigs({
    validateOnly: false,
    resources: [
      {
        type: 2, // ConfigResourceTypes.TOPIC
        name: config.deadLetterTopic,
        configEntries: [{ name: 'max.message.bytes', value: String(DEAD_LETTER_MAX_BYTES) }],
      },
    ],
  });
  await loadCatalogueIntoRedis(config, randomCatalogue(5, 4, 1));
  const nowMs = Date.now();
  const good = (n: number) =>
    JSON.stringify({ user: 'u', item: 'i1', ts: nowMs - n, type: 'click' });
  const huge = JSON.stringify({ user: 'u', item: 'i'.repeat(4_000), ts: nowMs, type: 'click' });
  const small = JSON.stringify({ user: 'u', ts: nowMs, type: 'click' });
  await produce(config.eventsTopic, [
    { key: 'u', value: good(1) },
    { key: 'u', value: huge },
    { key: 'u', value: small },
    { key: 'u', value: good(2) },
  ]);

  await startWorker(t, config);
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  await waitFor('both good events applied', async () => {
    return (await appliedCount(redis, config, ['u'])) === 2;
  });

  const letters = await readDeadLetters(config, 2);
  const cut = letters.find(
    (letter) => letter.headers?.['affinity-reason']?.toString() === 'too_large',
  );
  assert.ok(cut, 'the large message is in the dead-letter topic');
  assert.equal(cut.headers?.['affinity-truncated-from-bytes']?.toString(), String(huge.length));
  assert.equal(cut.value?.toString(), huge.slice(0, cut.value?.length), 'a prefix of the original');
  assert.ok((cut.value?.length ?? 0) < DEAD_LETTER_MAX_BYTES);
  assert.equal(cut.headers?.['affinity-source-offset']?.toString(), '1');

  const whole = letters.find(
    (letter) => letter.headers?.['affinity-reason']?.toString() !== 'too_large',
  );
  assert.equal(whole?.headers?.['affinity-reason']?.toString(), 'missing_field');
  assert.equal(whole?.value?.toString(), small, 'a letter that fits keeps its original bytes');
  assert.equal(whole?.headers?.['affinity-truncated-from-bytes'], undefined);
});
