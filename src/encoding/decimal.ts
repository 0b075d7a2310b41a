/**
 * Non-negative safe integers in decimal ASCII, written straight into bytes: the timestamps of
 * the history JSON (state/history-json.ts) and the lengths of the RESP headers (state/resp.ts),
 * thousands per flush, where a string per number and a native call to copy it cost more than
 * the digits.
 */

/** 10^0 to 10^15: a safe integer has at most 16 digits. */
const POWERS_OF_TEN = Array.from({ length: 16 }, (_, n) => 10 ** n);
/** The two ASCII digits of 0 to 99, one after the other: digits are written two at a time. */
const DIGIT_PAIRS = Buffer.from(
  Array.from({ length: 100 }, (_, n) => String(n).padStart(2, '0')).join(''),
  'latin1',
);

/** How many decimal digits a non-negative safe integer has. */
export function digitCount(value: number): number {
  let count = 1;
  while (count < POWERS_OF_TEN.length && value >= POWERS_OF_TEN[count]!) count++;
  return count;
}

/**
 * The decimal digits of a non-negative safe integer, ending just before `end`. Eight digits at
 * a time are split off in 32-bit integer arithmetic, and written in pairs from DIGIT_PAIRS: a
 * timestamp's 13 digits took 43 ns one float division at a time, and the entries of a flush's
 * histories have one each (state/history-json.ts; an entry in all went from 155 to 103 ns,
 * measured on its own).
 */
export function writeDigits(block: Uint8Array, end: number, value: number): void {
  let at = end;
  let rest = value;
  while (rest >= 1e8) {
    // Exact: the true quotient is at least 1e-8 under the next integer, and being below 2^27
    // it is rounded by at most 0.75e-8, so never up to that integer (checked for every
    // 1e8 k - 1 below 2^53); the product and the difference are then exact integers.
    const high = Math.floor(rest / 1e8);
    let low = rest - high * 1e8;
    for (let pair = 0; pair < 4; pair++) {
      const next = (low / 100) | 0;
      at = writePair(block, at, low - 100 * next);
      low = next;
    }
    rest = high;
  }
  let small = rest | 0;
  while (small >= 10) {
    const next = (small / 100) | 0;
    at = writePair(block, at, small - 100 * next);
    small = next;
  }
  // A last single digit; none when the pairs took them all, but 0 itself is one digit.
  if (small > 0 || at === end) block[at - 1] = 48 + small;
}

/** Writes the two digits of `n` (0 to 99) before `at`; returns where they start. */
function writePair(block: Uint8Array, at: number, n: number): number {
  block[at - 1] = DIGIT_PAIRS[2 * n + 1]!;
  block[at - 2] = DIGIT_PAIRS[2 * n]!;
  return at - 2;
}
