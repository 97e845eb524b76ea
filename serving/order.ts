/**
 * Sorting candidate positions by score, the hot sort of a feed request (once per source when
 * features are filled, once for the final order). A comparator sort calls back into JavaScript
 * some n log n times; here each (score, position) pair is packed into one double whose natural
 * order is "score descending, then position ascending", and the typed array is sorted natively.
 *
 * Scores compare at float32 precision (the model's own output precision): two scores closer
 * than that tie and keep their input order. NaN ranks lowest; -0 equals 0.
 *
 * @example
 *   const order = descendingOrder(Float32Array.of(0.2, 0.9, 0.2), 3, new Uint32Array(3)); // [1, 0, 2]
 */

/** Positions are packed in the low 21 bits of the key (the score takes the 32 above). */
const POSITIONS = 2 ** 21;
const f32 = new Float32Array(1);
const bits = new Uint32Array(f32.buffer);
let keys = new Float64Array(0);

/** Writes to `out[0..n)` the positions 0..n-1 of `values` by value descending, ties by position. */
export function descendingOrder(
  values: ArrayLike<number>,
  n: number,
  out: Uint32Array,
): Uint32Array {
  if (n > POSITIONS) throw new RangeError(`cannot order ${n} values (at most ${POSITIONS})`);
  if (out.length < n) throw new RangeError(`order buffer holds ${out.length}, need ${n}`);
  if (keys.length < n) keys = new Float64Array(Math.max(n, keys.length * 2, 256));
  for (let i = 0; i < n; i++) {
    const v = values[i] as number;
    f32[0] = v !== v ? -Infinity : v === 0 ? 0 : v;
    const u = bits[0] as number;
    // Monotone map of the float's bits to an unsigned integer (larger float, larger integer).
    const asc = u >= 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0;
    keys[i] = (0xffffffff - asc) * POSITIONS + i;
  }
  // Already in order (common: sources arrive ranked): no sort.
  let inOrder = true;
  for (let i = 1; i < n && inOrder; i++) inOrder = (keys[i - 1] as number) < (keys[i] as number);
  if (inOrder) {
    for (let r = 0; r < n; r++) out[r] = r;
    return out;
  }
  const sorted = keys.subarray(0, n).sort();
  for (let r = 0; r < n; r++) out[r] = (sorted[r] as number) % POSITIONS;
  return out;
}
