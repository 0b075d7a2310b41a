/**
 * RespEncoder against RESP2 requests written out by hand from the protocol's definition
 * (https://redis.io/docs/latest/develop/reference/protocol-spec/): an array of bulk strings,
 * each `$<byte length>\r\n<bytes>\r\n`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RespEncoder } from '../../src/state/resp.js';

test('commands encode as arrays of bulk strings, byte lengths counted in UTF-8', () => {
  const encoder = new RespEncoder();
  encoder.add(['HSET', 'k', 'é€', '']);
  encoder.add(['PEXPIRE', 'k', '600000']);
  encoder.add(['SET', 'b', Uint8Array.of(0, 13, 10, 255)]);

  const expected = Buffer.concat([
    Buffer.from('*4\r\n$4\r\nHSET\r\n$1\r\nk\r\n$5\r\né€\r\n$0\r\n\r\n', 'utf8'),
    Buffer.from('*3\r\n$7\r\nPEXPIRE\r\n$1\r\nk\r\n$6\r\n600000\r\n', 'latin1'),
    Buffer.from('*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$4\r\n', 'latin1'),
    Buffer.from([0, 13, 10, 255, 13, 10]),
  ]);
  assert.deepEqual(encoder.encode(), expected);

  const commands = encoder.toCommands();
  assert.deepEqual(
    commands.map((command) => command.name),
    ['hset', 'pexpire', 'set'],
  );
  const parts = commands.map((command) => command.toWritable(undefined as never) as Buffer);
  assert.deepEqual(Buffer.concat(parts), expected, 'each command holds its own bytes, in order');
});

test('a view of a larger array is encoded as its own bytes only', () => {
  const whole = Float32Array.of(1, 2, 3, 4);
  const view = new Uint8Array(whole.buffer, 4, 8);
  const encoder = new RespEncoder();
  encoder.add(['SET', 'v', view]);

  const expected = Buffer.concat([
    Buffer.from('*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$8\r\n', 'latin1'),
    Buffer.from(Float32Array.of(2, 3).buffer),
    Buffer.from('\r\n', 'latin1'),
  ]);
  assert.deepEqual(encoder.encode(), expected);
});
