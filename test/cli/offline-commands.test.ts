/**
 * The offline subcommands' command line, run as the `affinity` binary: `--help` prints the
 * command's usage and exits 0; a command line `parseArgs` rejects (an unknown option, a missing
 * value) prints one `affinity: <command>: ...` line and the usage, no stack trace, and exits 2,
 * as main.ts does for every USAGE error.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

function affinity(...args: string[]) {
  const result = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

for (const command of ['backfill', 'evaluate']) {
  test(`${command} --help and -h print the usage and exit 0`, () => {
    for (const flag of ['--help', '-h']) {
      const { status, stdout, stderr } = affinity(command, flag);
      assert.equal(status, 0, `${flag}: ${stderr}`);
      assert.match(stdout, new RegExp(`^usage: affinity ${command} --events FILE`));
      assert.match(stdout, /AFFINITY_\* configuration/);
      assert.equal(stderr, '');
    }
  });

  test(`${command}: an unknown option or a missing value is a usage error, exit 2`, () => {
    for (const args of [['--no-such-flag'], ['--events'], ['--seed=1', '--events', 'x']]) {
      const { status, stdout, stderr } = affinity(command, ...args);
      const label = args.join(' ');
      assert.equal(status, 2, `${label}: ${stderr}`);
      assert.equal(stdout, '', label);
      assert.match(stderr, new RegExp(`^affinity: ${command}: `), label);
      assert.match(stderr, new RegExp(`usage: affinity ${command} --events FILE`), label);
      assert.doesNotMatch(stderr, /\n\s+at /, `${label}: no stack trace`);
    }
  });
}

test('evaluate: --help lists the defaults of the protocol flags', () => {
  const { stdout } = affinity('evaluate', '--help');
  for (const text of ['--negatives popularity', '--exclude point-in-time', '--exclude-window 1d'])
    assert.ok(stdout.includes(text), text);
});

test('train --help and -h print its usage and exit 0', () => {
  for (const flag of ['--help', '-h']) {
    const { status, stdout, stderr } = affinity('train', flag);
    assert.equal(status, 0, `${flag}: ${stderr}`);
    assert.match(stdout, /^usage: affinity train --events FILE --items PATH --out DIR/);
    assert.equal(stderr, '');
  }
});
