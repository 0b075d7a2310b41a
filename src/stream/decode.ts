/**
 * Validation of one `interactions` message. Every way a message can be wrong has a reason code
 * (the label of the dead-letter metric and a header of the dead-letter record) and a detail
 * sentence for the human who reads the dead-letter topic.
 */
import { isUtf8 } from 'node:buffer';
import type { InteractionEvent, Signals } from '../events/types.js';

export type RejectReason =
  | 'too_large'
  | 'not_json'
  | 'not_object'
  | 'missing_field'
  | 'wrong_type'
  | 'unknown_type'
  | 'non_finite'
  | 'timestamp_out_of_range'
  | 'invalid_value'
  | 'field_too_long';

export const REJECT_REASONS: readonly RejectReason[] = [
  'too_large',
  'not_json',
  'not_object',
  'missing_field',
  'wrong_type',
  'unknown_type',
  'non_finite',
  'timestamp_out_of_range',
  'invalid_value',
  'field_too_long',
];

export type DecodeResult =
  | { readonly ok: true; readonly event: InteractionEvent }
  | { readonly ok: false; readonly reason: RejectReason; readonly detail: string };

export interface DecodeLimits {
  readonly maxMessageBytes: number;
  /**
   * Largest `value`: a weight multiplier of 1e308 would overflow the sums to Infinity and
   * poison every later feature of the user, so it is refused here.
   */
  readonly maxEventValue: number;
  readonly maxEventAgeMs: number;
  readonly maxEventFutureMs: number;
  readonly signals: Signals;
}

export const MAX_ID_LENGTH = 1_024;

export function decodeEvent(
  value: Buffer | null,
  nowMs: number,
  limits: DecodeLimits,
): DecodeResult {
  if (value === null) return reject('not_json', 'the message has no value (a tombstone?)');
  if (value.length > limits.maxMessageBytes) {
    return reject('too_large', `${value.length} bytes, limit ${limits.maxMessageBytes}`);
  }

  // toString would replace a bad sequence with U+FFFD and change the ids without a word.
  if (!isUtf8(value)) return reject('not_json', 'the value is not valid UTF-8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8'));
  } catch (err) {
    return reject('not_json', `not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return reject('not_object', 'the value must be a JSON object');
  }
  return checkFields(parsed as Record<string, unknown>, nowMs, limits);
}

function checkFields(
  raw: Record<string, unknown>,
  nowMs: number,
  limits: DecodeLimits,
): DecodeResult {
  for (const name of ['user', 'item', 'ts', 'type'] as const) {
    if (raw[name] === undefined || raw[name] === null)
      return reject('missing_field', `"${name}" is missing`);
  }
  const textFault = checkText(raw, 'user') ?? checkText(raw, 'item') ?? checkText(raw, 'type');
  if (textFault) return textFault;
  if (raw['id'] !== undefined) {
    const idFault = checkText(raw, 'id');
    if (idFault) return idFault;
  }

  const numberFault = checkNumber(raw, 'ts') ?? checkOptionalNumber(raw, 'value');
  if (numberFault) return numberFault;

  const ts = raw['ts'] as number;
  if (!Number.isSafeInteger(ts))
    return reject('wrong_type', '"ts" must be integer epoch milliseconds');
  if (ts < nowMs - limits.maxEventAgeMs || ts > nowMs + limits.maxEventFutureMs) {
    return reject('timestamp_out_of_range', `"ts" ${ts} is too far from now (${nowMs})`);
  }
  const type = raw['type'] as string;
  if (!limits.signals.has(type))
    return reject('unknown_type', `event type "${type}" is not configured`);
  const value = raw['value'] as number | undefined;
  if (value !== undefined && value < 0) return reject('invalid_value', '"value" must be ≥ 0');
  if (value !== undefined && value > limits.maxEventValue) {
    return reject('invalid_value', `"value" ${value} is above the limit ${limits.maxEventValue}`);
  }

  return { ok: true, event: toEvent(raw, ts, type, value) };
}

function toEvent(
  raw: Record<string, unknown>,
  ts: number,
  type: string,
  value: number | undefined,
): InteractionEvent {
  const id = raw['id'] as string | undefined;
  return eventOf(raw['user'] as string, raw['item'] as string, ts, type, value, id);
}

/** An event of one of four shapes: literals rather than spreads, one object per event. */
export function eventOf(
  user: string,
  item: string,
  ts: number,
  type: string,
  value: number | undefined,
  id: string | undefined,
): InteractionEvent {
  if (id === undefined)
    return value === undefined ? { user, item, ts, type } : { user, item, ts, type, value };
  return value === undefined ? { user, item, ts, type, id } : { user, item, ts, type, value, id };
}

function checkText(raw: Record<string, unknown>, name: string): DecodeResult | null {
  const value = raw[name];
  if (typeof value !== 'string') return reject('wrong_type', `"${name}" must be a string`);
  if (value === '') return reject('missing_field', `"${name}" is empty`);
  if (value.length > MAX_ID_LENGTH) {
    return reject(
      'field_too_long',
      `"${name}" has ${value.length} characters, limit ${MAX_ID_LENGTH}`,
    );
  }
  return null;
}

function checkNumber(raw: Record<string, unknown>, name: string): DecodeResult | null {
  const value = raw[name];
  if (typeof value !== 'number') return reject('wrong_type', `"${name}" must be a number`);
  if (!Number.isFinite(value)) return reject('non_finite', `"${name}" is not finite`);
  return null;
}

function checkOptionalNumber(raw: Record<string, unknown>, name: string): DecodeResult | null {
  return raw[name] === undefined ? null : checkNumber(raw, name);
}

function reject(reason: RejectReason, detail: string): DecodeResult {
  return { ok: false, reason, detail };
}
