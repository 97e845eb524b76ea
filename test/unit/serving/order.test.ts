import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { descendingOrder } from '../../../serving/order.js';

/** The reference: a comparator sort, score descending at float32 precision, ties by position. */
function reference(values: number[]): number[] {
  const f = (v: number): number => (Number.isNaN(v) ? -Infinity : Math.fround(v));
  return values.map((_, i) => i).sort((a, b) => f(values[b]!) - f(values[a]!) || a - b);
}

describe('descendingOrder', () => {
  it('orders by value descending, ties by position', () => {
    const out = descendingOrder([0.2, 0.9, 0.2, -1, 5], 5, new Uint32Array(5));
    assert.deepEqual([...out], [4, 1, 0, 2, 3]);
  });

  it('ranks NaN lowest and treats -0 as 0', () => {
    const out = descendingOrder([NaN, -0, 0, -Infinity, Infinity], 5, new Uint32Array(5));
    assert.deepEqual([...out], [4, 1, 2, 0, 3]);
  });

  it('agrees with a comparator sort on random values with many ties and signs', () => {
    let seed = 7;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let round = 0; round < 50; round++) {
      const n = 1 + Math.floor(rand() * 300);
      const values = Array.from({ length: n }, () => {
        const r = rand();
        return r < 0.2 ? Math.floor(rand() * 5) : r < 0.3 ? -rand() * 1e6 : rand() * 1e-3;
      });
      assert.deepEqual([...descendingOrder(values, n, new Uint32Array(n))], reference(values));
    }
  });

  it('agrees with a comparator sort on long, reversed, all-equal and sawtooth inputs', () => {
    const inputs = [
      Array.from({ length: 5000 }, (_, i) => Math.sin(i) * 1000),
      Array.from({ length: 3000 }, (_, i) => i),
      Array.from({ length: 2000 }, () => 0.5),
      Array.from({ length: 2500 }, (_, i) => i % 17),
    ];
    for (const values of inputs) {
      const n = values.length;
      assert.deepEqual([...descendingOrder(values, n, new Uint32Array(n))], reference(values));
    }
  });

  it('only reads the first n values', () => {
    const out = descendingOrder([1, 2, 99], 2, new Uint32Array(2));
    assert.deepEqual([...out], [1, 0]);
  });
});
