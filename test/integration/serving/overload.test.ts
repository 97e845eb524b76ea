/**
 * Load shedding: a server allowed one feed in flight (RECSYS_SERVING_MAX_IN_FLIGHT=1) gets 100
 * feed requests at once from curl (`--parallel`). The ones over the bound are answered at once
 * with 503 `RECSYS_OVERLOADED` and `Retry-After`, the others with feeds, and the server serves
 * normally afterwards; the shed ones are counted on /metrics.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, uniq } from '../harness.js';
import { curl, metricSample, suiteServer } from './server-process.js';

describe('load shedding', { timeout: 120_000 }, () => {
  const { server, skipped } = suiteServer({
    RECSYS_SERVING_MAX_IN_FLIGHT: '1',
    RECSYS_RATE_LIMIT_PER_S: '100000',
  });

  it('answers past the in-flight bound with 503 at once and keeps serving', async (t) => {
    if (skipped()) return t.skip('services down');
    const user = uniq('u');
    const token = await server.token(user);
    const url = `${server.baseUrl}/v1/users/${user}/feed?limit=5`;
    const res = await run(
      'curl',
      [
        '-s',
        '-Z',
        '--parallel-immediate',
        '--parallel-max',
        '100',
        '-H',
        `authorization: Bearer ${token}`,
        '-w',
        '%{http_code} %header{retry-after}\\n',
        // One `-o` per URL: curl pairs them in order.
        ...Array.from({ length: 100 }, () => ['-o', '/dev/null', url]).flat(),
      ],
      { timeoutMs: 60_000 },
    );
    const lines = res.stdout.trim().split('\n');
    assert.equal(lines.length, 100);
    const ok = lines.filter((l) => l.startsWith('200')).length;
    const shed = lines.filter((l) => l.startsWith('503'));
    t.diagnostic(`${ok} answered, ${shed.length} shed`);
    assert.ok(ok >= 1, res.stdout);
    assert.ok(shed.length >= 1, 'nothing was shed');
    assert.equal(ok + shed.length, 100, res.stdout);
    assert.ok(
      shed.every((l) => l === '503 1'),
      'every 503 says Retry-After: 1',
    );

    const body = await curl(url, ['-H', `authorization: Bearer ${token}`]);
    assert.equal(body.status, 200, body.body);
    const one = await run('curl', ['-s', '-H', `authorization: Bearer ${token}`, url]);
    assert.ok(one.stdout.includes('"items"'));
    const m = await curl(`${server.baseUrl}/metrics`);
    const counted = metricSample(m.body, 'recsys_feed_shed_total');
    assert.equal(counted, shed.length);
  });

  it('a shed request gets the JSON error', async (t) => {
    if (skipped()) return t.skip('services down');
    const user = uniq('u');
    const token = await server.token(user);
    const url = `${server.baseUrl}/v1/users/${user}/feed`;
    // Keep one feed in flight while asking again: 20 transfers at once from one curl (separate
    // curl processes start too far apart on a loaded machine to overlap a feed of a new user),
    // each body to its own file; retried until a 503 body is seen (bounded).
    const dir = await mkdtemp(join(tmpdir(), 'recsys-shed-'));
    try {
      for (let attempt = 0; attempt < 10; attempt++) {
        const files = Array.from({ length: 20 }, (_, i) => join(dir, `${attempt}-${i}.json`));
        await run(
          'curl',
          ['-s', '-Z', '--parallel-immediate', '-H', `authorization: Bearer ${token}`].concat(
            files.flatMap((f) => ['-o', f, url]),
          ),
          { timeoutMs: 60_000 },
        );
        const bodies = await Promise.all(files.map((f) => readFile(f, 'utf8').catch(() => '')));
        const shed = bodies.find((b) => b.includes('RECSYS_OVERLOADED'));
        if (shed) {
          assert.equal(
            (JSON.parse(shed) as { error: { code: string } }).error.code,
            'RECSYS_OVERLOADED',
          );
          return;
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    assert.fail('no request was shed in 10 attempts of 20');
  });
});
