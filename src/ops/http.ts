/**
 * The operations port: `/metrics` in the Prometheus text format, `/healthz` (the process is
 * alive) and `/readyz` (the consumer has joined its group and Redis answers).
 */
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from './logger.js';

export interface OpsServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startOpsServer(
  options: { host: string; port: number; registry: Registry; isReady: () => boolean },
  logger: Logger,
): Promise<OpsServer> {
  const server = createServer((request, response) => {
    void route(request.url ?? '/', options).then(
      ({ status, type, body }) => {
        response.writeHead(status, { 'content-type': type });
        response.end(body);
      },
      (err: unknown) => {
        logger.warn({ err }, 'ops request failed');
        response.writeHead(500).end();
      },
    );
  });

  await listen(server, options.host, options.port);
  const port = (server.address() as AddressInfo).port;
  logger.info({ host: options.host, port }, 'ops server listening');
  return { port, close: () => closeServer(server) };
}

async function route(
  url: string,
  options: { registry: Registry; isReady: () => boolean },
): Promise<{ status: number; type: string; body: string }> {
  const path = url.split('?')[0];
  if (path === '/metrics') {
    return {
      status: 200,
      type: options.registry.contentType,
      body: await options.registry.metrics(),
    };
  }
  if (path === '/healthz') return { status: 200, type: 'text/plain', body: 'ok\n' };
  if (path === '/readyz') {
    const ready = options.isReady();
    return {
      status: ready ? 200 : 503,
      type: 'text/plain',
      body: ready ? 'ready\n' : 'not ready\n',
    };
  }
  return { status: 404, type: 'text/plain', body: 'not found\n' };
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
