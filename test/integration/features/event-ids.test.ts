/**
 * The eventId window of the feature script (`store/event-ids.ts`) on a real Redis (database 5):
 * its count and age bounds, redelivery against re-send (the offset tag), the lookup table of
 * large calls, the move of the old in-hash window, and its bytes per user (`MEMORY USAGE`).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import {
  APPLIED,
  DUPLICATE,
  REDELIVERED,
  SessionFeatureStore,
  type FeatureEvent,
} from '../../../store/session-features.js';
import { decodeEventIds, eventIdHash } from '../../../store/event-ids.js';
import { USER_FIELDS, userEventIdsKey, userFeaturesKey } from '../../../store/keys.js';
import { config, requireServices, uniq } from '../harness.js';

const DB = 5;
const HOUR = 3_600_000;
/** A whole hour, so bucket boundaries (age / 12) fall on hours for a 12 h age. */
const T0 = 1_764_000_000_000;
const base = {
  halfLifeMs: HOUR,
  sessionGapMs: 1_800_000,
  recentItems: 3,
  maxCategories: 2,
  ttlSec: 3600,
};

let offset = 0;
function event(userId: string, over: Partial<FeatureEvent> = {}): FeatureEvent {
  offset += 1;
  return {
    userId,
    eventId: crypto.randomUUID(),
    itemId: 'i1',
    type: 'view',
    ts: T0,
    sessionId: null,
    category: null,
    partition: 0,
    offset: String(offset),
    receivedAt: T0,
    ...over,
  };
}

/** The same event sent again: same eventId, a later offset (and a later receipt). */
function resend(e: FeatureEvent, receivedAt = e.receivedAt): FeatureEvent {
  offset += 1;
  return { ...e, offset: String(offset), receivedAt };
}

describe('eventId window (Lua on real Redis)', () => {
  let redis: Redis;
  const users: string[] = [];
  const user = (p: string): string => {
    const u = uniq(p);
    users.push(u);
    return u;
  };
  before(() => {
    redis = new Redis(`${config.redis.url}/${DB}`, { lazyConnect: true, maxRetriesPerRequest: 1 });
  });
  after(async () => {
    const keys = users.flatMap((u) => [userFeaturesKey(u), userEventIdsKey(u)]);
    if (keys.length > 0) await redis.unlink(...keys).catch(() => undefined);
    redis.disconnect();
  });

  it('remembers the latest `dedupWindow` eventIds and forgets older ones', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const store = new SessionFeatureStore(redis, { ...base, dedupWindow: 5, dedupAgeMs: HOUR });
    const u = user('count');
    const seven = Array.from({ length: 7 }, () => event(u));
    assert.deepEqual(await store.apply(seven), Array(7).fill(APPLIED));
    const w = decodeEventIds(await redis.getBuffer(userEventIdsKey(u)));
    assert.equal(w.entries.length, 5);
    assert.deepEqual(
      w.entries.map((e) => e.hash.toString('hex')),
      seven.slice(2).map((e) => eventIdHash(e.eventId).toString('hex')),
    );
    // The third is the oldest kept; the first two were pushed out and apply again.
    assert.deepEqual(await store.apply([resend(seven[2] as FeatureEvent)]), [DUPLICATE]);
    assert.deepEqual(
      await store.apply([resend(seven[0] as FeatureEvent), resend(seven[1] as FeatureEvent)]),
      [APPLIED, APPLIED],
    );
  });

  it('keeps an eventId at least the age window, and drops it after', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    // 12 h of age: buckets of 1 h.
    const store = new SessionFeatureStore(redis, {
      ...base,
      dedupWindow: 1000,
      dedupAgeMs: 12 * HOUR,
    });
    const u = user('age');
    const first = event(u, { receivedAt: T0 + 1 });
    await store.apply([first]);
    // 12 h and 59 min later the bucket of `first` is 12 buckets behind: still kept.
    await store.apply([event(u, { receivedAt: T0 + 12 * HOUR + 59 * 60_000 })]);
    assert.deepEqual(await store.apply([resend(first, T0 + 13 * HOUR - 1)]), [DUPLICATE]);
    // An event 13 h after pushes it out.
    await store.apply([event(u, { receivedAt: T0 + 13 * HOUR })]);
    const w = decodeEventIds(await redis.getBuffer(userEventIdsKey(u)));
    assert.deepEqual(
      w.buckets.map((b) => b.bucket - T0 / HOUR),
      [12, 13],
    );
    assert.deepEqual(await store.apply([resend(first, T0 + 13 * HOUR)]), [APPLIED]);
    // The key expires one age and one bucket after its last write.
    const ttl = await redis.pttl(userEventIdsKey(u));
    assert.ok(ttl > 12.9 * HOUR && ttl <= 13 * HOUR, `pttl ${ttl}`);
  });

  it('tells a redelivery from a re-send by the offset that applied the eventId', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const store = new SessionFeatureStore(redis, { ...base, dedupWindow: 100, dedupAgeMs: HOUR });
    const u = user('tag');
    const a = event(u);
    await store.apply([a]);
    const again = resend(a);
    const b = event(u);
    assert.deepEqual(await store.apply([again, b]), [DUPLICATE, APPLIED]);
    // Redelivered after a crash: the re-send stays a duplicate (trending must not count it);
    // the records that applied their events are redeliveries.
    assert.deepEqual(await store.apply([again, b]), [DUPLICATE, REDELIVERED]);
    assert.deepEqual(await store.apply([a]), [REDELIVERED]);
    // A re-send in the same call as its original.
    const c = event(u);
    assert.deepEqual(await store.apply([c, resend(c)]), [APPLIED, DUPLICATE]);
  });

  it('checks a large call with a lookup table, with the same answers', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const store = new SessionFeatureStore(redis, { ...base, dedupWindow: 10_000 });
    const u = user('table');
    const old = Array.from({ length: 600 }, () => event(u));
    await store.apply(old);
    const mixed: FeatureEvent[] = [];
    for (let i = 0; i < 300; i++) mixed.push(resend(old[i * 2] as FeatureEvent), event(u));
    const statuses = await store.apply(mixed);
    assert.deepEqual(
      statuses,
      mixed.map((_, i) => (i % 2 === 0 ? DUPLICATE : APPLIED)),
    );
    assert.equal(Number(await redis.hget(userFeaturesKey(u), USER_FIELDS.total)), 900);
  });

  it('moves the eventIds the feature hash kept before into the window', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const store = new SessionFeatureStore(redis, { ...base, dedupWindow: 100 });
    const u = user('legacy');
    const known = [crypto.randomUUID(), crypto.randomUUID()];
    // The old layout: newest first, 6 bytes each, in field `d` of the hash.
    await redis.hset(userFeaturesKey(u), {
      [USER_FIELDS.total]: '2',
      [USER_FIELDS.offset]: '0:2',
      [USER_FIELDS.dedup]: Buffer.concat(known.map(eventIdHash).reverse()),
    });
    const statuses = await store.apply([
      event(u, { eventId: known[0] as string }),
      event(u),
      event(u, { eventId: known[1] as string }),
    ]);
    assert.deepEqual(statuses, [DUPLICATE, APPLIED, DUPLICATE]);
    assert.equal(await redis.hexists(userFeaturesKey(u), USER_FIELDS.dedup), 0);
    const w = decodeEventIds(await redis.getBuffer(userEventIdsKey(u)));
    assert.deepEqual(
      w.entries.slice(0, 2).map((e) => [e.hash.toString('hex'), e.tag]),
      known.map((id) => [eventIdHash(id).toString('hex'), 65535]),
    );
    assert.equal(w.entries.length, 3);
    assert.deepEqual(await store.apply([event(u, { eventId: known[0] as string })]), [DUPLICATE]);
  });

  it('costs about 8 bytes per remembered event (MEMORY USAGE)', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const store = new SessionFeatureStore(redis, { ...base, dedupWindow: 10_000 });
    const sizes: Record<number, number> = {};
    for (const n of [1, 20, 200, 10_000]) {
      const u = user(`mem${n}`);
      // Over 3 hours of receipts, as a busy user's would spread over buckets.
      const events = Array.from({ length: n }, (_, i) =>
        event(u, { receivedAt: T0 + Math.floor((i * 3 * HOUR) / n) }),
      );
      for (let i = 0; i < n; i += 2000) await store.apply(events.slice(i, i + 2000));
      sizes[n] = Number(await redis.memory('USAGE', userEventIdsKey(u), 'SAMPLES', 0));
    }
    t.diagnostic(`MEMORY USAGE of {u:<id>}:e by events remembered: ${JSON.stringify(sizes)}`);
    const perEvent = ((sizes[10_000] as number) - (sizes[200] as number)) / 9800;
    assert.ok(perEvent >= 8 && perEvent < 8.5, `bytes per event ${perEvent}`);
    assert.ok((sizes[20] as number) < 300, `20 events cost ${sizes[20]} bytes`);
  });
});
