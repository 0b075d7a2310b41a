// Readiness probe for a Kafka cluster: exits 0 as soon as a kafkajs admin client can describe
// the cluster (at least one broker in the metadata), 1 once the deadline has passed.
//
//   node scripts/wait-kafka.mjs [deadline-seconds] [--pid <broker-pid>] [--coordinator]
//
// Brokers come from AFFINITY_KAFKA_BROKERS (comma-separated, default 127.0.0.1:19092). A
// deadline of 0 makes exactly one attempt. With --pid, the probe gives up early when that
// process exits, so a broker that dies during start-up fails fast instead of after the
// whole deadline. The broker opens its client port only near the end of its start-up, so
// "connection refused" is the normal answer for the first seconds.
//
// With --coordinator, ready also means the group coordinator answers for a probe group. On
// a fresh broker the first group request creates __consumer_offsets, and until its
// partition is loaded the coordinator answers COORDINATOR_LOAD_IN_PROGRESS, which kafkajs
// 2.2.4 reports as a consumer crash (and restarts the consumer). Paying that here keeps it
// out of the first test.

import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';

const DEFAULT_BROKERS = '127.0.0.1:19092';
const DEFAULT_DEADLINE_SECONDS = 90;
const POLL_INTERVAL_MS = 500;
const CONNECTION_TIMEOUT_MS = 1_000;
const REQUEST_TIMEOUT_MS = 5_000;
const PROBE_GROUP_ID = 'affinity-wait-kafka';

function fail(message) {
  console.error(`wait-kafka: ${message}`);
  process.exit(2);
}

function readOptions() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { pid: { type: 'string' }, coordinator: { type: 'boolean', default: false } },
  });
  const deadlineArg = positionals[0] ?? String(DEFAULT_DEADLINE_SECONDS);
  const deadlineSeconds = Number(deadlineArg);
  if (!Number.isFinite(deadlineSeconds) || deadlineSeconds < 0) {
    fail(`deadline must be a number of seconds >= 0, got "${deadlineArg}"`);
  }
  const pid = values.pid === undefined ? undefined : Number(values.pid);
  if (pid !== undefined && !(Number.isInteger(pid) && pid > 0)) {
    fail(`--pid must be a positive integer, got "${values.pid}"`);
  }
  const brokers = (process.env.AFFINITY_KAFKA_BROKERS ?? DEFAULT_BROKERS)
    .split(',')
    .map((broker) => broker.trim())
    .filter((broker) => broker !== '');
  if (brokers.length === 0) {
    fail('AFFINITY_KAFKA_BROKERS is set but names no broker');
  }
  return { brokers, deadlineMs: deadlineSeconds * 1_000, pid, coordinator: values.coordinator };
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return err.code === 'EPERM';
  }
}

/** One attempt: connect, describe the cluster, disconnect. Returns the description. */
async function describeOnce(kafka, coordinator) {
  const admin = kafka.admin({ retry: { retries: 0 } });
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    if (cluster.brokers.length === 0) {
      throw new Error('metadata lists no broker yet');
    }
    if (coordinator) {
      // Throws on GROUP_COORDINATOR_NOT_AVAILABLE and COORDINATOR_LOAD_IN_PROGRESS.
      await admin.describeGroups([PROBE_GROUP_ID]);
    }
    return cluster;
  } finally {
    await admin.disconnect();
  }
}

async function main() {
  const { brokers, deadlineMs, pid, coordinator } = readOptions();
  const kafka = new Kafka({
    clientId: 'affinity-wait-kafka',
    brokers,
    connectionTimeout: CONNECTION_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    retry: { retries: 0 },
    // Refused connections are expected while the broker starts; the last error is reported.
    logLevel: logLevel.NOTHING,
  });
  const startedAt = Date.now();
  const deadline = startedAt + deadlineMs;
  let lastError;

  for (;;) {
    try {
      const cluster = await describeOnce(kafka, coordinator);
      const seconds = ((Date.now() - startedAt) / 1_000).toFixed(1);
      console.log(
        `wait-kafka: ${brokers.join(',')} ready after ${seconds} s ` +
          `(cluster ${cluster.clusterId}, ${cluster.brokers.length} broker(s))`,
      );
      return 0;
    } catch (err) {
      lastError = err;
    }

    if (pid !== undefined && !isAlive(pid)) {
      console.error(`wait-kafka: broker process ${pid} exited before ${brokers} answered`);
      return 1;
    }
    const remainingMs = deadline - Date.now();
    if (remainingMs <= 0) {
      break;
    }
    await sleep(Math.min(POLL_INTERVAL_MS, remainingMs));
  }

  const reason = lastError instanceof Error ? lastError.message : String(lastError);
  console.error(
    `wait-kafka: ${brokers.join(',')} not ready within ${deadlineMs / 1_000} s: ${reason}`,
  );
  return 1;
}

// Exit explicitly: a half-open connection from a failed attempt must not keep the probe alive.
process.exit(await main());
