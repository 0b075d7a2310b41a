/**
 * Runs a long-running service (`worker`, `neural-worker`) beside the ops server until a signal
 * stops it. A start that fails is logged once, undone (the service and the ops server are
 * closed) and ends the command with 1: a process that consumes nothing must not stay alive
 * answering /healthz.
 */
import type { Registry } from 'prom-client';
import { startOpsServer } from '../ops/http.js';
import type { OpsServer } from '../ops/http.js';
import type { Logger } from '../ops/logger.js';
import { stopOnSignals } from './signals.js';

export interface Service {
  readonly ready: boolean;
  start(): Promise<void>;
  /** Safe to call more than once, and after a failed start. */
  close(): Promise<void>;
  /**
   * Resolves once the service has stopped: null after `close()`, or the error with which it
   * stopped by itself (a consumer that will not be restarted). The command then exits 1, so
   * that a supervisor restarts the process.
   */
  readonly stopped?: Promise<Error | null>;
}

export interface OpsOptions {
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
}

/** Resolves with the exit code: 0 after a graceful stop, 1 when start-up or the stop failed. */
export async function serve(service: Service, ops: OpsOptions, logger: Logger): Promise<number> {
  const server = await startOpsServer({ ...ops, isReady: () => service.ready }, logger);
  let signalled = false;
  const stop = stopOnce(service, server);
  const stopped = stopOnSignals(logger, () => {
    signalled = true;
    return stop();
  });

  try {
    await service.start();
  } catch (err) {
    // A signal during start-up closes the service under it; that stop decides the exit code.
    if (signalled) return stopped;
    logger.error({ err }, 'start-up failed');
    await stop().catch((stopErr: unknown) => {
      logger.error({ err: stopErr }, 'stop after a failed start-up failed');
    });
    return 1;
  }
  return untilStopped(service, stopped, stop, logger);
}

/** The exit code: the signal's graceful stop, or 1 when the service stopped by itself. */
async function untilStopped(
  service: Service,
  signalled: Promise<number>,
  stop: () => Promise<void>,
  logger: Logger,
): Promise<number> {
  const never = new Promise<null>(() => undefined);
  const failed = (service.stopped ?? never).then<number | Error>((err) =>
    err === null ? signalled : err,
  );
  const outcome = await Promise.race([signalled, failed]);
  if (typeof outcome === 'number') return outcome;

  logger.error({ err: outcome }, 'the service stopped by itself; exiting');
  await stop().catch((stopErr: unknown) => {
    logger.error({ err: stopErr }, 'stop after the service failed failed');
  });
  return 1;
}

/** Closes the service, then the ops server even when the service's close failed. */
function stopOnce(service: Service, server: OpsServer): () => Promise<void> {
  let stopping: Promise<void> | null = null;
  const closeBoth = async () => {
    try {
      await service.close();
    } finally {
      await server.close();
    }
  };
  return () => (stopping ??= closeBoth());
}
