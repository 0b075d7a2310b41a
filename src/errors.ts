/**
 * Errors that cross a module boundary carry a stable code, a retry flag and their cause, so a
 * caller classifies them by `instanceof` and `code` rather than by message text.
 */
export type AffinityErrorCode =
  | 'CONFIG_INVALID'
  | 'EVENT_INVALID'
  | 'STATE_CORRUPT'
  | 'STATE_CONFLICT'
  | 'REDIS_UNAVAILABLE'
  | 'CATALOGUE_MISSING'
  | 'CATALOGUE_MISMATCH'
  | 'SHUTDOWN_INCOMPLETE'
  | 'ENGINE_STOPPED'
  | 'ENGINE_FAILED'
  | 'USAGE';

export class AffinityError extends Error {
  readonly code: AffinityErrorCode;
  readonly retriable: boolean;

  constructor(
    code: AffinityErrorCode,
    message: string,
    options: { cause?: unknown; retriable?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AffinityError';
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}
