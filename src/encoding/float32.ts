/**
 * Float32 (and float64) little-endian bytes, the encoding of every vector we store or exchange. On a
 * little-endian host (every platform Node supports in practice) both directions are one
 * memcpy; the DataView path keeps a big-endian host correct.
 */
const IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Little-endian float32 bytes (a copy: the caller may change `values` afterwards). */
export function float32Bytes(values: Float32Array): Buffer {
  if (IS_LITTLE_ENDIAN) {
    return Buffer.from(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  }
  const bytes = Buffer.allocUnsafe(values.length * 4);
  for (let i = 0; i < values.length; i++) bytes.writeFloatLE(values[i]!, i * 4);
  return bytes;
}

/**
 * Copies little-endian float32 bytes into `target` (or a new array of length bytes / 4). Works
 * whatever the alignment of `bytes` and the endianness of the host.
 */
export function decodeFloat32LE(bytes: Uint8Array, target?: Float32Array): Float32Array {
  const out = target ?? new Float32Array(bytes.length / 4);
  if (IS_LITTLE_ENDIAN) {
    new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes);
    return out;
  }

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}

/** Little-endian float64 bytes (a copy). */
export function float64Bytes(values: Float64Array): Buffer {
  if (IS_LITTLE_ENDIAN) {
    return Buffer.from(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
  }
  const bytes = Buffer.allocUnsafe(values.length * 8);
  for (let i = 0; i < values.length; i++) bytes.writeDoubleLE(values[i]!, i * 8);
  return bytes;
}

/** Little-endian float64 bytes into a new array, whatever the alignment and host. */
export function decodeFloat64LE(bytes: Uint8Array): Float64Array {
  const out = new Float64Array(bytes.length / 8);
  if (IS_LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(8 * i, true);
  return out;
}

/**
 * The little-endian bytes of `values`: on a little-endian host a view of the same memory (no
 * copy; it changes when `values` does), on a big-endian host a converted copy.
 */
export function littleEndianView(values: Float32Array | Float64Array): Uint8Array {
  if (IS_LITTLE_ENDIAN) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  return values instanceof Float32Array ? float32Bytes(values) : float64Bytes(values);
}
