/**
 * Leases on live sockets, one sorted set per user (`{u:<userId>}:ws`, member = socket id, score
 * = expiry on the Redis clock), so the per-user socket cap holds across serving workers and
 * hosts: the kernel hands a user's connections to any worker, and only Redis sees them all.
 *
 * A lease is taken by one script that drops the user's expired leases, counts the rest and adds
 * the new one only below the cap (atomic: two workers cannot both take the last place). Each
 * process renews its sockets' leases well within `leaseMs` and drops a lease when its socket
 * closes; a process that dies without doing so stops counting once its leases expire. Expiries
 * come from Redis's own clock (TIME), so hosts with skewed clocks agree. Renewal re-adds a lease
 * that vanished (Redis restarted empty), so counts come back within one renewal.
 *
 * @example
 *   const leases = new SocketLeaseStore(redis, { leaseMs: 30_000 });
 *   if (await leases.acquire('u42', 'p1.7', 8)) { ... }   // false: the user holds 8 already
 *   await leases.renew(new Map([['u42', ['p1.7']]]));
 *   await leases.release('u42', 'p1.7');
 */
import type { RedisClient } from './redis.js';
import { DependencyUnavailableError, withTimeout } from '../core/index.js';
import { userSocketLeasesKey } from './keys.js';

export interface SocketLeaseOptions {
  /** How long a lease lasts after its latest renewal, ms. */
  leaseMs: number;
  /**
   * How long an upgrade waits for a lease before giving up, ms (Redis still connecting is
   * waited for, a dead one is not waited out). A lease granted after it expires on its own.
   * @default 1000
   */
  acquireTimeoutMs?: number;
}

// Redis clock in ms; TIME is allowed in scripts since Redis 5 (effects replication).
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS[1] leases; ARGV: socket id, cap, lease ms. 1 taken (or already held), 0 at the cap. */
const ACQUIRE = `${NOW}
local key, id, cap, ms = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, id) and redis.call('ZCARD', key) >= cap then return 0 end
redis.call('ZADD', key, now + ms, id)
redis.call('PEXPIRE', key, ms)
return 1`;

/** KEYS[1] leases; ARGV: lease ms, socket ids. Extends (or re-adds) them; drops expired ones. */
const RENEW = `${NOW}
local key, ms = KEYS[1], tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
for i = 2, #ARGV do redis.call('ZADD', key, now + ms, ARGV[i]) end
redis.call('PEXPIRE', key, ms)
return #ARGV - 1`;

type ScriptRedis = RedisClient & {
  recsysSocketLeaseAcquire(key: string, id: string, cap: number, ms: number): Promise<number>;
  recsysSocketLeaseRenew(key: string, ms: number, ...ids: string[]): Promise<number>;
};

export class SocketLeaseStore {
  readonly #redis: ScriptRedis;
  readonly #leaseMs: number;
  readonly #timeoutMs: number;

  constructor(redis: RedisClient, options: SocketLeaseOptions) {
    if (!('recsysSocketLeaseAcquire' in redis)) {
      redis.defineCommand('recsysSocketLeaseAcquire', { numberOfKeys: 1, lua: ACQUIRE });
      redis.defineCommand('recsysSocketLeaseRenew', { numberOfKeys: 1, lua: RENEW });
    }
    this.#redis = redis as ScriptRedis;
    this.#leaseMs = options.leaseMs;
    this.#timeoutMs = options.acquireTimeoutMs ?? 1000;
  }

  get leaseMs(): number {
    return this.#leaseMs;
  }

  /**
   * Takes a lease for socket `id` unless `userId` holds `cap` live leases; true when taken.
   * Throws {@link DependencyUnavailableError} when Redis does not answer within the timeout.
   */
  async acquire(userId: string, id: string, cap: number): Promise<boolean> {
    const key = userSocketLeasesKey(userId);
    const reply = await withTimeout(
      this.#redis.recsysSocketLeaseAcquire(key, id, cap, this.#leaseMs),
      this.#timeoutMs,
      () => new DependencyUnavailableError('redis', `no socket lease within ${this.#timeoutMs} ms`),
    );
    return reply === 1;
  }

  /**
   * Renews the leases of the given sockets by user: one script per user, all issued in one
   * turn (the serving connection sends them in one write).
   */
  async renew(byUser: ReadonlyMap<string, Iterable<string>>): Promise<void> {
    const calls: Promise<number>[] = [];
    for (const [userId, ids] of byUser) {
      const list = [...ids];
      if (list.length === 0) continue;
      calls.push(
        this.#redis.recsysSocketLeaseRenew(userSocketLeasesKey(userId), this.#leaseMs, ...list),
      );
    }
    await Promise.all(calls);
  }

  /** Drops one lease (its socket closed). */
  async release(userId: string, id: string): Promise<void> {
    await this.#redis.zrem(userSocketLeasesKey(userId), id);
  }
}
