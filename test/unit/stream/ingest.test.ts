import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { jsonSizeExceeds } from '../../../stream/ingest.js';

describe('jsonSizeExceeds', () => {
  it('agrees with JSON.stringify on ordinary values, within the bound', () => {
    const event = {
      eventId: '6f1c2a4e-8d3b-4c1a-9e2f-0a1b2c3d4e5f',
      userId: 'u-1',
      itemId: 'sku-1',
      type: 'view',
      ts: 1795637259555,
      context: { page: 'home', position: 3, device: null },
      list: [1, 'two', true, null],
    };
    const exact = Buffer.byteLength(JSON.stringify(event));
    assert.equal(jsonSizeExceeds(event, exact), false);
    assert.equal(jsonSizeExceeds(event, exact - 40), true);
  });

  it('counts multi-byte strings in bytes', () => {
    const s = 'é'.repeat(100); // 200 bytes in UTF-8
    assert.equal(jsonSizeExceeds(s, 150), true);
    assert.equal(jsonSizeExceeds(s, 210), false);
  });

  it('walks a hostile 200,000-deep nesting without overflowing the stack', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 200_000; i++) deep = [deep];
    assert.throws(() => JSON.stringify(deep), RangeError);
    assert.equal(jsonSizeExceeds(deep, 16384), true);
    assert.equal(jsonSizeExceeds(deep, 1_000_000), false);
  });
});
