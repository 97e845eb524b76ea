/**
 * The feature script against a real Redis, checked with hand-computed values: affinity decay
 * (including an event that arrives late), session boundaries (derived and client-sent), caps,
 * redelivery and re-send detection, and the change signal.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import {
  APPLIED,
  DUPLICATE,
  SessionFeatureStore,
  readFeatures,
  REDELIVERED,
  type FeatureEvent,
} from '../../../store/session-features.js';
import { FEATURE_CHANNEL, userFeaturesKey } from '../../../store/keys.js';
import { config, requireServices, uniq } from '../harness.js';

const HOUR = 3_600_000;
const MIN = 60_000;
const T0 = 1_764_000_000_000;
const options = {
  halfLifeMs: HOUR,
  sessionGapMs: 30 * MIN,
  recentItems: 3,
  maxCategories: 2,
  dedupWindow: 4,
  ttlSec: 3600,
};

let offset = 0;
function event(userId: string, over: Partial<FeatureEvent>): FeatureEvent {
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
    ...over,
  };
}

describe('feature store (Lua on real Redis)', () => {
  let redis: Redis;
  let store: SessionFeatureStore;
  before(() => {
    redis = new Redis(config.redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    store = new SessionFeatureStore(redis, options);
  });
  after(() => redis.disconnect());

  it('decays affinities by the half-life, whatever order the events arrive in', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const u = uniq('decay');
    const statuses = await store.apply([
      event(u, { type: 'view', category: 'A', ts: T0 }), // A: 1
      event(u, { type: 'click', category: 'A', ts: T0 + HOUR }), // A: 1/2 + 2 = 2.5
      event(u, { type: 'purchase', category: 'B', ts: T0 + 3 * HOUR }), // A: 0.625, B: 5
    ]);
    assert.deepEqual(statuses, [APPLIED, APPLIED, APPLIED]);
    // Late: a like (3) from T0+2h adds 3 * 2^-1 = 1.5 to B at the reference time T0+3h.
    await store.apply([event(u, { type: 'like', category: 'B', ts: T0 + 2 * HOUR })]);
    const f = await readFeatures(redis, u, T0 + 4 * HOUR, HOUR);
    assert.ok(f);
    const aff = Object.fromEntries(f.affinities);
    assert.ok(Math.abs((aff.B ?? 0) - 3.25) < 1e-5, `B ${aff.B}`); // 6.5 / 2
    assert.ok(Math.abs((aff.A ?? 0) - 0.3125) < 1e-5, `A ${aff.A}`); // 0.625 / 2
    assert.deepEqual(
      f.affinities.map(([c]) => c),
      ['B', 'A'],
    );
    assert.deepEqual(f.counts, { view: 1, click: 1, add_to_cart: 0, like: 1, purchase: 1 });
    assert.equal(f.total, 4);
  });

  it('starts a derived session after the gap, and follows the client session id', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const u = uniq('session');
    const read = async () => (await readFeatures(redis, u, T0, HOUR))?.session;
    await store.apply([event(u, { ts: T0 }), event(u, { ts: T0 + 10 * MIN })]);
    assert.deepEqual(await read(), { id: `a${T0}`, start: T0, last: T0 + 10 * MIN, length: 2 });
    // 30 min exactly is still the same session; 30 min + 1 ms is not.
    await store.apply([event(u, { ts: T0 + 40 * MIN })]);
    assert.equal((await read())?.length, 3);
    const t2 = T0 + 70 * MIN + 1;
    await store.apply([event(u, { ts: t2 })]);
    assert.deepEqual(await read(), { id: `a${t2}`, start: t2, last: t2, length: 1 });
    // A client session id starts its own session at once, and events without an id continue it.
    await store.apply([
      event(u, { ts: t2 + MIN, sessionId: 'S1' }),
      event(u, { ts: t2 + 2 * MIN }),
      event(u, { ts: t2 + 90 * MIN, sessionId: 'S1' }),
    ]);
    assert.deepEqual(await read(), { id: 'S1', start: t2 + MIN, last: t2 + 90 * MIN, length: 3 });
  });

  it('caps recent items and categories, keeping the newest and the strongest', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const u = uniq('caps');
    await store.apply([
      event(u, { itemId: 'a', category: 'X', type: 'purchase' }),
      event(u, { itemId: 'b', category: 'Y', type: 'view' }),
      event(u, { itemId: 'c', category: 'Z', type: 'click' }), // Y (1) is the weakest: dropped
      event(u, { itemId: 'a', category: 'X' }),
      event(u, { itemId: 'd', category: null }),
    ]);
    const f = await readFeatures(redis, u, T0, HOUR);
    assert.deepEqual(f?.recent, ['d', 'a', 'c']);
    assert.deepEqual(f?.purchased, ['a']);
    assert.deepEqual(
      f?.affinities.map(([c, v]) => [c, v]),
      [
        ['X', 6],
        ['Z', 2],
      ],
    );
  });

  it('skips redelivered records and re-sent events without writing a byte', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const u = uniq('dedup');
    const first = [event(u, { category: 'A' }), event(u, { type: 'click', category: 'A' })];
    await store.apply(first);
    const before = await redis.dump(userFeaturesKey(u));
    // The same records again (a consumer restarted before its commit).
    assert.deepEqual(await store.apply(first), [REDELIVERED, REDELIVERED]);
    // The same events at new offsets (a client re-sent them), in upper case this time.
    const resent = first.map((e) =>
      event(u, { ...e, eventId: e.eventId.toUpperCase(), offset: undefined }),
    );
    resent.forEach((e, i) => (e.offset = String(Number(first[1]?.offset) + 10 + i)));
    assert.deepEqual(await store.apply(resent), [DUPLICATE, DUPLICATE]);
    assert.deepEqual(await redis.dump(userFeaturesKey(u)), before);
    // Beyond the window of 4 eventIds an old event is no longer recognised: the window is a bound.
    for (let i = 0; i < 4; i++) await store.apply([event(u, {})]);
    const late = event(u, { eventId: first[0]?.eventId });
    assert.deepEqual(await store.apply([late]), [APPLIED]);
  });

  it('publishes the userId once per applied chunk, and not for skipped ones', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const u = uniq('signal');
    const sub = new Redis(config.redis.url, { maxRetriesPerRequest: 1 });
    const got: string[] = [];
    sub.on('message', (_ch: string, msg: string) => {
      if (msg === u) got.push(msg);
    });
    await sub.subscribe(FEATURE_CHANNEL);
    const e = [event(u, {}), event(u, {})];
    await store.apply(e);
    await store.apply(e);
    await new Promise((r) => setTimeout(r, 200));
    sub.disconnect();
    assert.deepEqual(got, [u]);
    assert.ok((await redis.ttl(userFeaturesKey(u))) > 3500);
  });
  it('keeps the consumed items of the consumed types, newest first and capped', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const all = uniq('consumed-all');
    const every = new SessionFeatureStore(redis, {
      ...options,
      consumedTypes: ['view', 'click', 'like', 'add_to_cart', 'purchase'],
    });
    await every.apply([
      event(all, { itemId: 'a', type: 'view', ts: T0 }),
      event(all, { itemId: 'b', type: 'add_to_cart', ts: T0 + 1 }),
      event(all, { itemId: 'a', type: 'purchase', ts: T0 + 2 }),
    ]);
    // `a` again moves to the front, once.
    assert.deepEqual((await readFeatures(redis, all, T0, HOUR))?.consumed, ['a', 'b']);

    const narrow = new SessionFeatureStore(redis, {
      ...options,
      consumedTypes: ['purchase'],
      consumedItems: 2,
    });
    const buyer = uniq('consumed-purchase');
    await narrow.apply([
      event(buyer, { itemId: 'x', type: 'view', ts: T0 }),
      event(buyer, { itemId: 'p1', type: 'purchase', ts: T0 + 1 }),
      event(buyer, { itemId: 'p2', type: 'purchase', ts: T0 + 2 }),
      event(buyer, { itemId: 'p3', type: 'purchase', ts: T0 + 3 }),
    ]);
    const f = await readFeatures(redis, buyer, T0, HOUR);
    assert.deepEqual(f?.consumed, ['p3', 'p2']);
    assert.deepEqual(f?.recent, ['p3', 'p2', 'p1']);
  });
});
