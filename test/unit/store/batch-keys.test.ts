import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BATCH } from '../../../store/keys.js';

describe('BATCH.versionOf', () => {
  it('finds the version of every kind of batch output key', () => {
    assert.equal(BATCH.versionOf(BATCH.candidates('u:1', 7)), 7);
    assert.equal(BATCH.versionOf(BATCH.neighbours('i1', 8)), 8);
    assert.equal(BATCH.versionOf(BATCH.ease('i1', 12)), 12);
    assert.equal(BATCH.versionOf(BATCH.popular(null, 9)), 9);
    assert.equal(BATCH.versionOf(BATCH.popular('c00', 10)), 10);
    assert.equal(BATCH.versionOf(BATCH.itemPopularity('c00', 11)), 11);
    assert.equal(BATCH.versionOf(BATCH.meta(12)), 12);
  });

  it('is null for keys that are not batch output', () => {
    for (const key of [
      BATCH.current,
      BATCH.versions,
      BATCH.sequence,
      'item:i1',
      '{u:u1}:f',
      'ipop:vx:c:a',
    ]) {
      assert.equal(BATCH.versionOf(key), null, key);
    }
  });
});
