import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startOpsServer } from '../../src/ops/http.js';
import { createLogger } from '../../src/ops/logger.js';
import { WorkerMetrics, createRegistry } from '../../src/ops/metrics.js';

test('the ops server serves metrics, health and readiness', async (t) => {
  const metrics = new WorkerMetrics(createRegistry(false));
  let ready = false;
  const server = await startOpsServer(
    { host: '127.0.0.1', port: 0, registry: metrics.registry, isReady: () => ready },
    createLogger('silent'),
  );
  t.after(() => server.close());
  const url = (path: string) => `http://127.0.0.1:${server.port}${path}`;

  metrics.eventsDeadLettered.inc({ reason: 'not_json' });
  const body = await (await fetch(url('/metrics'))).text();
  assert.match(body, /affinity_events_dead_lettered_total\{reason="not_json"\} 1/);
  assert.match(body, /affinity_event_freshness_seconds_bucket/);

  assert.equal((await fetch(url('/healthz'))).status, 200);
  assert.equal((await fetch(url('/readyz'))).status, 503);
  ready = true;
  assert.equal((await fetch(url('/readyz'))).status, 200);
  assert.equal((await fetch(url('/nothing'))).status, 404);
});
