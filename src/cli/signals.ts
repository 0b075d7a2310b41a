import type { Logger } from '../ops/logger.js';

/**
 * Graceful on the first SIGTERM or SIGINT (finish the batch, commit, disconnect), immediate on
 * the second. Resolves with the exit code once the graceful stop is done.
 */
export function stopOnSignals(logger: Logger, stop: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(130);
      }
      stopping = true;
      logger.info({ signal }, 'stopping gracefully; send the signal again to exit at once');
      stop().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, 'graceful stop failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
