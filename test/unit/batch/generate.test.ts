import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateData } from '../../../batch/generate-data.js';
import { generatedPrefix } from '../../../batch/generate.js';
import { EVENT_TYPES } from '../../../schemas/index.js';
import { parseFileName } from '../../../stream/lake-layout.js';

const opts = { seed: 7, events: 60_000, users: 1_000, items: 800 };

describe('synthetic data generator', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const a = generateData(opts);
    const b = generateData(opts);
    const c = generateData({ ...opts, seed: 8 });
    assert.equal(a.count, 60_000);
    assert.deepEqual(a.item, b.item);
    assert.deepEqual(a.ts, b.ts);
    assert.deepEqual(a.type, b.type);
    assert.deepEqual(a.catalog, b.catalog);
    assert.deepEqual(a.plantedPairs, b.plantedPairs);
    assert.notDeepEqual(a.item, c.item);
  });

  it('follows the funnel ratios (as shares of views)', () => {
    const d = generateData({ ...opts, events: 200_000 });
    const n = new Map(EVENT_TYPES.map((t) => [t, 0]));
    for (const t of d.type) n.set(EVENT_TYPES[t]!, n.get(EVENT_TYPES[t]!)! + 1);
    const views = n.get('view')!;
    const share = (t: (typeof EVENT_TYPES)[number]): number => n.get(t)! / views;
    assert.ok(Math.abs(share('click') - 0.3) < 0.015, `click ${share('click')}`);
    assert.ok(Math.abs(share('add_to_cart') - 0.1) < 0.01, `cart ${share('add_to_cart')}`);
    assert.ok(Math.abs(share('purchase') - 0.03) < 0.005, `purchase ${share('purchase')}`);
    assert.ok(Math.abs(share('like') - 0.05) < 0.006, `like ${share('like')}`);
  });

  it('keeps events in the span, sessions per user 30 minutes apart, popularity skewed', () => {
    const d = generateData(opts);
    const { endTs, days } = d.settings;
    const start = endTs - days * 86_400_000;
    const sessionsOf = new Map<number, { user: number; min: number; max: number }>();
    for (let i = 0; i < d.count; i++) {
      const ts = d.ts[i]!;
      assert.ok(ts >= start && ts < endTs + 3_600_000);
      const s = sessionsOf.get(d.session[i]!) ?? { user: d.user[i]!, min: ts, max: ts };
      s.min = Math.min(s.min, ts);
      s.max = Math.max(s.max, ts);
      sessionsOf.set(d.session[i]!, s);
    }
    const byUser = new Map<number, Array<{ min: number; max: number }>>();
    for (const s of sessionsOf.values()) byUser.set(s.user, [...(byUser.get(s.user) ?? []), s]);
    for (const list of byUser.values()) {
      list.sort((a, b) => a.min - b.min);
      for (let i = 1; i < list.length; i++) {
        assert.ok(list[i]!.min - list[i - 1]!.max > 30 * 60_000, 'sessions closer than the gap');
      }
    }
    const counts = new Map<number, number>();
    for (const it of d.item) counts.set(it, (counts.get(it) ?? 0) + 1);
    const sorted = [...counts.values()].sort((a, b) => b - a);
    const top1pc = sorted.slice(0, Math.ceil(sorted.length / 100)).reduce((a, b) => a + b, 0);
    assert.ok(top1pc / d.count > 0.08, `top 1% of items hold ${top1pc / d.count} of events`);
  });

  it('plants complements that follow their item within the session', () => {
    const d = generateData(opts);
    assert.equal(d.plantedPairs.length, 20);
    const pair = d.plantedPairs[0]!;
    const x = Number(pair.itemId.slice(1));
    const y = Number(pair.complementId.slice(1));
    let views = 0;
    let followed = 0;
    const viewIdx: number[] = [];
    for (let i = 0; i < d.count; i++) if (d.type[i] === 0) viewIdx.push(i);
    for (let k = 0; k < viewIdx.length - 1; k++) {
      const i = viewIdx[k]!;
      const j = viewIdx[k + 1]!;
      if (d.item[i] !== x) continue;
      views++;
      if (d.item[j] === y && d.session[j] === d.session[i]) followed++;
    }
    assert.ok(views > 20, `item ${pair.itemId} viewed ${views} times`);
    assert.ok(followed / views > 0.5, `complement followed ${followed}/${views}`);
  });

  it('names lake files so the sink recovery never matches them', () => {
    const name = `${generatedPrefix(42)}3.parquet`;
    assert.equal(
      parseFileName('recsys.events.v1', 'topic=recsys.events.v1/date=x/hour=01', name),
      null,
    );
    assert.equal(parseFileName('generated', 'd', name), null);
  });
});
