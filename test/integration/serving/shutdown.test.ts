/**
 * Issue 16, item 14, the serving cluster: a primary with two workers (RECSYS_SERVING_WORKERS=2)
 * gets SIGTERM while feed requests are in flight. It passes SIGTERM to its workers, which drain
 * within their share of RECSYS_SHUTDOWN_TIMEOUT_MS, and exits 0 within it; no worker outlives
 * it, no worker is restarted meanwhile, and every request sent before the signal is answered
 * (200, or 503 RECSYS_SHUTTING_DOWN), none cut off.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { sleep } from '../../../core/retry.js';
import { config, uniq } from '../harness.js';
import { suiteServer } from './server-process.js';

const DEADLINE_MS = 5000;

describe('serving cluster: SIGTERM', { timeout: 120_000 }, () => {
  const { server, skipped } = suiteServer({
    RECSYS_SERVING_WORKERS: '2',
    RECSYS_SHUTDOWN_TIMEOUT_MS: String(DEADLINE_MS),
    RECSYS_RATE_LIMIT_PER_S: '100000',
    // This helper's database (the suite's default is 13).
    RECSYS_REDIS_URL: `${config.redis.url}/4`,
    RECSYS_LOG_LEVEL: 'info',
  });

  it('drains the requests in flight, stops the workers and exits 0 in time', async (t) => {
    if (skipped()) return t.skip('services down');
    const primary = server.child.pid as number;
    const children = async (): Promise<number[]> =>
      (await readFile(`/proc/${primary}/task/${primary}/children`, 'utf8').catch(() => ''))
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(Number);
    let workers: number[] = [];
    for (let i = 0; i < 100 && workers.length < 2; i++) {
      workers = await children();
      await sleep(100);
    }
    assert.equal(workers.length, 2, 'two workers');

    // Eight clients request feeds back to back; each answer is noted with when it was asked.
    let signalAt = Number.POSITIVE_INFINITY;
    let running = true;
    const answers: Array<{ startedAt: number; outcome: string }> = [];
    const user = uniq('u');
    const auth = { authorization: `Bearer ${await server.token(user)}` };
    const client = async (): Promise<void> => {
      while (running) {
        const startedAt = performance.now();
        let outcome: string;
        try {
          const res = await fetch(`${server.baseUrl}/v1/users/${user}/feed?limit=5`, {
            headers: auth,
            signal: AbortSignal.timeout(10_000),
          });
          const body = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
          outcome = `${res.status}${body.error?.code ? ' ' + body.error.code : ''}`;
        } catch (err) {
          outcome = `error ${((err as Error).cause as Error | undefined)?.message ?? (err as Error).message}`;
        }
        answers.push({ startedAt, outcome });
        if (outcome.startsWith('error')) await sleep(20);
      }
    };
    const clients = Array.from({ length: 8 }, () => client());
    await sleep(1500);
    assert.ok(answers.filter((a) => a.outcome === '200').length > 20, 'feeds are served');

    signalAt = performance.now();
    server.child.kill('SIGTERM');
    const exit = await Promise.race([server.exited, sleep(DEADLINE_MS + 5000).then(() => null)]);
    const stopMs = performance.now() - signalAt;
    await sleep(300);
    running = false;
    await Promise.all(clients);

    const before = answers.filter((a) => a.startedAt < signalAt);
    const summary = (list: typeof answers): Record<string, number> =>
      list.reduce<Record<string, number>>(
        (m, a) => ((m[a.outcome] = (m[a.outcome] ?? 0) + 1), m),
        {},
      );
    t.diagnostic(
      `exit ${JSON.stringify(exit)} after ${stopMs.toFixed(0)} ms; asked before the signal: ${JSON.stringify(summary(before))}; after: ${JSON.stringify(summary(answers.filter((a) => a.startedAt >= signalAt)))}`,
    );
    assert.ok(exit, `no exit within ${DEADLINE_MS + 5000} ms:\n${server.output}`);
    assert.deepEqual(exit, { code: 0, signal: null }, server.output.slice(-4000));
    assert.ok(stopMs < DEADLINE_MS, `stopped in ${stopMs} ms`);
    for (const pid of workers) assert.ok(!existsSync(`/proc/${pid}`), `worker ${pid} is gone`);
    const cut = before.filter(
      (a) => a.outcome !== '200' && a.outcome !== '503 RECSYS_SHUTTING_DOWN',
    );
    assert.deepEqual(cut, [], 'every request sent before the signal was answered');
    assert.ok(!server.output.includes('serving worker died'), 'no worker restarted');
    assert.equal(
      (server.output.match(/"msg":"stopped cleanly"/g) ?? []).length,
      3,
      'the primary and both workers stopped cleanly',
    );
  });
});
