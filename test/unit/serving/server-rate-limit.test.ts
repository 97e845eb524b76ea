/** The per-token bucket: bursts up to the rate, refills continuously, says how long to wait. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RateLimiter } from '../../../serving/rate-limit.js';

describe('rate limiter', () => {
  it('allows a burst of ratePerSec, then asks to wait for the next token', () => {
    let t = 0;
    const limiter = new RateLimiter({ ratePerSec: 10, now: () => t });
    for (let i = 0; i < 10; i++) assert.equal(limiter.take('a'), 0, `request ${i}`);
    assert.equal(limiter.take('a'), 100);
    t = 50;
    assert.equal(limiter.take('a'), 50);
    t = 100;
    assert.equal(limiter.take('a'), 0);
    assert.equal(limiter.take('a'), 100);
  });

  it('keeps keys apart and holds the long-run rate', () => {
    let t = 0;
    const limiter = new RateLimiter({ ratePerSec: 50, now: () => t });
    assert.equal(limiter.take('a'), 0);
    for (let i = 0; i < 50; i++) limiter.take('b');
    assert.ok(limiter.take('b') > 0);
    assert.equal(limiter.take('a'), 0);
    // 10 s of requests every 1 ms: 50 burst + 50/s x 10 s allowed.
    let allowed = 0;
    const l2 = new RateLimiter({ ratePerSec: 50, now: () => t });
    for (t = 0; t < 10_000; t += 1) if (l2.take('c') === 0) allowed += 1;
    assert.ok(allowed >= 549 && allowed <= 551, `allowed ${allowed}`);
  });

  it('sweeps refilled buckets so idle keys do not pile up', () => {
    let t = 0;
    const limiter = new RateLimiter({ ratePerSec: 10, now: () => t, sweepAtKeys: 100 });
    for (let i = 0; i < 100; i++) limiter.take(`u${i}`);
    assert.equal(limiter.size, 100);
    t = 2000;
    limiter.take('new');
    assert.equal(limiter.size, 1);
  });
});
