/**
 * The live socket caps and upgrade shedding, pure logic: the process and per-user caps (with a
 * lease store double standing in for Redis, whose script the integration test drives), what a
 * failed or refused lease leaves behind, what renewals name; which bound an upgrade breaks; the
 * event-loop delay from a timer that is late or overdue.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../../core/log.js';
import { SocketCaps, type Lease } from '../../../serving/socket-caps.js';
import { LagMonitor, shedReason } from '../../../serving/upgrade-shed.js';

const log = createLogger('silent');

/** Leases as Redis keeps them, minus the clock: a set per user. */
class LeaseDouble {
  readonly leaseMs = 60_000;
  readonly byUser = new Map<string, Set<string>>();
  renewed: Array<[string, string[]]> = [];
  failing = false;
  /** Resolves acquire() calls only when released by the test. */
  gate: Promise<void> = Promise.resolve();
  async acquire(userId: string, id: string, cap: number): Promise<boolean> {
    await this.gate;
    if (this.failing) throw new Error('redis down');
    const ids = this.byUser.get(userId) ?? new Set();
    if (ids.size >= cap) return false;
    this.byUser.set(userId, ids.add(id));
    return true;
  }
  async renew(byUser: ReadonlyMap<string, Iterable<string>>): Promise<void> {
    for (const [u, ids] of byUser) this.renewed.push([u, [...ids]]);
  }
  async release(userId: string, id: string): Promise<void> {
    this.byUser.get(userId)?.delete(id);
  }
}

const granted = (r: Awaited<ReturnType<SocketCaps['acquire']>>): Lease => {
  assert.ok(r.ok, 'granted');
  return r.lease;
};

describe('SocketCaps', () => {
  it('without a store: per-user and per-process caps in this process', async () => {
    const caps = new SocketCaps({ maxSockets: 3, maxPerUser: 2, log });
    const a1 = granted(await caps.acquire('alice'));
    granted(await caps.acquire('alice'));
    assert.deepEqual(await caps.acquire('alice'), { ok: false, reason: 'user' });
    granted(await caps.acquire('bob'));
    assert.ok(caps.full());
    assert.deepEqual(await caps.acquire('carol'), { ok: false, reason: 'process' });
    caps.release(a1);
    caps.release(a1);
    assert.equal(caps.held, 2, 'a second release changes nothing');
    granted(await caps.acquire('alice'));
    caps.close();
  });

  it('with a store: the store decides per user; a refusal leaves nothing held', async () => {
    const leases = new LeaseDouble();
    const caps = new SocketCaps({ maxSockets: 10, maxPerUser: 2, leases, log });
    const a1 = granted(await caps.acquire('alice'));
    // Another process took alice's second place.
    leases.byUser.get('alice')?.add('other-process.1');
    assert.deepEqual(await caps.acquire('alice'), { ok: false, reason: 'user' });
    assert.equal(caps.held, 1);
    caps.release(a1);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual([...(leases.byUser.get('alice') ?? [])], ['other-process.1']);
    assert.equal(caps.held, 0);
    caps.close();
  });

  it('while the store fails, counts per process; its leases are renewed once it is back', async () => {
    const leases = new LeaseDouble();
    Object.defineProperty(leases, 'leaseMs', { value: 30 });
    const caps = new SocketCaps({ maxSockets: 10, maxPerUser: 2, leases, log });
    leases.failing = true;
    granted(await caps.acquire('bob'));
    granted(await caps.acquire('bob'));
    assert.deepEqual(await caps.acquire('bob'), { ok: false, reason: 'user' });
    assert.equal(caps.held, 2);
    leases.failing = false;
    await new Promise((r) => setTimeout(r, 25));
    assert.equal(new Map(leases.renewed).get('bob')?.length, 2, 'renewal names both');
    caps.close();
  });

  it('counts upgrades waiting for the store against the process cap, but never renews them', async () => {
    const leases = new LeaseDouble();
    Object.defineProperty(leases, 'leaseMs', { value: 30 }); // renewals every 10 ms
    let open!: () => void;
    leases.gate = new Promise((r) => (open = r));
    const caps = new SocketCaps({ maxSockets: 2, maxPerUser: 5, leases, log });
    const pending = [caps.acquire('alice'), caps.acquire('bob')];
    assert.ok(caps.full(), 'two upgrades under way fill a cap of two');
    assert.deepEqual(await caps.acquire('carol'), { ok: false, reason: 'process' });
    await new Promise((r) => setTimeout(r, 35));
    // A renewal re-adds what it names: it must not add a lease Redis may still refuse.
    assert.equal(leases.renewed.length, 0);
    open();
    const [a, b] = await Promise.all(pending);
    assert.ok(a?.ok && b?.ok);
    assert.equal(caps.held, 2);
    await new Promise((r) => setTimeout(r, 25));
    assert.deepEqual(new Set(leases.renewed.map(([u]) => u)), new Set(['alice', 'bob']));
    caps.close();
  });

  it('renews the granted leases by user every third of the lease', async () => {
    const leases = new LeaseDouble();
    Object.defineProperty(leases, 'leaseMs', { value: 60 });
    const caps = new SocketCaps({ maxSockets: 10, maxPerUser: 5, leases, log });
    const a = granted(await caps.acquire('alice'));
    granted(await caps.acquire('alice'));
    granted(await caps.acquire('bob'));
    await new Promise((r) => setTimeout(r, 30));
    assert.ok(leases.renewed.length >= 2, `renewed ${JSON.stringify(leases.renewed)}`);
    const first = new Map(leases.renewed.slice(0, 2));
    assert.equal(first.get('alice')?.length, 2);
    assert.equal(first.get('bob')?.length, 1);
    caps.release(a);
    leases.renewed = [];
    await new Promise((r) => setTimeout(r, 30));
    assert.ok(leases.renewed.every(([u, ids]) => u !== 'alice' || ids.length === 1));
    caps.close();
  });
});

describe('shedReason', () => {
  const calm = { full: false, inFlight: 3, maxInFlight: 128, lagMs: 5, maxLagMs: 200 };
  it('names the first bound broken, or null', () => {
    assert.equal(shedReason(calm), null);
    assert.equal(shedReason({ ...calm, full: true, inFlight: 500 }), 'sockets');
    assert.equal(shedReason({ ...calm, inFlight: 128 }), 'in_flight');
    assert.equal(shedReason({ ...calm, lagMs: 201 }), 'event_loop_lag');
    assert.equal(shedReason({ ...calm, lagMs: 200 }), null);
    assert.equal(shedReason({ ...calm, lagMs: 5000, maxLagMs: 0 }), null, '0 = off');
  });
});

describe('LagMonitor', () => {
  it('smooths the lateness of its timer, counting the time it is overdue now', () => {
    let now = 1000;
    const lag = new LagMonitor(100, () => now);
    try {
      assert.equal(lag.lagMs(), 0);
      now = 1100;
      lag.tick(); // on time
      assert.equal(lag.lagMs(), 0);
      now = 1500; // a 300 ms stall: the timer is overdue before it gets its turn
      assert.equal(lag.lagMs(), 75, 'a quarter of the way to 300');
      lag.tick();
      assert.equal(lag.lagMs(), 75, 'one stall: 300 ms late, smoothed');
      now = 1600;
      lag.tick();
      assert.equal(lag.lagMs(), 56.25, 'on time again: decaying');
      // A loop that stays 200 ms late approaches 200.
      for (let i = 0; i < 20; i++) {
        now += 300;
        lag.tick();
      }
      assert.ok(Math.abs(lag.lagMs() - 200) < 1, String(lag.lagMs()));
    } finally {
      lag.stop();
    }
  });
});
