/**
 * A server of two worker processes (RECSYS_SERVING_WORKERS=2): connections land on either
 * worker, yet every `/metrics` scrape (curl, each on a new connection) reports the requests of
 * both, so counters never go backwards between scrapes.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { uniq } from '../harness.js';
import { curl, metricSample, suiteServer } from './server-process.js';

const FEEDS = 60;

describe('metrics of a multi-worker server', { timeout: 120_000 }, () => {
  const { server, skipped } = suiteServer({
    RECSYS_SERVING_WORKERS: '2',
    RECSYS_RATE_LIMIT_PER_S: '1000',
  });

  it('every scrape counts the feeds of all workers', async (t) => {
    if (skipped()) return t.skip('services down');
    const user = uniq('u');
    const auth = ['-H', `authorization: Bearer ${await server.token(user)}`];
    // One curl per request: a new connection each, spread over the workers by the kernel.
    for (let i = 0; i < FEEDS; i++) {
      const r = await curl(`${server.baseUrl}/v1/users/${user}/feed?limit=3`, auth);
      assert.equal(r.status, 200, r.body);
    }
    const route = 'route="/v1/users/:userId/feed",status="200"';
    for (let scrape = 0; scrape < 6; scrape++) {
      const m = await curl(`${server.baseUrl}/metrics`);
      assert.equal(m.status, 200, m.body.slice(0, 500));
      assert.equal(
        metricSample(m.body, 'recsys_http_request_seconds_count', route),
        FEEDS,
        'scrape ' + scrape,
      );
      assert.equal(metricSample(m.body, 'recsys_feeds_total', 'ranked="false"'), FEEDS);
    }
    // Two workers do serve: without the aggregation a scrape would count only the feeds of the
    // worker it reached (60 connections all landing on one worker is a 2^-59 chance).
    const children = await readFile(
      `/proc/${server.child.pid}/task/${server.child.pid}/children`,
      'utf8',
    );
    assert.equal(children.trim().split(/\s+/).length, 2, `workers: ${children}`);
  });
});
