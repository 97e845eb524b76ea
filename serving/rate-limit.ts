/**
 * Per-key token buckets: each key (a user, i.e. a token's subject) may spend `ratePerSec`
 * requests per second with bursts up to `burst`. Buckets refill lazily on use, so an idle key
 * costs nothing but its map entry; entries that are full again are swept, which bounds memory by
 * the keys active in the last `burst / ratePerSec` seconds.
 *
 * @example
 *   const limiter = new RateLimiter({ ratePerSec: 50 });
 *   const waitMs = limiter.take(userId); // 0: allowed; otherwise retry after waitMs
 */

export interface RateLimiterOptions {
  ratePerSec: number;
  /** Bucket size. @default ratePerSec (one second's worth) */
  burst?: number;
  /** Clock in ms; injectable for tests. @default performance.now */
  now?: () => number;
  /** Sweep full buckets once the map holds this many keys. @default 10000 */
  sweepAtKeys?: number;
}

interface Bucket {
  tokens: number;
  lastMs: number;
}

export class RateLimiter {
  readonly #perMs: number;
  readonly #burst: number;
  readonly #now: () => number;
  readonly #sweepAt: number;
  readonly #buckets = new Map<string, Bucket>();
  #nextSweepAt: number;

  constructor(opts: RateLimiterOptions) {
    if (!(opts.ratePerSec > 0)) throw new RangeError('ratePerSec must be positive');
    this.#perMs = opts.ratePerSec / 1000;
    this.#burst = Math.max(1, opts.burst ?? opts.ratePerSec);
    this.#now = opts.now ?? (() => performance.now());
    this.#sweepAt = opts.sweepAtKeys ?? 10_000;
    this.#nextSweepAt = this.#sweepAt;
  }

  /** Takes one token for `key`: 0 when allowed, else the ms until a token is available. */
  take(key: string): number {
    const now = this.#now();
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size >= this.#nextSweepAt) this.#sweep(now);
      b = { tokens: this.#burst, lastMs: now };
      this.#buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.#burst, b.tokens + (now - b.lastMs) * this.#perMs);
      b.lastMs = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - b.tokens) / this.#perMs);
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** Drops buckets that have refilled completely: they behave exactly like a new one. */
  #sweep(now: number): void {
    for (const [key, b] of this.#buckets) {
      if (b.tokens + (now - b.lastMs) * this.#perMs >= this.#burst) this.#buckets.delete(key);
    }
    // If most keys are active, sweeping again at once would be quadratic: wait for growth.
    this.#nextSweepAt = Math.max(this.#sweepAt, this.#buckets.size * 2);
  }
}
