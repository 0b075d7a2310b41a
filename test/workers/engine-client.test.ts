/**
 * An engine thread that cannot run (here: its Redis refuses connections) fails the start, tells
 * the worker through `failed`, and refuses further batches, rather than leaving the worker up
 * and idle.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AffinityError } from '../../src/errors.js';
import { createLogger } from '../../src/ops/logger.js';
import { WorkerMetrics, createRegistry } from '../../src/ops/metrics.js';
import { EngineClient } from '../../src/workers/engine-client.js';
import { ColumnsBuilder } from '../../src/workers/engine-link.js';
import { closedPort, testConfig } from '../helpers/services.js';

test('an engine that cannot reach Redis fails its start and refuses batches', async () => {
  const port = await closedPort();
  const config = testConfig({ AFFINITY_REDIS_URL: `redis://127.0.0.1:${port}` });
  const failures: Error[] = [];
  const engine = new EngineClient(
    config,
    createLogger('silent'),
    new WorkerMetrics(createRegistry(false)),
    { flushed: () => undefined, failed: (error) => failures.push(error) },
  );

  await assert.rejects(engine.start(), (err: unknown) => {
    assert.ok(err instanceof AffinityError);
    assert.equal(err.code, 'ENGINE_FAILED');
    assert.match(err.message, /^engine thread: /);
    return true;
  });
  assert.equal(failures.length, 1, 'the worker is told once');

  const { columns, transfer } = new ColumnsBuilder(0, new Map()).build();
  await assert.rejects(
    engine.apply({ partition: 0, nextOffset: '1', caughtUp: true }, columns, transfer),
    /engine stopped/,
  );
  await engine.stop();
});
