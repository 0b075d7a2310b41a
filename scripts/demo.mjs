// `npm run demo`: the whole pipeline on synthetic sample data, end to end.
//
// 1. Brings up Kafka and Redis when they do not answer (scripts/services-up.sh).
// 2. Writes a SYNTHETIC catalogue (1,000 items in 8 topic clusters, dimension 64) and loads it
//    with `affinity items load --center`.
// 3. Starts `affinity worker` and streams 3,000 synthetic events of 30 users to it; each user
//    favours two clusters and dislikes one. It waits on the worker's own counters (its
//    /metrics), so the figure printed is what this run's worker applied.
// 4. Prints the features of a few candidates for three users, and the metrics address.
//
// Every run has its own topics, consumer groups, key prefix and event ids (`demo-run-<time>`), so
// it never touches other data and a second run is not skipped as duplicates of the first.
// They are deleted when the worker stops, and at start-up those of earlier runs whose worker
// is no longer running (an interrupted run) are too. The worker keeps running (Ctrl-C stops
// it) when the terminal is interactive.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Kafka, Partitioners, logLevel } from 'kafkajs';
import { Redis } from 'ioredis';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const DIM = 64;
const CLUSTERS = 8;
const ITEMS = 1_000;
const USERS = 30;
const EVENTS = 3_000;
const APPLY_DEADLINE_MS = 120_000;
const METRICS_POLL_MS = 200;
/** An earlier run younger than this may still be loading its catalogue: it is left alone. */
const STARTING_RUN_MS = 600_000;
const METRICS_PORT = process.env.AFFINITY_HTTP_PORT ?? '9464';
const BROKERS = (process.env.AFFINITY_KAFKA_BROKERS ?? '127.0.0.1:19092').split(',');
const REDIS_URL = process.env.AFFINITY_REDIS_URL ?? 'redis://127.0.0.1:6379';
/** This run's names start with `demo-run-<start ms, base 36>`. */
const RUN = `demo-run-${Date.now().toString(36)}`;
const RUN_NAME = /^(demo-run-[0-9a-z]+)[-:]/;
/** The names every run shared before runs had their own; `demo` stands for them as a run. */
const FIXED_NAMES = [
  'demo-interactions',
  'demo-interactions-dead-letter',
  'demo-item-embeddings',
  'demo-worker',
  'demo-worker-items',
];
const ENV = {
  ...process.env,
  AFFINITY_EVENTS_TOPIC: `${RUN}-interactions`,
  AFFINITY_DEAD_LETTER_TOPIC: `${RUN}-interactions-dead-letter`,
  AFFINITY_ITEMS_TOPIC: `${RUN}-item-embeddings`,
  AFFINITY_GROUP_ID: `${RUN}-worker`,
  AFFINITY_KEY_PREFIX: `${RUN}:`,
  AFFINITY_HTTP_PORT: METRICS_PORT,
  AFFINITY_LOG_LEVEL: process.env.AFFINITY_LOG_LEVEL ?? 'warn',
  // kafkajs warns once per process that v2 changed its default partitioner; the worker's
  // producer writes only dead letters, so the warning would be noise in the demo's output.
  KAFKAJS_NO_PARTITIONER_WARNING: '1',
};

function log(message) {
  console.log(`demo: ${message}`);
}

/** A small deterministic generator, so every demo run shows the same numbers. */
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state * 1_664_525 + 1_013_904_223) >>> 0;
    return state / 4_294_967_296;
  };
}

function gaussian(next) {
  return Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
}

function writeCatalogue(path) {
  const next = random(7);
  const centres = Array.from({ length: CLUSTERS }, () =>
    Array.from({ length: DIM }, () => gaussian(next)),
  );
  const lines = [];
  for (let i = 0; i < ITEMS; i++) {
    const centre = centres[i % CLUSTERS];
    // A shared offset (+1 on every component) mimics the common direction of real encoders.
    const embedding = centre.map((x) => x + 1 + 0.6 * gaussian(next));
    lines.push(JSON.stringify({ id: `item-${i}`, embedding }));
  }
  writeFileSync(path, lines.join('\n') + '\n');
}

function syntheticEvents() {
  const next = random(11);
  const nowMs = Date.now();
  const events = [];
  for (let n = 0; n < EVENTS; n++) {
    const user = n % USERS;
    const liked = [user % CLUSTERS, (user + 3) % CLUSTERS];
    const disliked = (user + 5) % CLUSTERS;
    const roll = next();
    const cluster = roll < 0.8 ? liked[Math.floor(next() * 2)] : disliked;
    const item = cluster + CLUSTERS * Math.floor(next() * (ITEMS / CLUSTERS));
    const type =
      cluster === disliked
        ? 'dislike'
        : next() < 0.1
          ? 'purchase'
          : next() < 0.3
            ? 'like'
            : 'click';
    const ts = nowMs - (EVENTS - n) * 60_000;
    events.push({ user: `user-${user}`, item: `item-${item}`, ts, type, id: `${RUN}-${n}` });
  }
  return events;
}

function kafka() {
  return new Kafka({ clientId: 'demo', brokers: BROKERS, logLevel: logLevel.NOTHING });
}

async function produce(events) {
  const client = kafka();
  const admin = client.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      topics: [{ topic: ENV.AFFINITY_EVENTS_TOPIC, numPartitions: 2 }],
      waitForLeaders: true,
    });
  } finally {
    await admin.disconnect();
  }
  const producer = client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    await producer.send({
      topic: ENV.AFFINITY_EVENTS_TOPIC,
      acks: -1,
      messages: events.map((event) => ({ key: event.user, value: JSON.stringify(event) })),
    });
  } finally {
    await producer.disconnect();
  }
}

/** Sums the samples of a counter in Prometheus text, whatever their labels. */
function counterValue(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = /^(\w+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (match?.[1] === name) sum += Number(match[2]);
  }
  return sum;
}

async function workerCounts() {
  try {
    const response = await fetch(`http://127.0.0.1:${METRICS_PORT}/metrics`);
    if (!response.ok) return null;
    const text = await response.text();
    return {
      applied: counterValue(text, 'affinity_events_applied_total'),
      duplicate: counterValue(text, 'affinity_events_duplicate_total'),
      deadLettered: counterValue(text, 'affinity_events_dead_lettered_total'),
    };
  } catch {
    return null; // not listening yet
  }
}

/**
 * Waits until this run's worker has accounted for every event (written to Redis, skipped as
 * a duplicate or dead-lettered), by its own counters; fails when the worker exits first.
 */
async function waitForWorker(total, workerExit) {
  let exited = null;
  workerExit.then((code) => (exited = code));
  const deadline = Date.now() + APPLY_DEADLINE_MS;
  for (;;) {
    if (exited !== null) throw new Error(`the worker exited (${exited}) before the events`);
    const counts = await workerCounts();
    if (counts && counts.applied + counts.duplicate + counts.deadLettered >= total) return counts;
    if (Date.now() > deadline) {
      throw new Error(
        `after ${APPLY_DEADLINE_MS / 1_000} s the worker reports ${JSON.stringify(counts)}`,
      );
    }
    await sleep(METRICS_POLL_MS);
  }
}

/** Deletes the topics, groups and keys of the runs `select` picks among the names found. */
async function deleteRuns(select) {
  const admin = kafka().admin();
  await admin.connect();
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
  try {
    const runs = await select(admin, redis);
    if (runs.size === 0) return 0;
    const ofRuns = (name) => runs.has(runOf(name));
    const { groups } = await admin.listGroups();
    const groupIds = groups.map((group) => group.groupId).filter(ofRuns);
    if (groupIds.length > 0) await admin.deleteGroups(groupIds);
    const topics = (await admin.listTopics()).filter(ofRuns);
    if (topics.length > 0) await admin.deleteTopics({ topics });
    for (const run of runs) await deleteKeys(redis, run === 'demo' ? 'demo:' : `${run}:`);
    return runs.size;
  } finally {
    await redis.quit();
    await admin.disconnect();
  }
}

/** The run a topic, group or key belongs to, or null when it is not the demo's. */
function runOf(name) {
  if (FIXED_NAMES.includes(name) || name.startsWith('demo:')) return 'demo';
  return RUN_NAME.exec(name)?.[1] ?? null;
}

/**
 * Earlier runs that were interrupted: their worker group has no member and they started long
 * enough ago not to be a run still loading its catalogue (the fixed-name demo has no time).
 */
async function stoppedEarlierRuns(admin, redis) {
  const names = [
    ...(await admin.listTopics()),
    ...(await admin.listGroups()).groups.map((group) => group.groupId),
    ...(await scanKeys(redis, 'demo*')),
  ];
  const runs = new Set(names.map(runOf).filter((run) => run !== null && run !== RUN));
  for (const run of runs) if (startedMs(run) > Date.now() - STARTING_RUN_MS) runs.delete(run);
  if (runs.size === 0) return runs;
  const { groups } = await admin.describeGroups([...runs].map((run) => `${run}-worker`));
  for (const group of groups) {
    if (group.members.length > 0) runs.delete(runOf(group.groupId));
  }
  return runs;
}

function startedMs(run) {
  return run === 'demo' ? 0 : parseInt(run.slice('demo-run-'.length), 36);
}

async function scanKeys(redis, pattern) {
  const found = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
    found.push(...keys);
    cursor = next;
  } while (cursor !== '0');
  return found;
}

async function deleteKeys(redis, prefix) {
  const keys = await scanKeys(redis, `${prefix}*`);
  for (let start = 0; start < keys.length; start += 1_000) {
    await redis.del(...keys.slice(start, start + 1_000));
  }
}

function runCli(args) {
  const result = spawnSync(process.execPath, [CLI, ...args], { env: ENV, stdio: 'inherit' });
  if (result.status !== 0)
    throw new Error(`affinity ${args.join(' ')} exited with ${result.status}`);
}

async function main() {
  log('bringing up Kafka and Redis when they do not answer');
  const up = spawnSync('bash', [join(ROOT, 'scripts', 'services-up.sh')], { stdio: 'inherit' });
  if (up.status !== 0) throw new Error('services-up failed');
  const earlier = await deleteRuns(stoppedEarlierRuns);
  if (earlier > 0) log(`removed the data of ${earlier} earlier run(s) that were interrupted`);

  const dir = mkdtempSync(join(tmpdir(), 'affinity-demo-'));
  const cataloguePath = join(dir, 'items.jsonl');
  writeCatalogue(cataloguePath);
  log(`loading a synthetic catalogue of ${ITEMS} items (dimension ${DIM}, mean-centred)`);
  runCli(['items', 'load', cataloguePath, '--center']);
  rmSync(dir, { recursive: true, force: true });

  log(`starting the worker (run ${RUN})`);
  const worker = spawn(process.execPath, [CLI, 'worker'], {
    env: ENV,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const workerExit = once(worker, 'exit').then(([code, signal]) => code ?? signal);
  try {
    await showFeatures(workerExit);
    await keepRunningWhenInteractive(worker, workerExit);
  } finally {
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGTERM');
    await workerExit;
    log('worker stopped');
    await deleteRuns(async () => new Set([RUN]));
    log(`removed this run's topics, consumer groups and keys (${RUN})`);
  }
}

async function showFeatures(workerExit) {
  const events = syntheticEvents();
  log(
    `streaming ${events.length} synthetic events of ${USERS} users to ${ENV.AFFINITY_EVENTS_TOPIC}`,
  );
  await produce(events);
  const counts = await waitForWorker(events.length, workerExit);
  const others = counts.duplicate + counts.deadLettered;
  const skipped =
    others > 0 ? ` (${counts.duplicate} duplicates, ${counts.deadLettered} dead-lettered)` : '';
  log(
    `${counts.applied} events applied${skipped}; features of candidates from a liked, a neutral and a disliked cluster:`,
  );

  for (const user of [0, 1, 2]) {
    const liked = user % CLUSTERS;
    const neutral = (user + 1) % CLUSTERS;
    const disliked = (user + 5) % CLUSTERS;
    const candidates = [liked, neutral, disliked].map(
      (cluster) => `item-${cluster + CLUSTERS * 7}`,
    );
    console.log('');
    runCli(['features', '--user', `user-${user}`, '--items', candidates.join(',')]);
  }
  console.log('');
  log(`metrics: http://127.0.0.1:${METRICS_PORT}/metrics (also /healthz, /readyz)`);
}

async function keepRunningWhenInteractive(worker, workerExit) {
  if (!process.stdin.isTTY) return;
  log('the worker keeps running; press Ctrl-C to stop it (its demo data is removed then)');
  process.on('SIGINT', () => worker.kill('SIGTERM'));
  await workerExit;
}

main().catch((err) => {
  console.error(`demo: ${err.message}`);
  process.exitCode = 1;
});
