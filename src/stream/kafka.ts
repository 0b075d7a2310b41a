/**
 * A thin layer over kafkajs: the client with its log lines routed to pino, topic creation,
 * and the dead-letter sink.
 */
import { Kafka, logLevel } from 'kafkajs';
import type { Admin, ITopicConfig, LogEntry, Producer } from 'kafkajs';
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

/**
 * Sends rejected messages, with their original bytes, to the dead-letter topic. The reason and
 * source position travel as headers, so a replay tool reproduces the original message exactly.
 */
export class DeadLetterSink {
  constructor(
    private readonly producer: Producer,
    private readonly topic: string,
  ) {}

  async send(letters: readonly DeadLetter[]): Promise<void> {
    if (letters.length === 0) return;
    await this.producer.send({
      topic: this.topic,
      acks: -1,
      messages: letters.map((letter) => ({
        key: letter.key,
        value: letter.value,
        headers: {
          'affinity-reason': letter.reason,
          'affinity-detail': letter.detail,
          'affinity-source-topic': letter.sourceTopic,
          'affinity-source-partition': String(letter.partition),
          'affinity-source-offset': letter.offset,
          'affinity-failed-at-ms': String(Date.now()),
        },
      })),
    });
  }
}
