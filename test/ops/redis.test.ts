/**
 * The workers' Redis connections (ops/redis.ts, used by the events worker, its engine and the
 * neural worker): a connection that fails is logged as a warning naming the connection, through
 * the worker's logger, and the command waiting on it fails instead of hanging.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { workerRedis } from '../../src/ops/redis.js';
import { closedPort, waitFor } from '../helpers/services.js';

test('a failed connection is logged with its name, and its commands fail', async () => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
      done();
    },
  });
  const logger = pino({ level: 'warn' }, sink);
  const redis = workerRedis(`redis://127.0.0.1:${await closedPort()}`, 'test reads', logger);
  try {
    await assert.rejects(redis.connect());
    await waitFor('the warning', () => lines.length > 0, 10_000, 10);
    assert.equal(lines[0]!['connection'], 'test reads');
    assert.equal(lines[0]!['msg'], 'redis connection failed; reconnecting');
    assert.match(String((lines[0]!['err'] as { message?: string }).message), /ECONNREFUSED/);
  } finally {
    redis.disconnect();
  }
});
