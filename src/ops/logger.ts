import { destination, pino } from 'pino';
import type { Logger } from 'pino';

export type { Logger };

/**
 * JSON lines on stdout (or stderr, for commands whose stdout is their result); components bind
 * their identity fields with `logger.child`. stderr is written synchronously, so a one-shot
 * command's last line is out before it exits.
 */
export function createLogger(
  level: string,
  bindings: Record<string, unknown> = {},
  stream: 'stdout' | 'stderr' = 'stdout',
): Logger {
  const options = { level, base: { service: 'affinity', ...bindings } };
  return stream === 'stdout' ? pino(options) : pino(options, destination({ fd: 2, sync: true }));
}
