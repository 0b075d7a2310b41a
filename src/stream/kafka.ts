/**
 * A thin layer over kafkajs: the client with its log lines routed to pino, topic creation,
 * and the dead-letter sink.
 */
import { Kafka, logLevel } from 'kafkajs';
import type { Admin, ITopicConfig, LogEntry, Message, Producer } from 'kafkajs';
import type { Logger } from '../ops/logger.js';
import type { RejectReason } from './decode.js';

export function createKafka(brokers: readonly string[], clientId: string, logger: Logger): Kafka {
  const kafkaLogger = logger.child({ component: 'kafkajs' });
  return new Kafka({
    clientId,
    brokers: [...brokers],
    logLevel: logLevel.WARN,
    logCreator: () => (entry: LogEntry) => logKafkaEntry(kafkaLogger, entry),
  });
}

function logKafkaEntry(logger: Logger, entry: LogEntry): void {
  const { message, ...fields } = entry.log;
  const context = { namespace: entry.namespace, kafkaMessage: message, ...fields };
  if (entry.level === logLevel.ERROR) logger.error(context, 'kafka client error');
  else if (entry.level === logLevel.WARN) logger.warn(context, 'kafka client warning');
  else logger.debug(context, 'kafka client log');
}

/** Creates the missing topics; existing ones are left as they are. */
export async function ensureTopics(admin: Admin, topics: readonly ITopicConfig[]): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((topic) => !existing.has(topic.topic));
  if (missing.length === 0) return;
  await admin.createTopics({ topics: [...missing], waitForLeaders: true });
}

export interface DeadLetter {
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly reason: RejectReason | 'item_invalid';
  readonly detail: string;
  readonly sourceTopic: string;
  readonly partition: number;
  readonly offset: string;
}

/** Bytes of the original value kept when the whole does not fit the dead-letter topic. */
const TRUNCATED_VALUE_BYTES = 1_024;

/**
 * Sends rejected messages, with their original bytes, to the dead-letter topic. The reason and
 * source position travel as headers, so a replay tool reproduces the original message exactly.
 * A letter the dead-letter topic refuses as too large (its `max.message.bytes` below the source
 * topic's) is sent again with its value cut to TRUNCATED_VALUE_BYTES and the original length in
 * a header: a cut letter still says what went wrong where, a refused one would stop the worker.
 */
export class DeadLetterSink {
  constructor(
    private readonly producer: Producer,
    private readonly topic: string,
  ) {}

  async send(letters: readonly DeadLetter[]): Promise<void> {
    if (letters.length === 0) return;
    try {
      await this.produce(letters.map((letter) => toRecord(letter)));
    } catch (err) {
      if (!isMessageTooLarge(err)) throw err;
      for (const letter of letters) await this.sendAlone(letter);
    }
  }

  private async sendAlone(letter: DeadLetter): Promise<void> {
    try {
      await this.produce([toRecord(letter)]);
    } catch (err) {
      if (!isMessageTooLarge(err)) throw err;
      await this.produce([toRecord(letter, TRUNCATED_VALUE_BYTES)]);
    }
  }

  private async produce(messages: Message[]): Promise<void> {
    await this.producer.send({ topic: this.topic, acks: -1, messages });
  }
}

function toRecord(letter: DeadLetter, keepBytes?: number): Message {
  const headers: Record<string, string> = {
    'affinity-reason': letter.reason,
    'affinity-detail': letter.detail,
    'affinity-source-topic': letter.sourceTopic,
    'affinity-source-partition': String(letter.partition),
    'affinity-source-offset': letter.offset,
    'affinity-failed-at-ms': String(Date.now()),
  };
  let value = letter.value;
  if (keepBytes !== undefined && value !== null && value.length > keepBytes) {
    headers['affinity-truncated-from-bytes'] = String(value.length);
    value = value.subarray(0, keepBytes);
  }
  return { key: letter.key, value, headers };
}

/** Kafka protocol error code MESSAGE_TOO_LARGE (the protocol guide's error code table). */
const MESSAGE_TOO_LARGE_CODE = 10;

/**
 * kafkajs reports the broker's error as a protocol error carrying the protocol's numeric code,
 * possibly wrapped (`cause`, or `errors` of an aggregate). Classified by that code: kafkajs'
 * error classes are not reachable as named exports from an ES module.
 */
function isMessageTooLarge(err: unknown): boolean {
  for (let cause: unknown = err; cause instanceof Error; cause = cause.cause) {
    if ((cause as { code?: unknown }).code === MESSAGE_TOO_LARGE_CODE) return true;
    const nested = (cause as { errors?: unknown[] }).errors;
    if (Array.isArray(nested) && nested.some((inner) => isMessageTooLarge(inner))) return true;
  }
  return false;
}
