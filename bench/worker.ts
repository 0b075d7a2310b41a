/**
 * Events per second and worker CPU per event, beside a bare kafkajs consumer reading the same
 * topic in the same run (the ceiling the worker is measured against).
 *
 * Setup: a fresh topic with N events (default 4,000,000) over U users (default 5,000), a
 * catalogue of 10,000 random unit vectors at dimension 384 loaded into Redis, default signals
 * and half-lives. Three consumers then read the whole topic, one after the other, each in its
 * own consumer group: the bare consumer (resolves and commits, nothing else), the worker with
 * method 1 alone, and the worker with methods 1 and 2. The bare consumer fetches with the
 * worker's settings (AFFINITY_FETCH_MAX_BYTES_PER_PARTITION and the fetch wait), so both read
 * the same batches. Each rate is measured from the first batch read to the last event
 * acknowledged, so group joins are left out; CPU is this process's
 * user + system time over the same window (the Redis server's CPU is not included). The
 * worker's line also says where its time went, from its own metrics.
 *
 * Why 4,000,000: the worker's run has two costs that do not grow with the stream, its start
 * (5,000 new users read, 10,000 embeddings fetched: about 0.4 s) and its end (every user's
 * state written by the last flush: 0.6 to 1.2 s), and a sustained rate is one they do not
 * dominate. At 1,000,000 events they were 35 to 47 % of the worker's run, and whether a
 * second flush fell inside it depended on the machine's speed that minute, so the ratio to the
 * bare consumer moved between 0.46 and 0.64 from run to run on one topic; at 2, 4 and 8
 * million it settled (docs/benchmarks.md, round of 2026-12-04 11:05). `--events=1000000` gives
 * the shorter run.
 *
 * Usage: npm run bench:worker -- [--json] [--events=N] [--users=U] [--dim=D] [--runs=bare,m1,m12]
 *   [--keep-topic | --topic=T]
 * `--keep-topic` leaves the produced topic in place and prints its name; `--topic=T` then reads
 * it again (give the same --events) instead of producing a new one, so that repeated
 * measurements share their input and skip the production. Delete it with the Kafka tools.
 * Needs Kafka and Redis (npm run services:up). Prints figures; asserts nothing.
 */
import { performance } from 'node:perf_hooks';
import { Kafka, logLevel } from 'kafkajs';
import { Redis } from 'ioredis';
import type { Config } from '../src/config/config.js';
import { loadConfig } from '../src/config/config.js';
import { ItemStore } from '../src/items/store.js';
import { createLogger } from '../src/ops/logger.js';
import { WorkerMetrics, createRegistry } from '../src/ops/metrics.js';
import { AffinityWorker, eventsConsumerSettings } from '../src/workers/events-worker.js';

interface Options {
  json: boolean;
  runs: Set<string>;
  events: number;
  users: number;
  dim: number;
  /** An existing topic of `events` events from an earlier run, read instead of producing one. */
  topic: string | null;
  keepTopic: boolean;
}

interface RunFigures {
  eventsPerSecond: number;
  cpuMicrosecondsPerEvent: number;
  seconds: number;
  /** Of those, until every event was read (the rest: the last flush, its wait and its write). */
  readSeconds: number;
  /** Where a worker's time went, from its own metrics (absent for the bare consumer). */
  breakdown?: Breakdown;
}

interface Breakdown {
  batches: number;
  /** Wall time inside the batch handler: decoding, applying, waiting for a flush. */
  batchSeconds: number;
  flushes: number;
  /** Wall time from sending a flush's writes to Redis's last reply, summed. */
  redisWriteSeconds: number;
  dualSolves: number;
  dualSolveSeconds: number;
}

const BROKERS = process.env['AFFINITY_KAFKA_BROKERS'] ?? '127.0.0.1:19092';
const REDIS_URL = process.env['AFFINITY_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const ITEMS = 10_000;
const POLL_MS = 10;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const run = `bench-${Date.now().toString(36)}`;
  const kafka = new Kafka({
    clientId: 'bench',
    brokers: BROKERS.split(','),
    logLevel: logLevel.NOTHING,
  });
  const topic = options.topic ?? `${run}-events`;
  if (options.topic === null) {
    log(options, `producing ${options.events} events to ${topic}`);
    await produceEvents(kafka, topic, options);
  }

  try {
    const figures: Figures = { bare: null, method1: null, methods12: null };
    if (options.runs.has('bare'))
      figures.bare = await measureBare(kafka, topic, options, `${run}-bare`);
    if (options.runs.has('m1'))
      figures.method1 = await measureWorker(topic, options, `${run}-m1`, false);
    if (options.runs.has('m12'))
      figures.methods12 = await measureWorker(topic, options, `${run}-m12`, true);
    report(options, figures);
  } finally {
    if (options.topic === null && !options.keepTopic) await deleteTopic(kafka, topic);
    if (options.keepTopic) log(options, `topic ${topic} kept`);
  }
}

async function produceEvents(kafka: Kafka, topic: string, options: Options): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  await admin.disconnect();

  const producer = kafka.producer();
  await producer.connect();
  const nowMs = Date.now();
  const types = ['click', 'click', 'click', 'like', 'purchase', 'dislike', 'skip'];
  for (let start = 0; start < options.events; start += 5_000) {
    const messages = [];
    for (let n = start; n < Math.min(options.events, start + 5_000); n++) {
      const user = `u${(n * 7_919) % options.users}`;
      const event = {
        user,
        item: `i${(n * 104_729) % ITEMS}`,
        ts: nowMs - (options.events - n) * 10,
        type: types[n % types.length],
      };
      messages.push({ key: user, value: JSON.stringify(event) });
    }
    await producer.send({ topic, messages, acks: -1 });
  }
  await producer.disconnect();
}

async function measureBare(
  kafka: Kafka,
  topic: string,
  options: Options,
  groupId: string,
): Promise<RunFigures> {
  // The worker's own fetch settings, so that both read the topic in batches of one size.
  const config = benchConfig(topic, groupId, false);
  const consumer = kafka.consumer({ ...eventsConsumerSettings(config), groupId });
  let consumed = 0;
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, commitOffsetsIfNecessary }) => {
      const last = batch.messages[batch.messages.length - 1];
      if (!last) return;
      consumed += batch.messages.length;
      resolveOffset(last.offset);
      await commitOffsetsIfNecessary();
    },
  });
  const figures = await measure(
    options,
    () => consumed,
    () => consumed,
  );
  await consumer.disconnect();
  await deleteGroup(kafka, groupId);
  return figures;
}

async function measureWorker(
  topic: string,
  options: Options,
  run: string,
  dual: boolean,
): Promise<RunFigures> {
  const config = benchConfig(topic, run, dual);
  await loadRandomCatalogue(config, options.dim);
  const metrics = new WorkerMetrics(createRegistry(false));
  const worker = new AffinityWorker(config, createLogger('silent'), metrics);
  await worker.start();
  const total = async (counter: { get(): Promise<{ values: { value: number }[] }> }) =>
    (await counter.get()).values.reduce((sum, sample) => sum + sample.value, 0);

  let consumed = 0;
  let applied = 0;
  const poller = setInterval(() => {
    void total(metrics.eventsConsumed).then((value) => (consumed = value));
    void total(metrics.eventsApplied).then((value) => (applied = value));
  }, POLL_MS);
  const figures = await measure(
    options,
    () => consumed,
    () => applied,
  );
  clearInterval(poller);
  figures.breakdown = await breakdown(metrics);
  await worker.close();
  await cleanup(config);
  return figures;
}

/**
 * Times from the first event read (`started()` > 0) until `done()` reaches the event count:
 * the first batch's fetch is left out, the last flush's writing is in. Every event counts,
 * the first batch's too: its decoding and applying happen inside the window (leaving its events
 * out, as this did until 2026-12-04, charged the worker for work it did not credit, the more so
 * the larger the batches).
 */
async function measure(
  options: Options,
  started: () => number,
  done: () => number,
): Promise<RunFigures> {
  while (started() === 0) await tick();
  const startedMs = performance.now();
  const startedCpu = process.cpuUsage();
  let readSeconds = NaN;
  while (done() < options.events) {
    if (Number.isNaN(readSeconds) && started() >= options.events)
      readSeconds = (performance.now() - startedMs) / 1_000;
    await tick();
  }

  const seconds = (performance.now() - startedMs) / 1_000;
  if (Number.isNaN(readSeconds)) readSeconds = seconds;
  const cpu = process.cpuUsage(startedCpu);
  return {
    eventsPerSecond: options.events / seconds,
    cpuMicrosecondsPerEvent: (cpu.user + cpu.system) / options.events,
    seconds,
    readSeconds,
  };
}

async function breakdown(metrics: WorkerMetrics): Promise<Breakdown> {
  const summary = async (histogram: { get(): Promise<{ values: readonly Sample[] }> }) => {
    const { values } = await histogram.get();
    const find = (suffix: string) =>
      values.find((sample) => sample.metricName?.endsWith(suffix))?.value ?? 0;
    return { count: find('_count'), sum: find('_sum') };
  };
  const batch = await summary(metrics.batchSeconds);
  const write = await summary(metrics.redisWriteSeconds);
  const solve = await summary(metrics.dualSolveSeconds);
  return {
    batches: batch.count,
    batchSeconds: batch.sum,
    flushes: write.count,
    redisWriteSeconds: write.sum,
    dualSolves: solve.count,
    dualSolveSeconds: solve.sum,
  };
}

interface Sample {
  value: number;
  metricName?: string;
}

function benchConfig(topic: string, run: string, dual: boolean): Config {
  return loadConfig({
    ...process.env,
    AFFINITY_KAFKA_BROKERS: BROKERS,
    AFFINITY_REDIS_URL: REDIS_URL,
    AFFINITY_EVENTS_TOPIC: topic,
    AFFINITY_DEAD_LETTER_TOPIC: `${run}-dead-letter`,
    AFFINITY_ITEMS_TOPIC: `${run}-items`,
    AFFINITY_GROUP_ID: run,
    AFFINITY_KEY_PREFIX: `${run}:`,
    AFFINITY_DUAL_ENABLED: String(dual),
    AFFINITY_LOG_LEVEL: 'silent',
  });
}

async function loadRandomCatalogue(config: Config, dim: number): Promise<void> {
  const redis = new Redis(config.redisUrl);
  let seed = 12_345;
  const random = () => {
    seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
    return seed / 2_147_483_648 - 0.5;
  };
  const ids = Array.from({ length: ITEMS }, (_, i) => `i${i}`);
  const vectors = new Float32Array(ITEMS * dim);
  for (let row = 0; row < ITEMS; row++) {
    let sumOfSquares = 0;
    for (let k = 0; k < dim; k++) {
      const x = random();
      vectors[row * dim + k] = x;
      sumOfSquares += x * x;
    }
    for (let k = 0; k < dim; k++) vectors[row * dim + k]! /= Math.sqrt(sumOfSquares);
  }
  await new ItemStore(redis, { prefix: config.keyPrefix }).replaceAll(ids, vectors, {
    dim,
    centered: false,
    normalized: true,
    mean: null,
  });
  await redis.quit();
}

async function cleanup(config: Config): Promise<void> {
  const redis = new Redis(config.redisUrl);
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${config.keyPrefix}*`, 'COUNT', 1_000);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  await redis.quit();

  const kafka = new Kafka({
    clientId: 'bench',
    brokers: [...config.kafkaBrokers],
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteGroups([config.groupId, `${config.groupId}-items`]).catch(() => undefined);
  await admin
    .deleteTopics({ topics: [config.deadLetterTopic, config.itemsTopic] })
    .catch(() => undefined);
  await admin.disconnect();
}

async function deleteTopic(kafka: Kafka, topic: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
}

async function deleteGroup(kafka: Kafka, groupId: string): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteGroups([groupId]).catch(() => undefined);
  await admin.disconnect();
}

interface Figures {
  bare: RunFigures | null;
  method1: RunFigures | null;
  methods12: RunFigures | null;
}

function report(options: Options, figures: Figures): void {
  const { bare, method1 } = figures;
  const ratio = bare && method1 ? method1.eventsPerSecond / bare.eventsPerSecond : null;
  const result = {
    events: options.events,
    users: options.users,
    dim: options.dim,
    bare: figures.bare,
    worker_method1: figures.method1,
    worker_methods12: figures.methods12,
    method1_to_bare_ratio: ratio,
    target: 'worker (method 1) sustains at least half the bare consumer rate',
    target_met: ratio === null ? null : ratio >= 0.5,
  };
  if (options.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  console.log(`\nevents ${options.events}, users ${options.users}, dim ${options.dim}`);
  console.log('run                       events/s   cpu µs/event   seconds   (all read at)');
  const rows = [
    ['bare kafkajs consumer', figures.bare],
    ['worker, method 1', figures.method1],
    ['worker, methods 1+2', figures.methods12],
  ] as const;
  for (const [name, run] of rows) {
    if (!run) continue;
    const rate = run.eventsPerSecond.toFixed(0).padStart(11);
    const cpu = run.cpuMicrosecondsPerEvent.toFixed(1).padStart(12);
    const seconds = run.seconds.toFixed(2).padStart(7);
    const read = run.readSeconds.toFixed(2).padStart(7);
    console.log(`${name.padEnd(22)} ${rate}   ${cpu}   ${seconds}   ${read}`);
    if (run.breakdown) console.log(`${''.padEnd(22)} ${describe(run.breakdown)}`);
  }
  if (ratio !== null) {
    const verdict = ratio >= 0.5 ? 'met' : 'NOT met';
    console.log(`method 1 / bare = ${ratio.toFixed(2)} (target ≥ 0.5: ${verdict})`);
  }
}

function describe(b: Breakdown): string {
  const parts = [
    `${b.batches} batches ${b.batchSeconds.toFixed(2)} s`,
    `${b.flushes} flushes ${b.redisWriteSeconds.toFixed(2)} s to Redis's reply`,
  ];
  if (b.dualSolves > 0) parts.push(`${b.dualSolves} solves ${b.dualSolveSeconds.toFixed(2)} s`);
  return parts.join(', ');
}

function parseOptions(args: readonly string[]): Options {
  const options: Options = {
    json: false,
    runs: new Set(['bare', 'm1', 'm12']),
    events: 4_000_000,
    users: 5_000,
    dim: 384,
    topic: null,
    keepTopic: false,
  };
  for (const arg of args) {
    const [name, value] = arg.split('=');
    if (name === '--json') options.json = true;
    else if (name === '--events') options.events = Number(value);
    else if (name === '--users') options.users = Number(value);
    else if (name === '--dim') options.dim = Number(value);
    else if (name === '--runs') options.runs = new Set((value ?? '').split(','));
    else if (name === '--topic') options.topic = value ?? null;
    else if (name === '--keep-topic') options.keepTopic = true;
    else
      throw new Error(
        `unknown argument ${arg}; expected --json, --events=N, --users=U, --dim=D, --runs=bare,m1,m12, --topic=T, --keep-topic`,
      );
  }
  return options;
}

function log(options: Options, message: string): void {
  if (!options.json) console.error(message);
}

function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, POLL_MS));
}

await main();
