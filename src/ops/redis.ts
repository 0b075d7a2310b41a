/**
 * The workers' Redis connections: connected by the caller's start (lazyConnect), a command fails
 * after three reconnection attempts instead of waiting forever, and each failed (re)connection is
 * logged; without a listener, ioredis prints it on stderr as an unhandled error event.
 */
import { Redis } from 'ioredis';
import type { Logger } from './logger.js';

export function workerRedis(url: string, connection: string, logger: Logger): Redis {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3 });
  redis.on('error', (err: unknown) => {
    logger.warn({ err, connection }, 'redis connection failed; reconnecting');
  });
  return redis;
}
