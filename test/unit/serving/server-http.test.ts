/**
 * The server in-process with a feed double (no services): 429 with Retry-After past the
 * per-token rate, stop() finishing an in-flight request before closing sockets with 1001,
 * `?token=` on the live socket only behind its flag, and the HTTP latency of a feed request through uWS (the double answers at once).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { Registry } from 'prom-client';
import { WebSocket } from 'ws';
import { loadConfig } from '../../../core/config.js';
import { createLogger } from '../../../core/log.js';
import { mintToken } from '../../../core/auth.js';
import type { Feed } from '../../../serving/feed/service.js';
import { startServing } from '../../../serving/server.js';

const log = createLogger('silent');

function double(delayMs = 0) {
  return {
    async getFeed(userId: string, limit: number): Promise<Feed> {
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      return {
        requestId: crypto.randomUUID(),
        userId,
        ts: Date.now(),
        items: Array.from({ length: limit }, (_, i) => ({
          itemId: `i${i}`,
          score: 1 / (i + 1),
          source: 'popular',
          categoryL1: null,
        })),
        modelVersion: 'v1',
        latencyMs: 0,
      };
    },
    readiness: async () => ({ ok: true, checks: {} }),
  };
}

async function start(env: Record<string, string>, delayMs = 0) {
  const config = loadConfig({ RECSYS_ENV: 'development', RECSYS_HTTP_PORT: '0', ...env });
  const serving = await startServing({
    config,
    log,
    metrics: new Registry(),
    feed: double(delayMs),
  });
  const base = `http://127.0.0.1:${serving.port}`;
  return { config, serving, base, token: await mintToken(config.serving, 'u1', 60) };
}

describe('server over real sockets (feed double)', () => {
  it('answers 429 with Retry-After past the per-token rate', async () => {
    const { serving, base, token } = await start({ RECSYS_RATE_LIMIT_PER_S: '5' });
    try {
      // All at once: on a loaded machine, sequential requests can span a token's refill.
      let retryAfter: string | null = null;
      const t0 = performance.now();
      const statuses = await Promise.all(
        Array.from({ length: 8 }, async () => {
          const res = await fetch(`${base}/v1/users/u1/feed`, {
            headers: { authorization: `Bearer ${token}` },
          });
          if (res.status === 429) {
            retryAfter = res.headers.get('retry-after');
            const body = (await res.json()) as { error: { code: string } };
            assert.equal(body.error.code, 'RECSYS_RATE_LIMITED');
          } else await res.arrayBuffer();
          return res.status;
        }),
      );
      // 5 a second: a burst of 5, then one more per 200 ms that passed.
      const refilled = Math.floor((performance.now() - t0) / 200);
      const ok = statuses.filter((s) => s === 200).length;
      assert.ok(ok >= 5 && ok <= 5 + refilled, `${statuses.join(',')} in ${refilled * 200}+ ms`);
      assert.equal(ok + statuses.filter((s) => s === 429).length, 8, statuses.join(','));
      assert.ok(statuses.includes(429), statuses.join(','));
      assert.equal(retryAfter, '1');
    } finally {
      await serving.stop();
    }
  });

  it('stop() finishes in-flight requests, then closes sockets with 1001', async () => {
    const { serving, base, token } = await start({}, 150);
    const ws = new WebSocket(`${base.replace('http', 'ws')}/v1/feed`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const firstFrame = new Promise((r) => ws.once('message', r));
    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    await firstFrame;
    const inFlight = fetch(`${base}/v1/users/u1/feed`, {
      headers: { authorization: `Bearer ${token}` },
    });
    await new Promise((r) => setTimeout(r, 20));
    const stopped = serving.stop();
    const res = await inFlight;
    assert.equal(res.status, 200);
    await stopped;
    assert.equal(await closed, 1001);
    // New connections are refused (kept-alive ones may still be open).
    await assert.rejects(
      new Promise((resolve, reject) => {
        const socket = connect(Number(new URL(base).port), '127.0.0.1', () => {
          socket.destroy();
          resolve(null);
        });
        socket.once('error', reject);
      }),
      /ECONNREFUSED/,
    );
  });

  it('takes ?token= on the live socket only with RECSYS_LIVE_QUERY_AUTH=1', async () => {
    /** The upgrade's HTTP status (101 when it opened) and error body. */
    const upgrade = (url: string) =>
      new Promise<{ status: number; body: string }>((resolve) => {
        const ws = new WebSocket(url);
        ws.once('open', () => {
          ws.close();
          resolve({ status: 101, body: '' });
        });
        ws.once('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
      });
    const off = await start({});
    try {
      const refused = await upgrade(`${off.base.replace('http', 'ws')}/v1/feed?token=${off.token}`);
      assert.equal(refused.status, 401);
      assert.match(JSON.parse(refused.body).error.message, /RECSYS_LIVE_QUERY_AUTH/);
    } finally {
      await off.serving.stop();
    }
    const on = await start({ RECSYS_LIVE_QUERY_AUTH: '1' });
    try {
      const opened = await upgrade(`${on.base.replace('http', 'ws')}/v1/feed?token=${on.token}`);
      assert.equal(opened.status, 101);
    } finally {
      await on.serving.stop();
    }
  });

  it('serves a feed request in about a millisecond', async (t) => {
    const { serving, base, token } = await start({ RECSYS_RATE_LIMIT_PER_S: '1000000' });
    try {
      const url = `${base}/v1/users/u1/feed?limit=20`;
      const headers = { authorization: `Bearer ${token}` };
      for (let i = 0; i < 200; i++) await (await fetch(url, { headers })).arrayBuffer();
      const ms: number[] = [];
      for (let i = 0; i < 2000; i++) {
        const t0 = performance.now();
        const res = await fetch(url, { headers });
        await res.arrayBuffer();
        ms.push(performance.now() - t0);
        assert.equal(res.status, 200);
      }
      ms.sort((a, b) => a - b);
      const p = (q: number): number => ms[Math.floor(q * ms.length)] as number;
      t.diagnostic(
        `fetch keep-alive, 2000 sequential: p50 ${p(0.5).toFixed(2)} ms, p99 ${p(0.99).toFixed(2)} ms`,
      );
      assert.ok(p(0.5) < 20, `p50 ${p(0.5)} ms`);
    } finally {
      await serving.stop();
    }
  });
});
