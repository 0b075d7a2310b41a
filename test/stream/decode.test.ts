import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeEvent } from '../../src/stream/decode.js';
import { testDecodeLimits } from '../helpers/fixtures.js';

const NOW_MS = 1_700_000_000_000;
const limits = testDecodeLimits(512);

function decode(value: unknown) {
  const bytes = typeof value === 'string' ? Buffer.from(value) : Buffer.from(JSON.stringify(value));
  return decodeEvent(bytes, NOW_MS, limits);
}

const good = { user: 'u1', item: 'i1', ts: NOW_MS - 1_000, type: 'like' };

test('a valid event decodes with its optional fields', () => {
  const result = decode({ ...good, value: 2, id: 'e-1' });
  assert.deepEqual(result, { ok: true, event: { ...good, value: 2, id: 'e-1' } });
  assert.equal(decode({ ...good, value: 1_000 }).ok, true, 'the limit itself is allowed');
});

test('each class of bad message is rejected with its reason', () => {
  const cases: [unknown, string][] = [
    ['{"user": "u1", ', 'not_json'],
    [[1, 2], 'not_object'],
    [{ ...good, user: undefined }, 'missing_field'],
    [{ ...good, item: '' }, 'missing_field'],
    [{ ...good, ts: '2024-01-01' }, 'wrong_type'],
    [{ ...good, user: 42 }, 'wrong_type'],
    [{ ...good, ts: 1.5 }, 'wrong_type'],
    [{ ...good, type: 'teleport' }, 'unknown_type'],
    ['{"user":"u1","item":"i1","ts":1e999,"type":"like"}', 'non_finite'],
    [{ ...good, value: -1 }, 'invalid_value'],
    [{ ...good, value: 1e308 }, 'invalid_value'],
    [{ ...good, value: 1_000.5 }, 'invalid_value'],
    [{ ...good, ts: NOW_MS + 2 * 3_600_000 }, 'timestamp_out_of_range'],
    [{ ...good, ts: 0 }, 'timestamp_out_of_range'],
    [{ ...good, item: 'x'.repeat(600) }, 'too_large'],
  ];
  for (const [value, reason] of cases) {
    const result = decode(value);
    assert.equal(result.ok, false, JSON.stringify(value));
    if (!result.ok) {
      assert.equal(result.reason, reason, JSON.stringify(value));
      assert.ok(result.detail.length > 0);
    }
  }
});

test('a value that is not valid UTF-8 is rejected, not decoded with replacement characters', () => {
  const bytes = Buffer.concat([Buffer.from('{"user":"u'), Buffer.of(0xff), Buffer.from('"}')]);
  const result = decodeEvent(bytes, NOW_MS, limits);
  assert.deepEqual(result.ok ? null : result.reason, 'not_json');
});

test('a message without a value is rejected, not dropped', () => {
  const result = decodeEvent(null, NOW_MS, limits);
  assert.equal(result.ok, false);
});
