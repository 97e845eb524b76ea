import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { attributeEvent, positionBucket } from '../../../stream/roles/attribution.js';
import { decodeFeed, encodeFeed, type StoredFeed } from '../../../store/attribution.js';

const feed = (
  requestId: string,
  ts: number,
  modelVersion: string,
  items: string[],
): StoredFeed => ({
  requestId,
  userId: 'u1',
  ts,
  modelVersion,
  itemIds: items,
});

describe('positionBucket', () => {
  it('buckets 0-based positions', () => {
    assert.deepEqual([0, 4, 5, 9, 10, 19, 20, 49, 50, 500].map(positionBucket), [
      '0-4',
      '0-4',
      '5-9',
      '5-9',
      '10-19',
      '10-19',
      '20-49',
      '20-49',
      '50+',
      '50+',
    ]);
  });
});

describe('attributeEvent', () => {
  const items = Array.from({ length: 30 }, (_, i) => `i${i}`);
  const window = 60_000;

  it('credits the newest feed served before the event that showed the item', () => {
    const feeds = [feed('b', 2000, 'v2', ['x', 'i3']), feed('a', 1000, 'v1', items)];
    assert.deepEqual(attributeEvent(feeds, 'i3', 2500, window), {
      attributedTo: 'v2',
      last: { modelVersion: 'v2', position: 1 },
    });
    // i15 is only in the older feed: attributed to it, but a miss of the last feed.
    assert.deepEqual(attributeEvent(feeds, 'i15', 2500, window), {
      attributedTo: 'v1',
      last: { modelVersion: 'v2', position: -1 },
    });
  });

  it('ignores feeds served after the event (the push a click triggers) and out of the window', () => {
    const feeds = [feed('late', 5000, 'v9', ['i1']), feed('a', 1000, 'v1', items)];
    assert.deepEqual(attributeEvent(feeds, 'i12', 4000, window), {
      attributedTo: 'v1',
      last: { modelVersion: 'v1', position: 12 },
    });
    assert.deepEqual(attributeEvent(feeds, 'i1', 1000 + window + 1, window), {
      attributedTo: 'v9',
      last: { modelVersion: 'v9', position: 0 },
    });
    assert.deepEqual(
      attributeEvent([feed('a', 1000, 'v1', items)], 'i1', 1000 + window + 1, window),
      {
        attributedTo: null,
        last: null,
      },
    );
  });

  it('orders feeds by serve time, not by arrival', () => {
    const feeds = [feed('old', 1000, 'v1', ['i1']), feed('new', 2000, 'v2', ['i2'])];
    assert.equal(attributeEvent(feeds, 'i1', 3000, window).last?.modelVersion, 'v2');
  });
});

describe('served feed entries', () => {
  it('round-trip, keep the top maxItems and any model version text', () => {
    const f = feed('r-1', 1234, 'v 1/ä', ['a', 'b', 'c']);
    const entry = encodeFeed(f, 2);
    assert.equal(entry, 'r-1 1234 v%201%2F%C3%A4 a b');
    assert.deepEqual(decodeFeed('u1', entry), { ...f, itemIds: ['a', 'b'] });
    assert.deepEqual(decodeFeed('u1', encodeFeed(feed('r', 1, 'none', []), 50)).itemIds, []);
  });
});
