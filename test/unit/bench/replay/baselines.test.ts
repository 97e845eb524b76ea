import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  Covisitation,
  lastDistinct,
  PopularityCounter,
  runBaselines,
} from '../../../../bench/replay/baselines.js';
import { makePlan } from '../../../../bench/replay/plan.js';
import { dispatchInOrder } from '../../../../bench/replay/replay.js';
import { unzip } from '../../../../bench/replay/data.js';
import { deflateRawSync } from 'node:zlib';

describe('replay baselines', () => {
  it('PopularityCounter keeps items sorted by count as they grow', () => {
    const pop = new PopularityCounter();
    const counts = new Map<string, number>();
    // A pseudo-random stream; after each add the order must match a full sort.
    let x = 7;
    for (let n = 0; n < 2000; n++) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      const item = `i${x % 37}`;
      pop.add(item);
      counts.set(item, (counts.get(item) ?? 0) + 1);
      const top = pop.top(counts.size, () => false);
      for (let i = 1; i < top.length; i++) {
        assert.ok(pop.count(top[i - 1] as string) >= pop.count(top[i] as string), `order at ${n}`);
      }
    }
    for (const [item, c] of counts) assert.equal(pop.count(item), c);
    assert.deepEqual(
      pop.top(3, (i) => i === pop.top(1, () => false)[0]),
      pop.top(4, () => false).slice(1),
    );
  });

  it('co-visitation pairs an event with the previous `window` events, both ways', () => {
    const c = new Covisitation(2);
    c.add('b', ['a']);
    c.add('c', ['a', 'b']);
    c.add('d', ['a', 'b', 'c']); // pairs with b and c only
    c.add('c', ['b']); // b-c twice now
    assert.deepEqual(
      c.top(['b'], 5, () => false),
      ['c', 'a', 'd'],
    );
    assert.deepEqual(
      c.top(['a'], 5, () => false),
      ['b', 'c'],
    );
    assert.deepEqual(
      c.top(['b', 'c'], 5, () => false),
      ['a', 'd'],
    );
    assert.deepEqual(
      c.top(['b'], 5, (i) => i === 'c'),
      ['a', 'd'],
    );
    assert.deepEqual(lastDistinct(['a', 'b', 'a', 'c', 'c'], 3), ['c', 'a', 'b']);
  });

  it('prequential: each replayed event is ranked before it is learnt', () => {
    const history = [
      { user: 'u1', item: 'a' },
      { user: 'u1', item: 'b' },
      { user: 'u2', item: 'a' },
    ];
    const replay = [
      { user: 'u2', item: 'b', nth: 1, cold: false },
      { user: 'u3', item: 'c', nth: 1, cold: true },
      { user: 'u3', item: 'c', nth: 2, cold: true },
    ];
    const r = runBaselines(history, replay, { k: 2, window: 3, lastItems: 3 });
    // u2 last saw a; a's neighbour is b.
    assert.equal(r.covis.outcomes[0]?.rank, 0);
    assert.equal(r.covis_new.outcomes[0]?.rank, 0);
    // Popularity: a (2), b (1): b is 2nd; without consumed items (a), b is first.
    assert.equal(r.popularity.outcomes[0]?.rank, 1);
    assert.equal(r.popularity_new.outcomes[0]?.rank, 0);
    assert.equal(r.popularity.outcomes[0]?.consumedShown, 1);
    // c was never seen before its first event: a miss; learnt afterwards.
    assert.equal(r.popularity.outcomes[1]?.rank, null);
    assert.equal(r.covis.outcomes[2]?.rank, null);
    assert.equal(r.popularity_new.outcomes[2]?.rank, null, 'consumed c left out');
    assert.deepEqual(r.popularity.lists[1], ['a', 'b']);
  });

  it('plan: time order, re-timing into the window, history share and replay cap', () => {
    const events = [
      { user: 'b', item: 'x', ts: 3000, type: 'view' as const },
      { user: 'a', item: 'y', ts: 1000, type: 'view' as const },
      { user: 'a', item: 'z', ts: 2000, type: 'like' as const, value: 5 },
      { user: 'c', item: 'x', ts: 3000, type: 'click' as const },
      { user: 'a', item: 'x', ts: 5000, type: 'view' as const },
    ];
    const plan = makePlan(events, {
      historyShare: 0.4,
      maxReplay: 2,
      userPrefix: 'r.',
      endTs: 1_000_000,
      windowMs: 2000,
    });
    assert.equal(plan.scale, 0.5);
    assert.deepEqual(
      plan.history.map((e) => [e.userId, e.itemId, e.ts, e.nth]),
      [
        ['r.a', 'y', 998_000, 0],
        ['r.a', 'z', 998_500, 0],
      ],
    );
    // Ties keep file order: b before c.
    assert.deepEqual(
      plan.replay.map((e) => [e.userId, e.ts, e.nth, e.cold]),
      [
        ['r.b', 999_000, 1, true],
        ['r.c', 999_000, 1, true],
      ],
    );
    assert.equal(plan.unused, 1);
    assert.equal(plan.history[1]?.value, 5);
  });

  it('dispatchInOrder: each user in order, never more than the limit in flight', async () => {
    const events = Array.from({ length: 40 }, (_, i) => ({ userId: `u${i % 3}`, i }));
    const seen = new Map<string, number[]>();
    let inFlight = 0;
    let most = 0;
    await dispatchInOrder(events, 4, async (e) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, (e.i * 7) % 5));
      const list = seen.get(e.userId) ?? [];
      list.push(e.i);
      seen.set(e.userId, list);
      inFlight--;
    });
    assert.ok(most <= 4);
    for (const list of seen.values())
      assert.deepEqual(
        list,
        [...list].sort((a, b) => a - b),
      );
    assert.equal([...seen.values()].flat().length, 40);
    await assert.rejects(
      dispatchInOrder(events, 2, async (e) => {
        if (e.i === 5) throw new Error('boom');
      }),
      /boom/,
    );
  });

  it('unzip reads stored and deflated members', () => {
    const files = [
      { name: 'd/a.txt', data: Buffer.from('hello hello hello'), method: 8 },
      { name: 'd/b.txt', data: Buffer.from('plain'), method: 0 },
    ];
    const locals: Buffer[] = [];
    const centrals: Buffer[] = [];
    let offset = 0;
    for (const f of files) {
      const body = f.method === 8 ? deflateRawSync(f.data) : f.data;
      const name = Buffer.from(f.name);
      const local = Buffer.alloc(30);
      local.writeUInt32LE(0x04034b50, 0);
      local.writeUInt16LE(f.method, 8);
      local.writeUInt32LE(body.length, 18);
      local.writeUInt32LE(f.data.length, 22);
      local.writeUInt16LE(name.length, 26);
      const central = Buffer.alloc(46);
      central.writeUInt32LE(0x02014b50, 0);
      central.writeUInt16LE(f.method, 10);
      central.writeUInt32LE(body.length, 20);
      central.writeUInt32LE(f.data.length, 24);
      central.writeUInt16LE(name.length, 28);
      central.writeUInt32LE(offset, 42);
      locals.push(local, name, body);
      centrals.push(central, name);
      offset += 30 + name.length + body.length;
    }
    const cd = Buffer.concat(centrals);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(files.length, 10);
    end.writeUInt32LE(cd.length, 12);
    end.writeUInt32LE(offset, 16);
    const zip = Buffer.concat([...locals, cd, end]);
    const out = unzip(zip, ['d/a.txt', 'd/b.txt']);
    assert.equal(out.get('d/a.txt')?.toString(), 'hello hello hello');
    assert.equal(out.get('d/b.txt')?.toString(), 'plain');
    assert.throws(() => unzip(Buffer.from('not a zip at all, really not'), []), /not a zip/);
  });
});
