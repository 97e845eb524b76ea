/**
 * The attribution role as its own process (`dist/stream/main.js attribution`) against the real
 * Kafka and Redis: feeds written by the served log (the feed server's own writer), events
 * written as the bridge writes them; the online counters, read with curl from the process's
 * /metrics, move with the right labels, and each user's Redis state, read with redis-cli, stays
 * bounded (feeds, items per feed, TTL).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { sleep } from '../../../core/retry.js';
import type { ServedFeed, UserEvent } from '../../../schemas/types.js';
import { startServedLog } from '../../../serving/served-log.js';
import { deleteTopics, freePort, MAIN } from '../ingest/bridge-process.js';
import { config as baseConfig, log, requireServices, run, uniq } from '../harness.js';
import { isolatedEnv, produceEvents, testConfig } from './events.js';

/** This test's Redis database (3 and 7 belong to others). */
const DB = 5;
const WINDOW_MS = 60_000;

/** One metric sample from Prometheus text, or 0 when the series is absent. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const ok = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (ok) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

async function redisCli(...args: string[]): Promise<string> {
  const res = await run('redis-cli', ['-u', `${baseConfig.redis.url}/${DB}`, ...args]);
  assert.equal(res.code, 0, res.stderr);
  return res.stdout.trim();
}

async function until<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    assert.ok(Date.now() < deadline, `${what}: still ${JSON.stringify(v)} after 60 s`);
    await sleep(200);
  }
}

describe('attribution role', () => {
  const id = uniq('attr');
  const env = isolatedEnv({
    RECSYS_REDIS_URL: `${baseConfig.redis.url}/${DB}`,
    RECSYS_GROUP_ATTRIBUTION: `${id}-attribution`,
    RECSYS_ATTRIBUTION_WINDOW_MS: String(WINDOW_MS),
    RECSYS_CONSUMER_SESSION_TIMEOUT_MS: '6000',
  });
  const cfg = testConfig(env);
  const users = { a: `${id}-ua`, b: `${id}-ub`, none: `${id}-un`, many: `${id}-um` };
  let child: ChildProcess | null = null;
  let port = 0;
  let ran = false;

  before(async () => {
    port = await freePort();
  });

  after(async () => {
    if (child?.exitCode === null) child.kill('SIGKILL');
    if (ran) {
      for (const u of Object.values(users)) await redisCli('DEL', `{u:${u}}:sf`).catch(() => '');
      await deleteTopics(Object.values(cfg.kafka.topics)).catch(() => undefined);
    }
  });

  const metrics = async (): Promise<string> => {
    const res = await run('curl', ['-sf', `http://127.0.0.1:${port}/metrics`]);
    assert.equal(res.code, 0, res.stderr);
    return res.stdout;
  };

  test('served feeds and events move the online counters; per-user state stays bounded', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    ran = true;
    child = spawn(process.execPath, [MAIN, 'attribution'], {
      env: { ...process.env, ...env, RECSYS_HTTP_PORT: String(port) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr?.on('data', (d: Buffer) => log.warn({ stderr: d.toString() }));
    await until(
      'readyz',
      () =>
        fetch(`http://127.0.0.1:${port}/readyz`).then(
          (r) => r.status,
          () => 0,
        ),
      (s) => s === 200,
    );

    // Feeds: 20 items to user a by model vA (twice: a redelivery), 12 to user b by vB, and
    // eight feeds of 60 items to one user (the cap: 5 feeds of 50 items).
    const items = (n: number, tag: string): ServedFeed['items'] =>
      Array.from({ length: n }, (_, i) => ({
        itemId: `${tag}${i}`,
        score: 1 / (i + 1),
        source: 'batch',
      }));
    const feed = (requestId: string, userId: string, mv: string, n: number): ServedFeed => ({
      requestId,
      userId,
      ts: Date.now(),
      items: items(n, `${id}-i`),
      modelVersion: mv,
      latencyMs: 1,
    });
    const served = startServedLog({ config: cfg, log, metrics: new Registry() });
    const fa = feed(`${id}-ra`, users.a, 'vA', 20);
    served.write(fa);
    served.write(fa);
    served.write(feed(`${id}-rb`, users.b, 'vB', 12));
    for (let i = 0; i < 8; i++) served.write(feed(`${id}-rm${i}`, users.many, 'vA', 60));
    await served.flush();
    await served.close();

    const many = `{u:${users.many}}:sf`;
    await until(
      'feeds in Redis',
      () => redisCli('LLEN', many),
      (n) => n === '5',
    );
    assert.equal(
      await redisCli('LLEN', `{u:${users.a}}:sf`),
      '1',
      'a redelivered feed is kept once',
    );
    const entries = (await redisCli('LRANGE', many, '0', '-1')).split('\n');
    assert.equal(entries.length, 5);
    for (const e of entries) assert.equal(e.split(' ').length, 3 + 50, 'at most 50 items a feed');
    const ttl = Number(await redisCli('PTTL', many));
    assert.ok(ttl > 0 && ttl <= 2 * WINDOW_MS, `the list expires (PTTL ${ttl})`);
    assert.match(entries[0] as string, new RegExp(`^${id}-rm7 `), 'newest first');

    const m1 = await until(
      'served items counted',
      metrics,
      (m) =>
        sample(m, 'recsys_online_served_items_total', {
          position_bucket: '10-19',
          model_version: 'vB',
        }) === 2,
    );
    const servedA = (b: string): number =>
      sample(m1, 'recsys_online_served_items_total', { position_bucket: b, model_version: 'vA' });
    // vA: user a's 20 (counted once) plus 8 x 60.
    assert.deepEqual(['0-4', '5-9', '10-19', '20-49', '50+'].map(servedA), [
      5 + 40,
      5 + 40,
      10 + 80,
      0 + 240,
      0 + 80,
    ]);
    assert.equal(
      sample(m1, 'recsys_online_attributed_events_total', { type: 'click', model_version: 'vA' }),
      0,
      'a CTR of 0 is a series',
    );

    // Events after the feeds: a click at position 3, an add_to_cart at 12, a view of an item
    // not shown (user a, vA); a click of user b at 0 (vB); a purchase by a user never served.
    const ev = (userId: string, itemId: string, type: UserEvent['type']): UserEvent => ({
      eventId: crypto.randomUUID(),
      userId,
      sessionId: null,
      itemId,
      type,
      ts: Date.now(),
      context: null,
      value: null,
      receivedAt: Date.now(),
      source: 'http',
    });
    await produceEvents(env, [
      ev(users.a, `${id}-i3`, 'click'),
      ev(users.a, `${id}-i12`, 'add_to_cart'),
      ev(users.a, `${id}-other`, 'view'),
      ev(users.b, `${id}-i0`, 'click'),
      ev(users.none, `${id}-i0`, 'purchase'),
    ]);
    const m2 = await until(
      'events counted',
      metrics,
      (m) =>
        sample(m, 'recsys_online_events_total', { model_version: 'vB' }) === 1 &&
        sample(m, 'recsys_online_events_total', { model_version: 'vA' }) === 3,
    );
    const get = (name: string, labels: Record<string, string>): number => sample(m2, name, labels);
    const attributed = 'recsys_online_attributed_events_total';
    assert.equal(get(attributed, { type: 'click', model_version: 'vA' }), 1);
    assert.equal(get(attributed, { type: 'add_to_cart', model_version: 'vA' }), 1);
    assert.equal(get(attributed, { type: 'view', model_version: 'vA' }), 0, 'an item not shown');
    assert.equal(get(attributed, { type: 'click', model_version: 'vB' }), 1);
    assert.equal(get(attributed, { type: 'purchase', model_version: 'vA' }), 0, 'never served');
    assert.equal(get('recsys_online_hits_total', { k: '10', model_version: 'vA' }), 1);
    assert.equal(get('recsys_online_hits_total', { k: '20', model_version: 'vA' }), 2);
    assert.equal(get('recsys_online_hits_total', { k: '10', model_version: 'vB' }), 1);
    assert.equal(await redisCli('EXISTS', `{u:${users.none}}:sf`), '0', 'events create no state');
  });
});
