// `npm run demo`: the whole pipeline on synthetic sample data, end to end.
//
// 1. Brings up Kafka and Redis when they do not answer (scripts/services-up.sh).
// 2. Writes a SYNTHETIC catalogue (1,000 items in 8 topic clusters, dimension 64) and loads it
//    with `affinity items load --center`.
// 3. Starts `affinity worker` and streams 3,000 synthetic events of 30 users to it; each user
//    favours two clusters and dislikes one.
// 4. Prints the features of a few candidates for three users, and the metrics address.
//
// Everything runs under its own topics and key prefix (`demo`), so it never touches other data.
// The worker keeps running (Ctrl-C stops it) when the terminal is interactive.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import { Redis } from 'ioredis';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const DIM = 64;
const CLUSTERS = 8;
const ITEMS = 1_000;
const USERS = 30;
const EVENTS = 3_000;
const METRICS_PORT = process.env.AFFINITY_HTTP_PORT ?? '9464';
const ENV = {
  ...process.env,
  AFFINITY_EVENTS_TOPIC: 'demo-interactions',
  AFFINITY_DEAD_LETTER_TOPIC: 'demo-interactions-dead-letter',
  AFFINITY_ITEMS_TOPIC: 'demo-item-embeddings',
  AFFINITY_GROUP_ID: 'demo-worker',
  AFFINITY_KEY_PREFIX: 'demo:',
  AFFINITY_HTTP_PORT: METRICS_PORT,
  AFFINITY_LOG_LEVEL: process.env.AFFINITY_LOG_LEVEL ?? 'warn',
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
    events.push({ user: `user-${user}`, item: `item-${item}`, ts, type, id: `demo-${n}` });
  }
  return events;
}

async function produce(events) {
  const kafka = new Kafka({
    clientId: 'demo',
    brokers: [process.env.AFFINITY_KAFKA_BROKERS ?? '127.0.0.1:19092'],
    logLevel: logLevel.NOTHING,
  });
  const admin = kafka.admin();
  await admin.connect();
  const existing = new Set(await admin.listTopics());
  if (!existing.has(ENV.AFFINITY_EVENTS_TOPIC)) {
    await admin.createTopics({
      topics: [{ topic: ENV.AFFINITY_EVENTS_TOPIC, numPartitions: 2 }],
      waitForLeaders: true,
    });
  }
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({
    topic: ENV.AFFINITY_EVENTS_TOPIC,
    acks: -1,
    messages: events.map((event) => ({ key: event.user, value: JSON.stringify(event) })),
  });
  await producer.disconnect();
}

async function waitForApplied(events) {
  const redis = new Redis(process.env.AFFINITY_REDIS_URL ?? 'redis://127.0.0.1:6379');
  const users = [...new Set(events.map((event) => event.user))];
  const deadline = Date.now() + 120_000;
  try {
    for (;;) {
      const counts = await Promise.all(users.map((user) => redis.hget(`demo:u:{${user}}`, 'n')));
      const applied = counts.reduce((sum, value) => sum + Number(value ?? 0), 0);
      if (applied >= events.length) return applied;
      if (Date.now() > deadline)
        throw new Error(`only ${applied} of ${events.length} events applied after 120 s`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    await redis.quit();
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

  const dir = mkdtempSync(join(tmpdir(), 'affinity-demo-'));
  const cataloguePath = join(dir, 'items.jsonl');
  writeCatalogue(cataloguePath);
  log(`loading a synthetic catalogue of ${ITEMS} items (dimension ${DIM}, mean-centred)`);
  runCli(['items', 'load', cataloguePath, '--center']);
  rmSync(dir, { recursive: true, force: true });

  log('starting the worker');
  const worker = spawn(process.execPath, [CLI, 'worker'], {
    env: ENV,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const events = syntheticEvents();
  log(
    `streaming ${events.length} synthetic events of ${USERS} users to ${ENV.AFFINITY_EVENTS_TOPIC}`,
  );
  await produce(events);
  const applied = await waitForApplied(events);
  log(
    `${applied} events applied; features of candidates from a liked, a neutral and a disliked cluster:`,
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
  if (process.stdin.isTTY) {
    log('the worker keeps running; press Ctrl-C to stop it');
    process.on('SIGINT', () => worker.kill('SIGTERM'));
    await new Promise((resolve) => worker.once('exit', resolve));
    return;
  }
  worker.kill('SIGTERM');
  await new Promise((resolve) => worker.once('exit', resolve));
  log('worker stopped');
}

main().catch((err) => {
  console.error(`demo: ${err.message}`);
  process.exitCode = 1;
});
