/**
 * The live hub with socket and feed doubles: the feed on attach, bursts coalesced into one
 * computation per user pushed to all of that user's sockets, users kept apart, slow sockets
 * given only the newest frame (superseded ones dropped) and closed with 1008 when hopeless;
 * one build per change at the largest limit of a user's sockets, sliced per socket.
 */
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { createLogger } from '../../../core/log.js';
import type { Feed } from '../../../serving/feed/service.js';
import { LiveHub, sliceFrames, type LiveSocket } from '../../../serving/live.js';

const log = createLogger('silent');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class FakeSocket implements LiveSocket {
  frames: Array<{ type: string; feed: Feed }> = [];
  buffered = 0;
  closedWith: number | null = null;
  send(frame: string): number {
    assert.equal(this.closedWith, null, 'send after close');
    this.frames.push(JSON.parse(frame) as { type: string; feed: Feed });
    return 1;
  }
  getBufferedAmount(): number {
    return this.buffered;
  }
  end(code?: number): void {
    this.closedWith = code ?? 1000;
  }
}

class FakeFeed {
  calls: Array<[string, number]> = [];
  version = 0;
  delayMs = 0;
  async getFeed(userId: string, limit: number): Promise<Feed> {
    this.calls.push([userId, limit]);
    if (this.delayMs) await sleep(this.delayMs);
    return {
      requestId: `r${this.calls.length}`,
      userId,
      ts: Date.now(),
      // `limit` items, the first named after the version.
      items: Array.from({ length: limit }, (_, i) => ({
        itemId: i === 0 ? `v${this.version}` : `v${this.version}.${i}`,
        score: 1 / (i + 1),
        source: 'test',
        categoryL1: null,
      })),
      modelVersion: 'm1',
      latencyMs: 0,
    };
  }
}

const hubs: LiveHub[] = [];
function hub(feed: FakeFeed, extra: Partial<ConstructorParameters<typeof LiveHub>[0]> = {}) {
  const metrics = new Registry();
  const h = new LiveHub({
    feed,
    log,
    metrics,
    coalesceMs: 20,
    maxBufferedBytes: 1000,
    ...extra,
  });
  hubs.push(h);
  return { h, metrics };
}

afterEach(() => {
  for (const h of hubs.splice(0)) h.close();
});

describe('live hub', () => {
  it('sends the current feed on attach', async () => {
    const feed = new FakeFeed();
    const { h } = hub(feed);
    const s = new FakeSocket();
    h.attach('alice', 7, s);
    await sleep(5);
    assert.deepEqual(feed.calls, [['alice', 7]]);
    assert.equal(s.frames.length, 1);
    assert.equal(s.frames[0]?.type, 'feed');
    assert.equal(s.frames[0]?.feed.userId, 'alice');
    assert.equal(h.size, 1);
  });

  it('coalesces a burst into one computation pushed to all sockets of that user only', async () => {
    const feed = new FakeFeed();
    const { h, metrics } = hub(feed);
    const [a1, a2, b] = [new FakeSocket(), new FakeSocket(), new FakeSocket()];
    h.attach('alice', 5, a1);
    h.attach('alice', 5, a2);
    h.attach('bob', 5, b);
    await sleep(5);
    feed.calls = [];
    feed.version = 1;
    for (let i = 0; i < 50; i++) h.featureChanged('alice');
    h.featureChanged('nobody-here');
    await sleep(60);
    assert.deepEqual(feed.calls, [['alice', 5]]);
    assert.equal(a1.frames.at(-1)?.feed.items[0]?.itemId, 'v1');
    assert.equal(a2.frames.at(-1)?.feed.items[0]?.itemId, 'v1');
    assert.equal(b.frames.length, 1, 'bob got only his initial feed');
    const text = await metrics.metrics();
    assert.match(text, /recsys_live_push_seconds_count 2/);
    assert.match(text, /recsys_ws_open_sockets 3/);
  });

  it('a change during a computation makes exactly one more push, never two at once', async () => {
    const feed = new FakeFeed();
    feed.delayMs = 40;
    const { h } = hub(feed);
    const s = new FakeSocket();
    h.attach('alice', 5, s);
    await sleep(50);
    feed.calls = [];
    h.featureChanged('alice');
    await sleep(30); // computing now
    feed.version = 2;
    h.featureChanged('alice');
    h.featureChanged('alice');
    await sleep(150);
    assert.equal(feed.calls.length, 2);
    assert.equal(s.frames.at(-1)?.feed.items[0]?.itemId, 'v2');
  });

  it('holds back frames for a slow socket, keeping only the newest, sent on drain', async () => {
    const feed = new FakeFeed();
    const { h, metrics } = hub(feed);
    const slow = new FakeSocket();
    const fast = new FakeSocket();
    const sub = h.attach('alice', 5, slow);
    h.attach('alice', 5, fast);
    await sleep(5);
    slow.buffered = 5000;
    for (const v of [1, 2, 3]) {
      feed.version = v;
      h.featureChanged('alice');
      await sleep(40);
    }
    assert.equal(fast.frames.length, 4, 'the fast socket got every push');
    assert.equal(slow.frames.length, 1, 'the slow one nothing new');
    slow.buffered = 0;
    h.drained(sub);
    assert.equal(slow.frames.length, 2);
    assert.equal(slow.frames[1]?.feed.items[0]?.itemId, 'v3', 'only the newest');
    assert.match(await metrics.metrics(), /recsys_live_frames_dropped_total 2/);
  });

  it('closes a socket that stays over the limit with 1008', async () => {
    const feed = new FakeFeed();
    const { h, metrics } = hub(feed, { slowCloseMs: 50, sweepMs: 10 });
    const slow = new FakeSocket();
    h.attach('alice', 5, slow);
    await sleep(5);
    slow.buffered = 5000;
    h.featureChanged('alice');
    await sleep(150);
    assert.equal(slow.closedWith, 1008);
    assert.equal(h.size, 0);
    assert.match(await metrics.metrics(), /recsys_live_slow_sockets_closed_total 1/);
  });

  it('close() ends every socket with 1001 and ignores later changes', async () => {
    const feed = new FakeFeed();
    const { h } = hub(feed);
    const [a, b] = [new FakeSocket(), new FakeSocket()];
    h.attach('alice', 5, a);
    h.attach('bob', 5, b);
    await sleep(5);
    h.close();
    assert.equal(a.closedWith, 1001);
    assert.equal(b.closedWith, 1001);
    h.featureChanged('alice');
    await sleep(40);
    assert.equal(a.frames.length, 1);
  });

  it('an older computation never overwrites a newer frame', async () => {
    const feed = new FakeFeed();
    feed.delayMs = 60; // the initial feed is slow...
    const { h } = hub(feed, { coalesceMs: 0 });
    const s = new FakeSocket();
    h.attach('alice', 5, s);
    feed.delayMs = 0; // ...the push after a change is fast
    feed.version = 9;
    h.featureChanged('alice');
    await sleep(100);
    assert.equal(s.frames.length, 1);
    assert.equal(s.frames[0]?.feed.items[0]?.itemId, 'v9');
  });

  it('builds once per change at the largest limit and gives each socket its slice', async () => {
    const feed = new FakeFeed();
    const { h, metrics } = hub(feed);
    const sockets = [2, 9, 5, 9].map((limit) => ({ limit, s: new FakeSocket() }));
    for (const { limit, s } of sockets) h.attach('alice', limit, s);
    await sleep(5);
    assert.equal(feed.calls.length, 4, 'one initial feed per socket');
    feed.calls = [];
    for (const v of [1, 2, 3]) {
      feed.version = v;
      h.featureChanged('alice');
      await sleep(40);
    }
    assert.deepEqual(feed.calls, [
      ['alice', 9],
      ['alice', 9],
      ['alice', 9],
    ]);
    const last = sockets[1]?.s.frames.at(-1)?.feed;
    assert.ok(last);
    for (const { limit, s } of sockets) {
      assert.equal(s.frames.length, 4);
      const f = s.frames.at(-1)?.feed;
      assert.deepEqual(f?.items, last.items.slice(0, limit), `limit ${limit}`);
      assert.equal(f?.requestId, last.requestId, 'one build');
      assert.equal(f?.items[0]?.itemId, 'v3');
    }
    const text = await metrics.metrics();
    assert.match(text, /recsys_live_feed_builds_total\{trigger="open"\} 4/);
    assert.match(text, /recsys_live_feed_builds_total\{trigger="change"\} 3/);
  });

  it('counts builds under way', async () => {
    const feed = new FakeFeed();
    feed.delayMs = 30;
    const { h } = hub(feed);
    h.attach('alice', 3, new FakeSocket());
    h.attach('bob', 3, new FakeSocket());
    assert.equal(h.building, 2);
    await sleep(50);
    assert.equal(h.building, 0);
  });
});

describe('sliceFrames', () => {
  const feed: Feed = {
    requestId: 'r1',
    userId: 'alice',
    ts: 1,
    items: ['a', 'b', 'c'].map((itemId) => ({ itemId, score: 1, source: 's', categoryL1: null })),
    modelVersion: 'm',
    latencyMs: 0,
  };
  const ids = (frame: string | undefined): string[] =>
    (JSON.parse(frame ?? '{}') as { feed: Feed }).feed.items.map((i) => i.itemId);

  it('gives each limit its first items; limits past the length share one frame', () => {
    const frames = sliceFrames(feed, [1, 2, 3, 7, 2]);
    assert.deepEqual(ids(frames.get(1)), ['a']);
    assert.deepEqual(ids(frames.get(2)), ['a', 'b']);
    assert.deepEqual(ids(frames.get(3)), ['a', 'b', 'c']);
    assert.equal(frames.get(7), frames.get(3), 'the same string');
    assert.equal(frames.size, 4);
    assert.equal(JSON.parse(frames.get(1) as string).type, 'feed');
  });
});
