/**
 * Reading an interaction log for the offline tools: `readEventsFile` (CSV with a signal map, or
 * the topic's JSONL), then the events whose type the signals do not configure are set aside,
 * as the worker dead-letters them online. What was left out is counted for the report.
 */
import { AffinityError } from '../errors.js';
import type { InteractionEvent } from '../events/types.js';
import type { BadRow, SignalMap } from '../neural/events.js';
import { readEventsFile } from '../neural/events.js';
import type { MethodSettings } from './settings.js';
import { keepConfiguredTypes } from './replay.js';

export interface EventsInput {
  readonly path: string;
  readonly timestampUnit: 's' | 'ms';
  /** Required for a CSV log. */
  readonly signalMap?: SignalMap;
  /** Stop at the first bad row instead of counting it. */
  readonly strict?: boolean;
}

export interface EventsReport {
  readonly format: 'csv' | 'jsonl';
  /** Events kept. */
  readonly events: number;
  readonly badRowCount: number;
  /** The first bad rows, with their 1-based line numbers. */
  readonly badRows: readonly BadRow[];
  /** CSV rows whose signal matched no rule of the map. */
  readonly ignored: number;
  /** Events left out because their type is not in AFFINITY_SIGNALS, by type. */
  readonly unknownTypes: Readonly<Record<string, number>>;
}

/** The log's events with configured types, sorted by time, and what was left out. */
export async function readOfflineEvents(
  input: EventsInput,
  settings: MethodSettings,
): Promise<{ events: InteractionEvent[]; report: EventsReport }> {
  const read = await readEventsFile(input.path, {
    timestampUnit: input.timestampUnit,
    maxEventValue: settings.maxEventValue,
    ...(input.signalMap === undefined ? {} : { signalMap: input.signalMap }),
    ...(input.strict === undefined ? {} : { strict: input.strict }),
  });
  const { events, unknownTypes } = keepConfiguredTypes(read.events, settings);
  if (input.strict && unknownTypes.size > 0) {
    const types = [...unknownTypes.keys()].join(', ');
    throw new AffinityError(
      'USAGE',
      `${input.path}: event types not in AFFINITY_SIGNALS: ${types}`,
    );
  }

  const report: EventsReport = {
    format: read.format,
    events: events.length,
    badRowCount: read.badRowCount,
    badRows: read.badRows,
    ignored: read.ignored,
    unknownTypes: Object.fromEntries(unknownTypes),
  };
  return { events, report };
}
