import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { InteractionEvent } from '../../src/events/types.js';
import { decodeEvent, eventOf } from '../../src/stream/decode.js';
import { EventScanner } from '../../src/stream/scan.js';
import { signalTypes } from '../../src/workers/engine-link.js';
import { testDecodeLimits } from '../helpers/fixtures.js';
import { seededRandom } from '../helpers/services.js';

const NOW_MS = 1_700_000_000_000;
const limits = testDecodeLimits(2_048);
const types = signalTypes(limits.signals);
const scanner = new EventScanner(limits, types.index);

/** The event the scanner read, made the way decodeEvent makes its own; null when it gave up. */
function scanned(text: string | Buffer): InteractionEvent | null {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  if (!scanner.scan(bytes, NOW_MS)) return null;
  const { userStart, userEnd, itemStart, itemEnd, idStart, idEnd } = scanner;
  return eventOf(
    bytes.toString('latin1', userStart, userEnd),
    bytes.toString('latin1', itemStart, itemEnd),
    scanner.ts,
    types.names[scanner.type]!,
    Number.isNaN(scanner.value) ? undefined : scanner.value,
    idStart < 0 ? undefined : bytes.toString('latin1', idStart, idEnd),
  );
}

/** The scanner's verdict must be decodeEvent's whenever it gives one. */
function assertAgrees(bytes: Buffer): boolean {
  const fast = scanned(bytes);
  if (fast === null) return false;
  const slow = decodeEvent(bytes, NOW_MS, limits);
  assert.deepEqual(slow, { ok: true, event: fast }, bytes.toString('latin1'));
  return true;
}

const TS = NOW_MS - 5_000;

test('plain messages are read by the scanner, with the fields decodeEvent gives', () => {
  const plain = [
    `{"user":"u1","item":"i9","ts":${TS},"type":"click"}`,
    `{"type":"like","ts":${TS},"item":"i9","user":"u1"}`,
    ` \t{ "user" : "u1" ,\n"item":"i9",\r\n"ts": ${TS}, "type":"skip" }\n `,
    `{"user":"u1","item":"i9","ts":${TS},"type":"purchase","value":2.5,"id":"e-1"}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"dislike","value":0}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","value":-0}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","value":1e3}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","value":0.000123E+2}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","value":1000}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","session":"s-3","n":-1.5,"ok":true}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","user2":null,"x":false}`,
    `{"user":"${'u'.repeat(1_024)}","item":"i9","ts":${TS},"type":"click"}`,
  ];
  for (const text of plain) {
    assert.equal(assertAgrees(Buffer.from(text)), true, text);
  }
  assert.deepEqual(scanned(plain[3]!), {
    user: 'u1',
    item: 'i9',
    ts: TS,
    type: 'purchase',
    value: 2.5,
    id: 'e-1',
  });
  assert.ok(Object.is(scanned(plain[5]!)?.value, -0), 'a value of -0 stays -0, as in JSON.parse');
});

test('the scanner leaves to decodeEvent what it does not read itself, or what is wrong', () => {
  const others = [
    `{"user":"u\\u0031","item":"i9","ts":${TS},"type":"click"}`,
    `{"user":"ü","item":"i9","ts":${TS},"type":"click"}`,
    `{"user":"u1","user":"u2","item":"i9","ts":${TS},"type":"click"}`,
    `{"user":"u1","item":"i9","ts":${TS}.0,"type":"click"}`,
    `{"user":"u1","item":"i9","ts":1.7e12,"type":"click"}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","meta":{"a":1}}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","tags":[]}`,
    `{"user":"u1","item":"i9","ts":0${TS},"type":"click"}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click",}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click"} x`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"teleport"}`,
    `{"user":"u1","item":"i9","ts":0,"type":"click"}`,
    `{"user":"","item":"i9","ts":${TS},"type":"click"}`,
    `{"user":null,"item":"i9","ts":${TS},"type":"click"}`,
    `{"item":"i9","ts":${TS},"type":"click"}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","value":-1}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","value":1000.5}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","value":1e999}`,
    `{"user":"u1","item":"i9","ts":"${TS}","type":"click"}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","id":""}`,
    `{"user":"${'u'.repeat(1_025)}","item":"i9","ts":${TS},"type":"click"}`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"click","pad":"${'x'.repeat(2_048)}"}`,
    `\ufeff{"user":"u1","item":"i9","ts":${TS},"type":"click"}`,
    `{"user":"u\t1","item":"i9","ts":${TS},"type":"click"}`,
    '{}',
    '[]',
    '',
  ];
  for (const text of others) assert.equal(scanned(text), null, text);
});

const ALPHABET = Buffer.from(
  '"\\{}[],:-+.eE0123456789 \t\nnulltruefalseidvalueusertype\u00ff\u00c3',
);

function mutated(base: Buffer, next: () => number): Buffer {
  const bytes = [...base];
  const edits = 1 + Math.floor(next() * 3);
  for (let e = 0; e < edits; e++) {
    const at = Math.floor(next() * (bytes.length + 1));
    const byte = ALPHABET[Math.floor(next() * ALPHABET.length)]!;
    const kind = next();
    if (kind < 0.4) bytes[Math.min(at, bytes.length - 1)] = byte;
    else if (kind < 0.7) bytes.splice(at, 1);
    else bytes.splice(at, 0, byte);
  }
  return Buffer.from(bytes);
}

test('with any timestamp allowed, a timestamp that is not a JSON number is still refused', () => {
  // The range check would refuse 0 otherwise, and hide a scanner that read no digits as 0.
  const open = new EventScanner({ ...limits, maxEventAgeMs: Number.MAX_SAFE_INTEGER }, types.index);
  const read = (text: string) => open.scan(Buffer.from(text), NOW_MS);
  assert.equal(read('{"user":"u1","item":"i9","ts":0,"type":"click"}'), true);
  assert.equal(read('{"user":"u1","item":"i9","ts":-0,"type":"click"}'), true);
  for (const ts of ['', '-', '-,', '00', '01', '1.', '.5', '1e3', '+1', '0x10']) {
    const text = `{"user":"u1","item":"i9","ts":${ts},"type":"click"}`;
    assert.equal(read(text), false, text);
  }
});

test('on 60,000 mutated messages the scanner never accepts what decodeEvent would not', () => {
  const next = seededRandom(20_261_204);
  const bases = [
    `{"user":"u1","item":"i9","ts":${TS},"type":"click"}`,
    `{"type":"like","ts":${TS},"item":"i42","user":"u7","value":12,"id":"e-9"}`,
    `{ "user": "u1", "item": "i9", "ts": ${TS}, "type": "skip", "value": 0.5, "x": null }`,
    `{"user":"u1","item":"i9","ts":${TS},"type":"purchase","value":1e2,"tag":"a"}`,
  ].map((text) => Buffer.from(text));
  let accepted = 0;
  for (let n = 0; n < 60_000; n++) {
    if (assertAgrees(mutated(bases[n % bases.length]!, next))) accepted++;
  }

  // Both branches were exercised: a fuzz that only ever gave up would prove nothing.
  assert.ok(accepted > 3_000, `${accepted} mutated messages were read by the scanner`);
  assert.ok(accepted < 57_000, `${accepted} of 60,000 read: too few mutations break anything`);
});
