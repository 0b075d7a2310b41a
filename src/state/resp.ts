/**
 * Redis commands encoded by us into one buffer (the RESP2 request format: an array of bulk
 * strings, https://redis.io/docs/latest/develop/reference/protocol-spec/), for the flush's
 * thousands of state writes. ioredis builds each command from its arguments (flattening them,
 * measuring each string, copying each into a buffer of its own and then all of them again into
 * the pipeline's), which cost about 45 µs per user write at d = 384; encoding them here copies
 * each byte once.
 *
 * Each command goes to ioredis as a view of its own bytes in the shared buffer, so ioredis
 * still queues and matches one reply per command, and can write a command again (after a
 * reconnection) on its own.
 */
import { Command } from 'ioredis';
import { digitCount, writeDigits } from '../encoding/decimal.js';

export type RespArgument = string | Uint8Array;

export class RespEncoder {
  private readonly commands: RespArgument[][] = [];
  private readonly lengths: number[] = [];
  /** Where each command's bytes end in the encoding. */
  private readonly ends: number[] = [];
  private size = 0;

  get count(): number {
    return this.commands.length;
  }

  /** How many bytes the encoding takes. */
  get byteLength(): number {
    return this.size;
  }

  add(args: RespArgument[]): void {
    this.size += headerLength(args.length);
    for (const arg of args) {
      const length = typeof arg === 'string' ? utf8Length(arg) : arg.byteLength;
      this.lengths.push(length);
      this.size += headerLength(length) + length + 2;
    }
    this.commands.push(args);
    this.ends.push(this.size);
  }

  /**
   * The commands end to end, in `into` (at least byteLength long) or a new buffer; every
   * argument is copied, so the caller may change them now.
   */
  encode(into?: Buffer): Buffer {
    const bytes = into ?? Buffer.allocUnsafe(this.size);
    let at = 0;
    let next = 0;
    for (const args of this.commands) {
      at = writeHeader(bytes, at, ARRAY, args.length);
      for (const arg of args) {
        const length = this.lengths[next++]!;
        at = writeHeader(bytes, at, BULK, length);
        at =
          typeof arg === 'string' ? writeText(bytes, at, arg, length) : writeBytes(bytes, at, arg);
        bytes[at++] = CR;
        bytes[at++] = LF;
      }
    }
    return bytes.subarray(0, at);
  }

  /** One ioredis command per encoded command, each holding a view of its bytes (in `into`). */
  toCommands(into?: Buffer): Command[] {
    const bytes = this.encode(into);
    return this.commands.map((args, i) => {
      const bytesOfCommand = bytes.subarray(this.ends[i - 1] ?? 0, this.ends[i]);
      return new PreEncoded(String(args[0]), bytesOfCommand);
    });
  }
}

const ARRAY = 0x2a;
const BULK = 0x24;
const CR = 13;
const LF = 10;
/**
 * Texts up to this long are measured and copied here, character by character: each call into
 * Buffer's native code costs more than that for the short field names and numbers that make
 * most of a state write's arguments.
 */
const SHORT_TEXT = 64;

/** `*n\r\n` or `$n\r\n`. */
function headerLength(n: number): number {
  return digitCount(n) + 3;
}

/** Writes `*n\r\n` or `$n\r\n` at `at`; returns where it ends. */
function writeHeader(bytes: Buffer, at: number, kind: number, n: number): number {
  bytes[at] = kind;
  const end = at + 1 + digitCount(n);
  writeDigits(bytes, end, n);
  bytes[end] = CR;
  bytes[end + 1] = LF;
  return end + 2;
}

/** The UTF-8 length of `text`: its length when it is short and ASCII. */
function utf8Length(text: string): number {
  if (text.length > SHORT_TEXT) return Buffer.byteLength(text, 'utf8');
  for (let k = 0; k < text.length; k++) {
    if (text.charCodeAt(k) >= 0x80) return Buffer.byteLength(text, 'utf8');
  }
  return text.length;
}

/** Writes `text`, `length` bytes of UTF-8, at `at`; returns where it ends. */
function writeText(bytes: Buffer, at: number, text: string, length: number): number {
  if (length !== text.length || length > SHORT_TEXT) {
    return at + bytes.write(text, at, length, 'utf8');
  }
  for (let k = 0; k < length; k++) bytes[at + k] = text.charCodeAt(k);
  return at + length;
}

function writeBytes(bytes: Buffer, at: number, arg: Uint8Array): number {
  bytes.set(arg, at);
  return at + arg.byteLength;
}

class PreEncoded extends Command {
  constructor(
    name: string,
    private readonly bytes: Buffer,
  ) {
    super(name.toLowerCase(), []);
  }

  override toWritable(): string | Buffer {
    return this.bytes;
  }
}

/**
 * Encoding buffers given back once their commands settled, to be written over by the next
 * ones. A flush encodes about 5 MB per chunk of 256 users at d = 384, outside the JavaScript
 * heap; allocated afresh each time, that memory made V8 start a full garbage collection at
 * nearly every flush ("external memory pressure"), although the heap itself was far below its
 * limit. Kept, it is the memory the largest flush needed anyway, up to `maxBytes`. Each buffer
 * is allocated a quarter larger than asked, so that it still fits as the states grow.
 */
export class SpareBuffers {
  private readonly spare: Buffer[] = [];
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** A buffer of at least `size` bytes: a spare one when one is large enough. */
  take(size: number): Buffer {
    let index = -1;
    this.spare.forEach((buffer, i) => {
      if (buffer.length >= size && (index < 0 || buffer.length < this.spare[index]!.length)) {
        index = i;
      }
    });
    if (index < 0) return Buffer.allocUnsafeSlow(Math.ceil(size * 1.25));
    const [buffer] = this.spare.splice(index, 1);
    this.bytes -= buffer!.length;
    return buffer!;
  }

  /** Keeps `buffer` for a later take, when there is room. */
  give(buffer: Buffer): void {
    if (this.bytes + buffer.length > this.maxBytes) return;
    this.spare.push(buffer);
    this.bytes += buffer.length;
  }
}
