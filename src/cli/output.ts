/**
 * What a command prints as its product, not as a log: its result on stdout (the JSON a script
 * reads, or a table) and usage text. Diagnostics of the one-shot commands (progress, bad rows,
 * failures) are pino lines on stderr (`commandLogger`), so that stdout holds the result alone.
 */
import type { Logger } from '../ops/logger.js';
import { createLogger } from '../ops/logger.js';

/** The command's result, one line or block, on stdout. */
export function printResult(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Usage text after a usage error, on stderr (stdout stays empty for a failed command). */
export function printUsageError(text: string): void {
  process.stderr.write(`${text}\n`);
}

/** The logger of a one-shot command: pino on stderr, at AFFINITY_LOG_LEVEL (default info). */
export function commandLogger(command: string, level?: string): Logger {
  const resolved = level ?? process.env['AFFINITY_LOG_LEVEL'] ?? 'info';
  return createLogger(resolved, { role: command }, 'stderr');
}
