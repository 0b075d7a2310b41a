/**
 * The method parameters the offline tools run with: the service's own configuration (the same
 * AFFINITY_* variables the workers read, so that offline and online agree), with optional
 * overrides for the evaluation's sweeps and for one-off backfills. Overrides are checked with
 * the rules `loadConfig` applies to the variables they stand for.
 */
import type { Config, DualSettings } from '../config/config.js';
import { AffinityError } from '../errors.js';
import type { Signals } from '../events/types.js';
import type { AggregateLayout } from '../features/aggregate.js';
import type { FeatureSettings } from '../reader/features.js';

export interface MethodSettings {
  readonly signals: Signals;
  readonly halfLivesMs: readonly number[];
  readonly historyMaxEvents: number;
  readonly historyHalfLifeMs: number;
  readonly cosineThresholds: readonly number[];
  readonly pendingMaxEvents: number;
  /** AFFINITY_MAX_EVENT_VALUE: a log row with a larger `value` is a bad row, as online. */
  readonly maxEventValue: number;
  readonly dual: DualSettings;
}

/** Every field optional; a given one replaces the configured value. */
export interface MethodOverrides {
  readonly halfLivesMs?: readonly number[];
  readonly historyMaxEvents?: number;
  readonly historyHalfLifeMs?: number;
  readonly cosineThresholds?: readonly number[];
  readonly dual?: Partial<DualSettings>;
}

/** The configured method parameters with `overrides` applied; throws USAGE on a broken rule. */
export function methodSettings(config: Config, overrides: MethodOverrides = {}): MethodSettings {
  const settings: MethodSettings = {
    signals: config.signals,
    halfLivesMs: overrides.halfLivesMs ?? config.halfLivesMs,
    historyMaxEvents: overrides.historyMaxEvents ?? config.historyMaxEvents,
    historyHalfLifeMs: overrides.historyHalfLifeMs ?? config.historyHalfLifeMs,
    cosineThresholds: overrides.cosineThresholds ?? config.cosineThresholds,
    pendingMaxEvents: config.pendingMaxEvents,
    maxEventValue: config.maxEventValue,
    dual: { ...config.dual, ...overrides.dual },
  };
  checkSettings(settings);
  return settings;
}

/** The same settings with some fields replaced (a point of a sweep), checked again. */
export function withOverrides(base: MethodSettings, overrides: MethodOverrides): MethodSettings {
  const settings: MethodSettings = {
    ...base,
    ...definedFields(overrides),
    dual: { ...base.dual, ...overrides.dual },
  };
  checkSettings(settings);
  return settings;
}

/** The overrides other than `dual` that are set. */
function definedFields(overrides: MethodOverrides): Partial<MethodSettings> {
  const entries = Object.entries(overrides).filter(
    ([key, value]) => key !== 'dual' && value !== undefined,
  );
  return Object.fromEntries(entries);
}

export function layoutOf(settings: MethodSettings, dim: number): AggregateLayout {
  return { dim, halfLivesMs: settings.halfLivesMs };
}

export function featureSettingsOf(settings: MethodSettings, dim: number): FeatureSettings {
  return {
    layout: layoutOf(settings, dim),
    historyHalfLifeMs: settings.historyHalfLifeMs,
    cosineThresholds: settings.cosineThresholds,
    signals: settings.signals,
  };
}

/** The rules of config.ts for the fields an override can set. */
function checkSettings(settings: MethodSettings): void {
  const { dual } = settings;
  if (new Set(settings.halfLivesMs).size !== settings.halfLivesMs.length)
    throw usage('half-lives: the same half-life is listed twice');
  if (settings.halfLivesMs.some((ms) => !(ms > 0)))
    throw usage('half-lives: every half-life must be a positive duration');
  if (!(settings.historyHalfLifeMs > 0) || !(dual.halfLifeMs > 0))
    throw usage('history and dual half-lives must be positive durations');
  if (settings.cosineThresholds.some((value) => !(value >= -1 && value <= 1)))
    throw usage('cosine thresholds must lie in [-1, 1]');
  if (!Number.isInteger(settings.historyMaxEvents) || settings.historyMaxEvents < 1)
    throw usage('history length must be a positive integer');
  if (!(dual.a0 >= 0) || !(dual.lambda >= 0) || !(dual.nu >= 0 && dual.nu <= 2))
    throw usage('dual: a0 and lambda must be >= 0 and nu in [0, 2]');
  if (dual.enabled && dual.a0 === 0 && dual.lambda === 0)
    throw usage('dual: lambda must be > 0 when a0 is 0, or the system may be singular');
}

function usage(message: string): AffinityError {
  return new AffinityError('USAGE', message);
}
