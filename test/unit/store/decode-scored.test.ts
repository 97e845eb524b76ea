import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeScored } from '../../../store/candidates.js';

describe('decodeScored', () => {
  it('splits ids and scores, skipping the source', () => {
    const { ids, scores } = decodeScored('i1,0.9,n i2,0.5,c i3,12');
    assert.deepEqual(ids, ['i1', 'i2', 'i3']);
    assert.deepEqual([...scores], [0.9, 0.5, 12]);
  });

  it('reads every score exactly as Number does', () => {
    const texts = [
      '0.1234',
      '-3',
      '1e-05',
      '12.',
      '.5',
      '-0',
      '007',
      '123456789012345',
      '1234567890123456',
      '0.30000000000000004',
      '9007199254740993',
      '-',
      '',
      'abc',
      '1.2.3',
      'Infinity',
      '0.0001',
      '4.9999',
      '65504.5',
    ];
    let seed = 11;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2000; i++) texts.push((rand() * 10 ** Math.floor(rand() * 8)).toFixed(4));
    const { scores } = decodeScored(texts.map((t, k) => `x${k},${t}`).join(' '));
    texts.forEach((t, k) => assert.ok(Object.is(scores[k], Number(t)), `${t}: ${scores[k]}`));
  });

  it('a missing score is NaN, and no value is an empty list', () => {
    const { ids, scores } = decodeScored('a b,1');
    assert.deepEqual(ids, ['a', 'b']);
    assert.ok(Number.isNaN(scores[0]));
    assert.deepEqual(decodeScored(null).ids, []);
    assert.deepEqual(decodeScored('').ids, []);
  });
});
