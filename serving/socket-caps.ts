/**
 * Caps on live sockets: at most `maxSockets` in this process, at most `maxPerUser` per user.
 *
 * The per-user cap holds across every serving worker and host when a lease store is given
 * (`store/socket-leases.ts`, leases in Redis): the kernel spreads a user's connections over
 * the workers (SO_REUSEPORT), so no one process sees them all. Routing a user to one worker
 * would need a proxy in front; counting through the cluster primary would hold for one host
 * only and lose its counts with the primary. The cost is one Redis script per socket upgrade
 * (not per feed) and one per user with sockets every `leaseMs / 3` (renewal). Without a store
 * (tests with doubles), or while Redis is out of reach, the per-user cap counts this process's
 * sockets only.
 *
 * An upgrade counts against the process cap from the moment Redis is asked, so upgrades in
 * flight cannot overshoot it; {@link SocketCaps.release} is safe to call twice. A renewal that
 * crosses a release in flight can bring that lease back until it expires (at most `leaseMs`):
 * renewals re-add what they name so that counts return after Redis restarts empty.
 *
 * @example
 *   const caps = new SocketCaps({ maxSockets: 20000, maxPerUser: 8, leases, log });
 *   const got = await caps.acquire('u42');   // { ok: false, reason: 'user' } at the cap
 *   if (got.ok) caps.release(got.lease);     // when the socket closes
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../core/index.js';
import type { SocketLeaseStore } from '../store/socket-leases.js';

export interface SocketCapsOptions {
  maxSockets: number;
  maxPerUser: number;
  /** Leases shared by every process; absent: the per-user cap is per process. */
  leases?: Pick<SocketLeaseStore, 'acquire' | 'renew' | 'release' | 'leaseMs'>;
  log: Logger;
}

/** One socket's place under the caps; opaque to callers. */
export interface Lease {
  readonly userId: string;
  readonly id: string;
}

export type Acquired = { ok: true; lease: Lease } | { ok: false; reason: 'process' | 'user' };

interface Held extends Lease {
  released: boolean;
}

export class SocketCaps {
  readonly #opts: SocketCapsOptions;
  /** Socket ids granted in this process, by user (what renewals name). */
  readonly #byUser = new Map<string, Set<string>>();
  /** Unique per process and host: `<pid>-<random>`; the socket's number follows. */
  readonly #prefix = `${process.pid}-${randomBytes(3).toString('hex')}`;
  readonly #renewer: NodeJS.Timeout | null;
  #held = 0;
  #seq = 0;
  /** The lease store failed on the latest upgrade. */
  #degraded = false;

  constructor(opts: SocketCapsOptions) {
    this.#opts = opts;
    const leases = opts.leases;
    // Renewed three times per lease: one failed renewal (a Redis blip) loses nothing.
    this.#renewer = leases ? setInterval(() => this.#renew(), leases.leaseMs / 3) : null;
    this.#renewer?.unref();
  }

  /** Sockets (and upgrades under way) this process holds. */
  get held(): number {
    return this.#held;
  }

  /** True when this process takes no more sockets. */
  full(): boolean {
    return this.#held >= this.#opts.maxSockets;
  }

  /**
   * A place for one more socket of `userId`, or why not. When the lease store fails (Redis out
   * of reach) the per-user cap counts this process's sockets until it answers again.
   */
  async acquire(userId: string): Promise<Acquired> {
    if (this.full()) return { ok: false, reason: 'process' };
    const lease: Held = { userId, id: `${this.#prefix}.${++this.#seq}`, released: false };
    const { leases, maxPerUser } = this.#opts;
    if (!leases) {
      if ((this.#byUser.get(userId)?.size ?? 0) >= maxPerUser) return { ok: false, reason: 'user' };
      this.#hold(lease);
      return { ok: true, lease };
    }
    // Reserved in the process count while Redis answers, but not renewed until granted: a
    // renewal re-adds what it names, and must not add a lease Redis is about to refuse.
    this.#held += 1;
    let ok: boolean;
    try {
      ok = await leases.acquire(userId, lease.id, maxPerUser);
      if (this.#degraded) {
        this.#degraded = false;
        this.#opts.log.info('socket leases reachable again: the per-user cap holds everywhere');
      }
    } catch (err) {
      // Redis out of reach: the cap holds per process meanwhile (the socket's feed fails with
      // its own error frame); renewals add these leases once Redis is back.
      if (!this.#degraded) {
        this.#degraded = true;
        this.#opts.log.warn(
          { err: (err as Error).message },
          'socket leases unreachable: the per-user cap counts this process only',
        );
      }
      ok = (this.#byUser.get(userId)?.size ?? 0) < maxPerUser;
    } finally {
      this.#held -= 1;
    }
    if (!ok) return { ok: false, reason: 'user' };
    this.#hold(lease);
    return { ok: true, lease };
  }

  /** The socket closed, or its upgrade never completed. Safe to call twice. */
  release(lease: Lease): void {
    const held = lease as Held;
    if (held.released) return;
    this.#forget(held);
    this.#drop(held);
  }

  /** Stops renewing (the process is stopping; its sockets close). */
  close(): void {
    if (this.#renewer) clearInterval(this.#renewer);
  }

  #hold(lease: Held): void {
    let ids = this.#byUser.get(lease.userId);
    if (!ids) this.#byUser.set(lease.userId, (ids = new Set()));
    ids.add(lease.id);
    this.#held += 1;
  }

  #forget(lease: Held): void {
    if (lease.released) return;
    lease.released = true;
    this.#held -= 1;
    const ids = this.#byUser.get(lease.userId);
    ids?.delete(lease.id);
    if (ids?.size === 0) this.#byUser.delete(lease.userId);
  }

  #drop(lease: Held): void {
    // Not awaited: a failed release only leaves a lease that expires by itself.
    this.#opts.leases?.release(lease.userId, lease.id).catch((err: Error) => {
      this.#opts.log.debug({ err: err.message }, 'socket lease not released; it will expire');
    });
  }

  #renew(): void {
    if (this.#byUser.size === 0) return;
    this.#opts.leases?.renew(this.#byUser).catch((err: Error) => {
      this.#opts.log.warn({ err: err.message }, 'socket leases not renewed; retrying');
    });
  }
}
