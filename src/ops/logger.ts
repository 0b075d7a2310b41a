import { pino } from 'pino';
import type { Logger } from 'pino';

export type { Logger };

/** JSON lines on stdout; components bind their identity fields with `logger.child`. */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { service: 'affinity', ...bindings } });
}
