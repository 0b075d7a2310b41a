/**
 * `serve` runs a service until a signal stops it; a service that stops by itself with an
 * error (a kafkajs consumer that will not be restarted) must end the command with 1 and close
 * the ops server, not leave a process that answers /healthz while consuming nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { serve } from '../../src/cli/serve.js';
import type { Service } from '../../src/cli/serve.js';
import { createLogger } from '../../src/ops/logger.js';
import { createRegistry } from '../../src/ops/metrics.js';

/** A service whose `stopped` the test settles; it records whether it was closed. */
function fakeService() {
  let settle: (failure: Error | null) => void = () => undefined;
  const stopped = new Promise<Error | null>((resolve) => (settle = resolve));
  const service = {
    ready: true,
    closed: 0,
    stopped,
    start: async () => undefined,
    close: async () => {
      service.closed++;
    },
  } satisfies Service & { closed: number };
  return { service, fail: (err: Error) => settle(err) };
}

test('a service that stops by itself with an error ends serve with 1, closed', async () => {
  const { service, fail } = fakeService();
  const ops = { host: '127.0.0.1', port: 0, registry: createRegistry(false) };
  const exit = serve(service, ops, createLogger('silent'));

  fail(new Error('the consumer crashed and will not be restarted'));
  assert.equal(await exit, 1);
  assert.equal(service.closed, 1, 'the service was closed');
});
