/**
 * Every setting of the service, read from the environment once at start-up, checked, and handed
 * on frozen. Each variable is documented in docs/configuration.md; an invalid one stops start-up
 * with a message naming it and the rule it broke.
 */
import { AffinityError } from '../errors.js';
import { DEFAULT_SIGNALS_SPEC, parseSignals } from '../events/types.js';
import type { Signals } from '../events/types.js';
import { parseDurationMs } from './duration.js';

export interface DualSettings {
  readonly enabled: boolean;
  readonly a0: number;
  readonly lambda: number;
  readonly nu: number;
  readonly halfLifeMs: number;
  readonly tolerance: number;
  readonly maxIterations: number;
}

export interface Config {
  readonly kafkaBrokers: readonly string[];
  readonly kafkaClientId: string;
  readonly eventsTopic: string;
  readonly deadLetterTopic: string;
  readonly itemsTopic: string;
  readonly groupId: string;
  readonly neuralGroupId: string;
  readonly redisUrl: string;
  readonly keyPrefix: string;
  readonly signals: Signals;
  readonly halfLivesMs: readonly number[];
  readonly historyMaxEvents: number;
  readonly historyHalfLifeMs: number;
  readonly cosineThresholds: readonly number[];
  readonly pendingMaxEvents: number;
  readonly userIdleTtlMs: number;
  readonly maxMessageBytes: number;
  readonly maxEventValue: number;
  readonly fetchMaxBytesPerPartition: number;
  readonly kafkaSessionTimeoutMs: number;
  readonly flushIntervalMs: number;
  readonly flushMaxUsers: number;
  /** Largest share of the worker's time spent flushing; the interval stretches to keep it. */
  readonly flushTimeShare: number;
  readonly stateCacheUsers: number;
  readonly maxEventAgeMs: number;
  readonly maxEventFutureMs: number;
  readonly embeddingCacheItems: number;
  readonly httpPort: number;
  readonly httpHost: string;
  readonly logLevel: string;
  readonly dual: DualSettings;
  readonly neuralModelDir: string | null;
  readonly neuralModelPollMs: number;
}

type Env = Readonly<Record<string, string | undefined>>;

/** Reads and checks the whole configuration; throws AffinityError CONFIG_INVALID on any fault. */
export function loadConfig(env: Env = process.env): Config {
  const read = new EnvReader(env);

  const config: Config = {
    kafkaBrokers: read.list('AFFINITY_KAFKA_BROKERS', '127.0.0.1:19092'),
    kafkaClientId: read.text('AFFINITY_KAFKA_CLIENT_ID', 'affinity'),
    eventsTopic: read.text('AFFINITY_EVENTS_TOPIC', 'interactions'),
    deadLetterTopic: read.text('AFFINITY_DEAD_LETTER_TOPIC', 'interactions-dead-letter'),
    itemsTopic: read.text('AFFINITY_ITEMS_TOPIC', 'item-embeddings'),
    groupId: read.text('AFFINITY_GROUP_ID', 'affinity-worker'),
    neuralGroupId: read.text('AFFINITY_NEURAL_GROUP_ID', 'affinity-neural-worker'),
    redisUrl: read.text('AFFINITY_REDIS_URL', 'redis://127.0.0.1:6379'),
    keyPrefix: read.text('AFFINITY_KEY_PREFIX', 'aff:'),
    signals: read.parsed('AFFINITY_SIGNALS', DEFAULT_SIGNALS_SPEC, parseSignals),
    halfLivesMs: read.durations('AFFINITY_HALF_LIVES', '1h,6h,365d'),
    historyMaxEvents: read.integer('AFFINITY_HISTORY_MAX_EVENTS', 200, 1, 10_000),
    historyHalfLifeMs: read.duration('AFFINITY_HISTORY_HALF_LIFE', '30d'),
    cosineThresholds: read.numbers('AFFINITY_COSINE_THRESHOLDS', '0,0.4', -1, 1),
    pendingMaxEvents: read.integer('AFFINITY_PENDING_MAX_EVENTS', 1_000, 0, 100_000),
    userIdleTtlMs: read.duration('AFFINITY_USER_IDLE_TTL', '90d'),
    maxMessageBytes: read.integer('AFFINITY_MAX_MESSAGE_BYTES', 16_384, 64, 10_000_000),
    maxEventValue: read.number('AFFINITY_MAX_EVENT_VALUE', 1_000_000, 0, 1e12),
    fetchMaxBytesPerPartition: read.integer(
      'AFFINITY_FETCH_MAX_BYTES_PER_PARTITION',
      1_048_576,
      1_024,
      104_857_600,
    ),
    kafkaSessionTimeoutMs: read.duration('AFFINITY_KAFKA_SESSION_TIMEOUT', '30s'),
    flushIntervalMs: read.duration('AFFINITY_FLUSH_INTERVAL', '500ms'),
    // As many as the state cache holds: a changed state is held anyway until it is written.
    flushMaxUsers: read.integer('AFFINITY_FLUSH_MAX_USERS', 100_000, 1, 10_000_000),
    flushTimeShare: read.number('AFFINITY_FLUSH_TIME_SHARE', 0.1, 0.01, 1),
    stateCacheUsers: read.integer('AFFINITY_STATE_CACHE_USERS', 100_000, 0, 100_000_000),
    maxEventAgeMs: read.duration('AFFINITY_MAX_EVENT_AGE', '3650d'),
    maxEventFutureMs: read.duration('AFFINITY_MAX_EVENT_FUTURE', '1h'),
    embeddingCacheItems: read.integer('AFFINITY_EMBEDDING_CACHE_ITEMS', 1_000_000, 0, 1e9),
    httpPort: read.integer('AFFINITY_HTTP_PORT', 9464, 0, 65_535),
    httpHost: read.text('AFFINITY_HTTP_HOST', '0.0.0.0'),
    logLevel: read.choice('AFFINITY_LOG_LEVEL', 'info', [
      'fatal',
      'error',
      'warn',
      'info',
      'debug',
      'trace',
      'silent',
    ]),
    dual: {
      enabled: read.boolean('AFFINITY_DUAL_ENABLED', true),
      a0: read.number('AFFINITY_DUAL_A0', 0.01, 0, 1e6),
      lambda: read.number('AFFINITY_DUAL_LAMBDA', 1, 0, 1e6),
      nu: read.number('AFFINITY_DUAL_NU', 0.5, 0, 2),
      halfLifeMs: read.duration('AFFINITY_DUAL_HALF_LIFE', '365d'),
      tolerance: read.number('AFFINITY_DUAL_TOLERANCE', 1e-6, 1e-12, 0.5),
      maxIterations: read.integer('AFFINITY_DUAL_MAX_ITERATIONS', 200, 1, 100_000),
    },
    neuralModelDir: read.optionalText('AFFINITY_NEURAL_MODEL_DIR'),
    neuralModelPollMs: read.duration('AFFINITY_NEURAL_MODEL_POLL', '30s'),
  };

  checkCrossFieldRules(config);
  return deepFreeze(config);
}

function checkCrossFieldRules(config: Config): void {
  if (config.dual.enabled && config.dual.lambda === 0 && config.dual.a0 === 0) {
    throw configError(
      'AFFINITY_DUAL_LAMBDA',
      'must be > 0 when AFFINITY_DUAL_A0 is 0, or the dual system may be singular',
    );
  }
  if (config.kafkaSessionTimeoutMs < 1_000) {
    throw configError(
      'AFFINITY_KAFKA_SESSION_TIMEOUT',
      'must be at least 1s (heartbeats go every third)',
    );
  }
  if (config.flushIntervalMs >= config.kafkaSessionTimeoutMs) {
    throw configError(
      'AFFINITY_FLUSH_INTERVAL',
      'must be shorter than AFFINITY_KAFKA_SESSION_TIMEOUT',
    );
  }
  if (new Set(config.halfLivesMs).size !== config.halfLivesMs.length) {
    throw configError('AFFINITY_HALF_LIVES', 'lists the same half-life twice');
  }
  const topics = [config.eventsTopic, config.deadLetterTopic, config.itemsTopic];
  if (new Set(topics).size !== topics.length) {
    throw configError('AFFINITY_DEAD_LETTER_TOPIC', 'the three topics must have distinct names');
  }
}

function configError(name: string, rule: string, cause?: unknown): AffinityError {
  return new AffinityError('CONFIG_INVALID', `${name} ${rule}`, { cause });
}

class EnvReader {
  constructor(private readonly env: Env) {}

  raw(name: string, fallback: string): string {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? fallback : value.trim();
  }

  text(name: string, fallback: string): string {
    return this.raw(name, fallback);
  }

  optionalText(name: string): string | null {
    const value = this.env[name]?.trim();
    return value ? value : null;
  }

  list(name: string, fallback: string): string[] {
    const items = this.raw(name, fallback)
      .split(',')
      .map((part) => part.trim())
      .filter((part) => part !== '');
    if (items.length === 0) throw configError(name, 'must list at least one value');
    return items;
  }

  parsed<T>(name: string, fallback: string, parse: (text: string) => T): T {
    try {
      return parse(this.raw(name, fallback));
    } catch (err) {
      throw configError(name, `is invalid: ${(err as Error).message}`, err);
    }
  }

  number(name: string, fallback: number, min: number, max: number): number {
    const value = Number(this.raw(name, String(fallback)));
    if (!Number.isFinite(value) || value < min || value > max) {
      throw configError(name, `must be a number in [${min}, ${max}]`);
    }
    return value;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.number(name, fallback, min, max);
    if (!Number.isInteger(value)) throw configError(name, 'must be an integer');
    return value;
  }

  numbers(name: string, fallback: string, min: number, max: number): number[] {
    return this.list(name, fallback).map((part) => {
      const value = Number(part);
      if (!Number.isFinite(value) || value < min || value > max) {
        throw configError(name, `entry "${part}" must be a number in [${min}, ${max}]`);
      }
      return value;
    });
  }

  duration(name: string, fallback: string): number {
    const value = this.parsed(name, fallback, parseDurationMs);
    if (value <= 0) throw configError(name, 'must be a positive duration');
    return value;
  }

  durations(name: string, fallback: string): number[] {
    return this.list(name, fallback).map((part) => {
      let value: number;
      try {
        value = parseDurationMs(part);
      } catch (err) {
        throw configError(name, `entry is invalid: ${(err as Error).message}`, err);
      }
      if (value <= 0) throw configError(name, `entry "${part}" must be a positive duration`);
      return value;
    });
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name, String(fallback)).toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(value)) return true;
    if (['0', 'false', 'no', 'off'].includes(value)) return false;
    throw configError(name, 'must be true or false');
  }

  choice(name: string, fallback: string, allowed: readonly string[]): string {
    const value = this.raw(name, fallback);
    if (!allowed.includes(value)) throw configError(name, `must be one of ${allowed.join(', ')}`);
    return value;
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !(value instanceof Map)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
