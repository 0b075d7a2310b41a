/**
 * RespEncoder against RESP2 requests written out by hand from the protocol's definition
 * (https://redis.io/docs/latest/develop/reference/protocol-spec/): an array of bulk strings,
 * each `$<byte length>\r\n<bytes>\r\n`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RespEncoder, SpareBuffers } from '../../src/state/resp.js';

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

test('lengths of many digits, long texts and commands of ten and more arguments', () => {
  const args = ['HSET', 'k', 'a'.repeat(64), 'b'.repeat(65), 'ü'.repeat(40), 'x'.repeat(12_345)];
  const bulk = new Uint8Array(100_001).fill(7);
  const encoder = new RespEncoder();
  encoder.add([...args, bulk, ...Array.from({ length: 5 }, (_, i) => String(10 ** i))]);

  // Written out from the definition: each argument `$<UTF-8 byte length>\r\n<bytes>\r\n`.
  const texts = [...args.slice(0, 6)];
  const tail = Array.from({ length: 5 }, (_, i) => String(10 ** i));
  const bulkText = (text: string) => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
  const expected = Buffer.concat([
    Buffer.from(`*12\r\n${texts.map(bulkText).join('')}$100001\r\n`, 'utf8'),
    Buffer.from(bulk),
    Buffer.from(`\r\n${tail.map(bulkText).join('')}`, 'utf8'),
  ]);
  assert.equal(encoder.byteLength, expected.length);
  assert.deepEqual(encoder.encode(), expected);
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

test('encoding into a reused buffer gives the same bytes, whatever the buffer held', () => {
  const encoder = new RespEncoder();
  encoder.add(['HSET', 'k', 'é€', Uint8Array.of(1, 2, 3)]);
  encoder.add(['PEXPIRE', 'k', '600000']);
  const expected = encoder.encode();

  const used = Buffer.alloc(encoder.byteLength + 100, 0xaa);
  assert.equal(encoder.byteLength, expected.length);
  assert.deepEqual(encoder.encode(used), expected);
  const parts = encoder
    .toCommands(used)
    .map((command) => command.toWritable(undefined as never) as Buffer);
  assert.deepEqual(Buffer.concat(parts), expected, 'the commands end where the encoding ends');
});

test('spare buffers: the smallest that fits is reused, none beyond the bound are kept', () => {
  const spare = new SpareBuffers(4_000);
  const small = spare.take(1_000);
  const large = spare.take(1_500);
  assert.equal(small.length, 1_250, 'a quarter more than asked');
  spare.give(large);
  spare.give(small);
  assert.equal(spare.take(900), small, 'the smallest that fits');
  assert.equal(spare.take(900), large);
  assert.equal(spare.take(900).length, 1_125, 'a buffer is handed out once');

  spare.give(Buffer.alloc(2_500));
  spare.give(Buffer.alloc(2_000));
  assert.equal(spare.take(600).length, 2_500, 'the second buffer went over the bound');
  assert.equal(spare.take(600).length, 750);
});
