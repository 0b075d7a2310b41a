/**
 * A long-running command whose start fails must not linger: before this was fixed, a worker
 * that could not reach Kafka printed the error as plain text and kept its ops server up, so
 * /healthz answered 200 for a process that consumed nothing. One-shot commands log one pino
 * line on stderr (their stdout is their result) and exit 1; a usage error exits 2.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkNothingLeftBehind, closedPort, configEnv, testConfig } from '../helpers/services.js';

checkNothingLeftBehind();

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
/** kafkajs gives up connecting after about 10 s with its default retry (5 retries from 300 ms). */
const START_FAILURE_BOUND_MS = 45_000;

interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the CLI and waits for its exit; a process still running at `boundMs` fails the test. */
async function runCli(
  args: readonly string[],
  env: Record<string, string>,
  boundMs: number,
): Promise<CliRun> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));

  let timedOut = false;
  const bound = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, boundMs);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(bound);
  assert.ok(!timedOut, `affinity ${args.join(' ')} still running after ${boundMs} ms`);
  return { code, stdout, stderr };
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        assert.fail(`not a pino JSON line: ${line}`);
      }
    });
}

test('a worker that cannot reach Kafka logs one pino error and exits 1', async () => {
  const config = testConfig();
  const env = configEnv(config, {
    AFFINITY_KAFKA_BROKERS: `127.0.0.1:${await closedPort()}`,
    AFFINITY_LOG_LEVEL: 'error',
  });

  const run = await runCli(['worker'], env, START_FAILURE_BOUND_MS);

  assert.equal(run.code, 1, `exit code (stderr: ${run.stderr})`);
  assert.equal(run.stderr, '', 'nothing outside pino');
  const failures = jsonLines(run.stdout).filter((line) => line['msg'] === 'start-up failed');
  assert.equal(failures.length, 1, `one start-up failure line in:\n${run.stdout}`);
  const [failure] = failures;
  assert.equal(failure?.['level'], 50);
  assert.equal(failure?.['role'], 'worker');
  assert.match(String((failure?.['err'] as { message?: unknown })?.message), /ECONNREFUSED/);
});

test('a neural worker whose start fails (no loadable model) logs one pino error, exits 1', async () => {
  const config = testConfig();
  const modelDir = fileURLToPath(new URL('./missing-model/', import.meta.url));
  const env = configEnv(config, {
    AFFINITY_KAFKA_BROKERS: `127.0.0.1:${await closedPort()}`,
    AFFINITY_NEURAL_MODEL_DIR: modelDir,
    AFFINITY_LOG_LEVEL: 'error',
  });

  const run = await runCli(['neural-worker'], env, START_FAILURE_BOUND_MS);

  assert.equal(run.code, 1, `exit code (stderr: ${run.stderr})`);
  assert.equal(run.stderr, '', 'nothing outside pino');
  const failures = jsonLines(run.stdout).filter((line) => line['msg'] === 'start-up failed');
  assert.equal(failures.length, 1, `one start-up failure line in:\n${run.stdout}`);
  assert.equal(failures[0]?.['role'], 'neural-worker');
});

test('an invalid configuration stops the worker with one pino error and exit 1', async () => {
  const env = configEnv(testConfig(), { AFFINITY_FLUSH_INTERVAL: 'soon' });

  const run = await runCli(['worker'], env, 10_000);

  assert.equal(run.code, 1);
  assert.equal(run.stderr, '');
  const [line, ...others] = jsonLines(run.stdout);
  assert.equal(others.length, 0, run.stdout);
  assert.equal(line?.['msg'], 'start-up failed');
  assert.match(String((line?.['err'] as { message?: unknown })?.message), /FLUSH_INTERVAL/);
});

test('a one-shot command that fails logs one pino error on stderr and exits 1', async () => {
  const run = await runCli(['items', 'load', '/nonexistent/catalogue'], {}, 10_000);

  assert.equal(run.code, 1);
  assert.equal(run.stdout, '', 'stdout holds only a result, and there is none');
  const [line, ...others] = jsonLines(run.stderr);
  assert.equal(others.length, 0, run.stderr);
  assert.equal(line?.['msg'], 'command failed');
  assert.equal(line?.['level'], 50);
  assert.equal(line?.['role'], 'items');
  assert.match(JSON.stringify(line?.['err']), /ENOENT/);
});

test('usage errors exit 2, unknown options included', async () => {
  for (const args of [['no-such-command'], ['features', '--no-such-option'], ['items']]) {
    const run = await runCli(args, {}, 10_000);
    assert.equal(run.code, 2, `affinity ${args.join(' ')}: ${run.stderr}`);
    assert.match(run.stderr, /^affinity: |^unknown command/);
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
  }
});
