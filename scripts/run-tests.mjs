// Runs the compiled test suite (what `npm test` runs after `npm run build`).
//
// 1. If Kafka or Redis does not answer, starts the development services with
//    scripts/services-up.sh. They are left running afterwards: the next run starts faster,
//    and `npm run services:down` stops them.
// 2. Removes what interrupted earlier runs left on the broker and in Redis (only names of the
//    tests' own scheme; scripts/test-leftovers.mjs says which and why that is safe).
// 3. Hands every dist/test/**/*.test.js file, sorted, to Node's test runner, one file at a
//    time (the tests share one broker and one Redis), and exits with its code.
//
// Kafka is probed at AFFINITY_KAFKA_BROKERS (default 127.0.0.1:19092), Redis at
// AFFINITY_REDIS_URL (default redis://127.0.0.1:6379).

import { spawn, spawnSync } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join, relative } from 'node:path';
import { URL, fileURLToPath } from 'node:url';
import { removeTestLeftovers } from './test-leftovers.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TEST_DIR = join(ROOT, 'dist', 'test');
const TEST_FILE_SUFFIX = '.test.js';
const DEFAULT_BROKERS = '127.0.0.1:19092';
const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';
const REDIS_PROBE_TIMEOUT_MS = 2_000;

function log(message) {
  console.log(`run-tests: ${message}`);
}

function kafkaAnswers() {
  const probe = spawnSync(process.execPath, [join(ROOT, 'scripts', 'wait-kafka.mjs'), '0'], {
    cwd: ROOT,
    stdio: 'ignore',
  });
  return probe.status === 0;
}

/** Sends a RESP PING and waits for +PONG (or an auth error, which still means "up"). */
function redisAnswers() {
  const url = new URL(process.env.AFFINITY_REDIS_URL ?? DEFAULT_REDIS_URL);
  const host = url.hostname || '127.0.0.1';
  const port = Number(url.port || 6379);

  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const settle = (answers) => {
      socket.destroy();
      resolve(answers);
    };
    socket.setTimeout(REDIS_PROBE_TIMEOUT_MS, () => settle(false));
    socket.once('error', () => settle(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (reply) => {
      const text = reply.toString('utf8');
      settle(text.startsWith('+PONG') || text.startsWith('-NOAUTH'));
    });
  });
}

async function ensureServices() {
  const kafkaUp = kafkaAnswers();
  const redisUp = await redisAnswers();
  if (kafkaUp && redisUp) {
    return;
  }

  const missing = [!kafkaUp && 'Kafka', !redisUp && 'Redis'].filter(Boolean).join(' and ');
  log(`${missing} not answering; starting the development services`);
  const up = spawnSync('bash', [join(ROOT, 'scripts', 'services-up.sh')], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  if (up.status !== 0) {
    log(`services-up.sh failed (exit ${up.status ?? up.signal}); not running the tests`);
    process.exit(up.status ?? 1);
  }
  if (process.env.AFFINITY_KEEP_SERVICES === undefined) {
    log('services started for this run stay up for the next one; stop: npm run services:down');
  }
}

/** Housekeeping only: a failure is reported and the suite runs regardless. */
async function removeLeftovers() {
  try {
    const removed = await removeTestLeftovers({
      brokers: (process.env.AFFINITY_KAFKA_BROKERS ?? DEFAULT_BROKERS).split(','),
      redisUrl: process.env.AFFINITY_REDIS_URL ?? DEFAULT_REDIS_URL,
    });
    if (removed.topics + removed.groups + removed.keys > 0) {
      log(
        `removed what earlier runs left: ${removed.topics} topics, ${removed.groups} groups, ` +
          `${removed.keys} Redis keys`,
      );
    }
  } catch (err) {
    log(`could not remove what earlier runs left (${err.message}); running the tests anyway`);
  }
}

async function findTestFiles(dir) {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (err.code === 'ENOENT') {
      return [];
    }
    throw err;
  }

  const files = [];
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      files.push(...(await findTestFiles(path)));
    } else if (entry.isFile() && entry.name.endsWith(TEST_FILE_SUFFIX)) {
      files.push(path);
    }
  }
  return files;
}

function runNodeTest(files) {
  const args = ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files];
  // kafkajs warns once per process about its v2 default partitioner; tests choose their own.
  const env = { KAFKAJS_NO_PARTITIONER_WARNING: '1', ...process.env };

  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: 'inherit' });
    child.once('error', (err) => {
      log(`could not start the test runner: ${err.message}`);
      resolve(1);
    });
    child.once('exit', (code, signal) => {
      if (signal !== null) {
        log(`test runner killed by ${signal}`);
      }
      resolve(code ?? 1);
    });
  });
}

async function main() {
  // Default sort: code-unit order, the same on every machine whatever its locale.
  const files = (await findTestFiles(TEST_DIR)).map((file) => relative(ROOT, file)).sort();
  if (files.length === 0) {
    log(`no *${TEST_FILE_SUFFIX} files under ${relative(ROOT, TEST_DIR)}; did the build run?`);
    return 1;
  }

  await ensureServices();
  await removeLeftovers();
  log(`running ${files.length} test file(s)`);
  return runNodeTest(files);
}

process.exitCode = await main();
