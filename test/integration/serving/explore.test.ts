/**
 * Exploration of new items on the real server: catalog items created within
 * RECSYS_FEED_NEW_ITEM_AGE_MS are indexed beside the catalog (checked with redis-cli) and take
 * an expected RECSYS_FEED_EXPLORE_SHARE of a feed's slots from the third on, served with the
 * source `explore` (read with curl); unavailable, deleted and old items are never explored.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Feed } from '../../../serving/feed/service.js';
import { sleep } from '../../../core/retry.js';
import { CatalogStore } from '../../../store/catalog.js';
import { uniq } from '../harness.js';
import { curl, redisCli, suiteServer } from './server-process.js';

describe('exploration of new items (real process, real Redis)', { timeout: 120_000 }, () => {
  const { server, skipped } = suiteServer({ RECSYS_FEED_EXPLORE_SHARE: '0.5' });

  it('serves new available items in the share of slots after the first two', async (t) => {
    if (skipped()) return t.skip('services down');
    const now = Date.now();
    const item = (itemId: string, ageMs: number, isAvailable = true) => ({
      itemId,
      categoryL1: 'c0',
      categoryL2: null,
      price: 5,
      isAvailable,
      createdAt: now - ageMs,
    });
    const catalog = new CatalogStore(server.redis, { cacheTtlMs: 0, cacheSize: 0 });
    const fresh = ['new-1', 'new-2', 'new-3', 'new-4'];
    await catalog.upsert([
      ...fresh.map((id) => item(id, 3_600_000)),
      item('new-gone', 3_600_000, false),
      item('new-deleted', 3_600_000),
      item('old-1', 30 * 86_400_000),
    ]);
    await catalog.remove(['new-deleted']);
    // The index holds the newest available items (the suite's old seed items too).
    const indexed = (await redisCli('ZREVRANGE', '{new}:all', '0', '-1')).trim().split('\n');
    assert.deepEqual(indexed.slice(0, 4).sort(), fresh, 'the newest first, by redis-cli');
    assert.ok(indexed.includes('old-1'));
    for (const gone of ['new-gone', 'new-deleted']) assert.ok(!indexed.includes(gone), gone);
    const c0 = (await redisCli('ZRANGE', '{new}:c:c0', '0', '-1')).trim().split('\n');
    assert.ok(fresh.every((id) => c0.includes(id)) && !c0.includes('new-gone'), c0.join(','));

    // The server reuses a read of the index for a second (`FeedCaches.newItems`): its warm-up
    // feeds may have read it just before the upsert.
    await sleep(1100);
    const explored = new Map<string, number>();
    for (let u = 0; u < 20; u++) {
      const user = uniq(`explorer${u}`);
      const token = await server.token(user);
      const r = await curl(`${server.baseUrl}/v1/users/${user}/feed?limit=9`, [
        '-H',
        `authorization: Bearer ${token}`,
      ]);
      assert.equal(r.status, 200, r.body);
      const { items, modelVersion } = r.json as Feed;
      // A fallback feed (Redis failed or was late) has no exploration: say so if it happens.
      assert.notEqual(modelVersion, 'fallback', `feed ${u} was the fallback list`);
      assert.equal(items.length, 6, 'the six trending items, some displaced');
      items.forEach((i, position) => {
        if (i.source !== 'explore') return;
        assert.ok(position >= 2, `explored at position ${position}`);
        assert.ok(fresh.includes(i.itemId), `explored ${i.itemId}`);
        assert.equal(i.categoryL1, 'c0');
        explored.set(i.itemId, (explored.get(i.itemId) ?? 0) + 1);
      });
    }
    // 0.5 of the 4 slots after the first two: 2 per feed, 40 in 20 feeds.
    const total = [...explored.values()].reduce((a, b) => a + b, 0);
    t.diagnostic(`explored ${total} slots in 20 feeds: ${JSON.stringify([...explored])}`);
    assert.equal(total, 40);
    assert.ok(explored.size >= 3, 'the draw varies between users');
  });
});
