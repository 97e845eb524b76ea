/**
 * Sorting candidate positions by score, the hot sort of a feed request (once per source when
 * features are filled, once for the final order). A comparator sort calls back into JavaScript
 * some n log n times; here each score becomes a 32-bit key whose unsigned order is "score
 * descending", and the positions are sorted by key with a stable least-significant-digit radix
 * sort (four passes of 8 bits, a pass skipped when every key has the same digit there), so
 * equal keys keep their positions' order.
 *
 * Scores compare at float32 precision (the model's own output precision): two scores closer
 * than that tie and keep their input order. NaN ranks lowest; -0 equals 0.
 *
 * About twice as fast as a native sort of packed (key, position) pairs on a feed's ~200 scores.
 *
 * @example
 *   const order = descendingOrder(Float32Array.of(0.2, 0.9, 0.2), 3, new Uint32Array(3)); // [1, 0, 2]
 */

const f32 = new Float32Array(1);
const bits = new Uint32Array(f32.buffer);
let keys = new Uint32Array(256);
let keys2 = new Uint32Array(256);
let pos2 = new Uint32Array(256);
/** Digit counts of the four passes (256 each), then running offsets. */
const counts = new Uint32Array(4 * 256);

/** Writes to `out[0..n)` the positions 0..n-1 of `values` by value descending, ties by position. */
export function descendingOrder(
  values: ArrayLike<number>,
  n: number,
  out: Uint32Array,
): Uint32Array {
  if (out.length < n) throw new RangeError(`order buffer holds ${out.length}, need ${n}`);
  if (keys.length < n) {
    const size = Math.max(n, keys.length * 2);
    keys = new Uint32Array(size);
    keys2 = new Uint32Array(size);
    pos2 = new Uint32Array(size);
  }
  let inOrder = true;
  for (let i = 0; i < n; i++) {
    const v = values[i] as number;
    f32[0] = v !== v ? -Infinity : v === 0 ? 0 : v;
    const u = bits[0] as number;
    // Monotone map of the float's bits to an unsigned integer (larger float, larger integer),
    // then flipped: smaller key, higher score.
    const asc = u >= 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0;
    const key = (0xffffffff - asc) >>> 0;
    keys[i] = key;
    if (i > 0 && key < (keys[i - 1] as number)) inOrder = false;
  }
  for (let r = 0; r < n; r++) out[r] = r;
  // Already in order (common: sources arrive ranked): no sort.
  if (inOrder) return out;

  counts.fill(0);
  for (let i = 0; i < n; i++) {
    const k = keys[i] as number;
    const a = k & 0xff;
    const b = 256 + ((k >>> 8) & 0xff);
    const c = 512 + ((k >>> 16) & 0xff);
    const d = 768 + (k >>> 24);
    counts[a] = (counts[a] as number) + 1;
    counts[b] = (counts[b] as number) + 1;
    counts[c] = (counts[c] as number) + 1;
    counts[d] = (counts[d] as number) + 1;
  }
  // Ping-pong between (keys, out) and (keys2, pos2); `src` says which pair holds the order.
  let srcKeys: Uint32Array = keys;
  let srcPos: Uint32Array = out;
  let dstKeys: Uint32Array = keys2;
  let dstPos: Uint32Array = pos2;
  for (let pass = 0; pass < 4; pass++) {
    const base = pass * 256;
    const shift = pass * 8;
    // Every key has the same digit here: the pass would not move anything.
    if (counts[base + (((srcKeys[0] as number) >>> shift) & 0xff)] === n) continue;
    let sum = 0;
    for (let d = 0; d < 256; d++) {
      const c = counts[base + d] as number;
      counts[base + d] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const k = srcKeys[i] as number;
      const at = base + ((k >>> shift) & 0xff);
      const j = counts[at] as number;
      counts[at] = j + 1;
      dstKeys[j] = k;
      dstPos[j] = srcPos[i] as number;
    }
    const k = srcKeys;
    const p = srcPos;
    srcKeys = dstKeys;
    srcPos = dstPos;
    dstKeys = k;
    dstPos = p;
  }
  if (srcPos !== out) out.set(srcPos.subarray(0, n));
  return out;
}
