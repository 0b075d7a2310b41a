/**
 * Redis going away mid-stream must stall the worker, not lose or double-count anything: the
 * engine thread tries its batches again (affinity_batch_retries_total) and its flushes again
 * (affinity_flush_failures_total), and once Redis is back every event is applied exactly once.
 * The outage is a TCP proxy in front of the real Redis whose connections are cut and whose port
 * then refuses connections until it is restored.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createConnection, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { createLogger } from '../../src/ops/logger.js';
import { WorkerMetrics, createRegistry } from '../../src/ops/metrics.js';
import { AffinityWorker } from '../../src/workers/events-worker.js';
import { defer } from '../helpers/cleanup.js';
import {
  assertAppliedOnce,
  eventMessages,
  loadCatalogueIntoRedis,
  randomCatalogue,
  randomEvents,
} from '../helpers/fixtures.js';
import {
  REDIS_URL,
  appliedCount,
  checkNothingLeftBehind,
  produce,
  provision,
  testConfig,
  waitFor,
} from '../helpers/services.js';

checkNothingLeftBehind();

const USERS = ['ann', 'ben', 'cat', 'dov', 'eve'];
const DIM = 8;

/** Forwards connections to Redis until cut; restore() listens on the same port again. */
class CuttableProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  port = 0;

  async listen(): Promise<void> {
    const upstream = new URL(REDIS_URL);
    const server = createServer((client) => {
      const redis = createConnection(Number(upstream.port || 6379), upstream.hostname);
      for (const socket of [client, redis]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => undefined);
      }
      client.pipe(redis).pipe(client);
      client.on('close', () => redis.destroy());
      redis.on('close', () => client.destroy());
    });
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}

async function counter(metrics: WorkerMetrics, name: 'batchRetries' | 'flushFailures') {
  const { values } = await metrics[name].get();
  return values.reduce((sum, sample) => sum + sample.value, 0);
}

test('a Redis outage mid-stream stalls the worker; afterwards every event is applied once', async (t) => {
  const proxy = new CuttableProxy();
  await proxy.listen();
  defer(t, () => proxy.cut());
  const config = testConfig({
    AFFINITY_REDIS_URL: `redis://127.0.0.1:${proxy.port}`,
    AFFINITY_DUAL_ENABLED: 'false',
    AFFINITY_FLUSH_INTERVAL: '50ms',
  });
  await provision(t, config, 1);
  const items = randomCatalogue(20, DIM, 5);
  await loadCatalogueIntoRedis(config, items);
  const events = randomEvents(USERS, 40, 20, 9, Date.now());
  const half = events.length / 2;

  const metrics = new WorkerMetrics(createRegistry(false));
  const worker = new AffinityWorker(config, createLogger('silent'), metrics);
  defer(t, () => worker.close());
  await worker.start();
  const redis = new Redis(REDIS_URL);
  defer(t, () => redis.quit());
  await produce(config.eventsTopic, eventMessages(events.slice(0, half)));
  await waitFor('the first half applied', async () => {
    return (await appliedCount(redis, config, USERS)) === half;
  });

  await proxy.cut();
  await produce(config.eventsTopic, eventMessages(events.slice(half)));
  await waitFor('the worker to meet the outage', async () => {
    return (await counter(metrics, 'batchRetries')) + (await counter(metrics, 'flushFailures')) > 0;
  });
  assert.equal(await appliedCount(redis, config, USERS), half, 'nothing written meanwhile');

  await proxy.listen();
  await waitFor('every event applied', async () => {
    return (await appliedCount(redis, config, USERS)) === events.length;
  });

  await assertAppliedOnce(redis, config, USERS, events, items);
});
