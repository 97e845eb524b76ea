/**
 * The serving process with a dead dependency, as real processes:
 * - Redis on a port nobody listens on: a feed answers 503 `RECSYS_REDIS_UNAVAILABLE` and the
 *   live socket's error frame the same code, both with the table's fixed message and nothing
 *   of the internal error (hosts, ports, client messages), which goes to the log instead;
 * - Kafka on a port nobody listens on (Redis and a model from a real batch run): `/readyz` is
 *   200 with `kafka` degraded (body and `recsys_readiness_degraded`), and feeds are served.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { WebSocket } from 'ws';
import { ERROR_CODES, loadConfig } from '../../../core/index.js';
import { mintToken, WS_PROTOCOL } from '../../../core/auth.js';
import { sleep } from '../../../core/retry.js';
import { runBatch } from '../../../batch/run.js';
import { config as baseConfig, log, requireServices, uniq } from '../harness.js';
import { deleteTopics, freePort } from '../ingest/bridge-process.js';

/** The batch run's Redis database (flushed), 14 unless RECSYS_TEST_REDIS_DB names another. */
const DB = Number(process.env.RECSYS_TEST_REDIS_DB ?? 14);
const MAIN = join(process.cwd(), 'dist', 'serving', 'main.js');

/** A serving process; resolves once /healthz answers. Its output is kept for the assertions. */
async function startServing(
  env: NodeJS.ProcessEnv,
  port: number,
): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, [MAIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-256_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`serving exited:\n${out}`);
    const up = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (up) return { child, output: () => out };
    if (Date.now() > deadline) throw new Error(`serving not up in 30 s:\n${out}`);
    await sleep(100);
  }
}

/** The first frame of a live socket (token as the sub-protocol, as the page sends it). */
function firstFrame(port: number, token: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/feed`, [WS_PROTOCOL, `bearer.${token}`]);
    const timer = setTimeout(() => reject(new Error('no frame in 20 s')), 20_000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      resolve(String(data));
      ws.close();
    });
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

describe('serving with a dead dependency (real processes)', { timeout: 600_000 }, () => {
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  const topics: string[] = [];
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const d of dirs) await rm(d, { recursive: true, force: true });
    await deleteTopics(topics).catch(() => undefined);
  });

  it('Redis unreachable: feed 503 and error frame with a stable code, details only in the log', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry'))) return;
    const dir = await mkdtemp(join(tmpdir(), 'faults-redis-'));
    dirs.push(dir);
    const [port, deadRedis] = [await freePort(), await freePort()];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RECSYS_REDIS_URL: `redis://127.0.0.1:${deadRedis}`,
      RECSYS_HTTP_HOST: '127.0.0.1',
      RECSYS_HTTP_PORT: String(port),
      RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
      RECSYS_TOPIC_SERVED: uniq('faults.served'),
      RECSYS_LOG_LEVEL: 'info',
    };
    topics.push(env.RECSYS_TOPIC_SERVED as string);
    const server = await startServing(env, port);
    children.push(server.child);
    const user = uniq('fu');
    const token = await mintToken(loadConfig(env).serving, user, 600);
    const leaks = (text: string): string[] =>
      [String(deadRedis), '127.0.0.1', 'ECONNREFUSED', 'retries', 'Connection', 'at '].filter((s) =>
        text.includes(s),
      );

    const res = await fetch(`http://127.0.0.1:${port}/v1/users/${user}/feed`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    assert.equal(res.status, 503, text);
    const body = JSON.parse(text) as { error: { code: string; message: string } };
    assert.deepEqual(body.error, {
      code: 'RECSYS_REDIS_UNAVAILABLE',
      message: ERROR_CODES.RECSYS_REDIS_UNAVAILABLE.doc,
    });
    assert.deepEqual(leaks(text), []);

    const frame = JSON.parse(await firstFrame(port, token)) as {
      type: string;
      error: { code: string; message: string };
    };
    assert.equal(frame.type, 'error');
    assert.deepEqual(frame.error, {
      code: 'RECSYS_REDIS_UNAVAILABLE',
      message: ERROR_CODES.RECSYS_REDIS_UNAVAILABLE.doc,
    });

    // The details are in the server's JSON log (a pipe: it may arrive a moment after the frame),
    // with the code the client got.
    type Line = { msg: string; code?: string; err?: { message?: string } };
    const logged = (): Line[] =>
      server
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Line);
    const find = async (msg: string): Promise<Line | undefined> => {
      const until = Date.now() + 5000;
      let line = logged().find((l) => l.msg === msg);
      while (!line && Date.now() < until) {
        await sleep(100);
        line = logged().find((l) => l.msg === msg);
      }
      return line;
    };
    for (const msg of ['feed request failed', 'initial live feed failed']) {
      const line = await find(msg);
      assert.ok(line, `no log line "${msg}":\n${server.output().slice(-4000)}`);
      assert.equal(line.code, 'RECSYS_REDIS_UNAVAILABLE', msg);
      assert.ok(line.err?.message, `the log has the internal error (${msg})`);
    }
  });

  it('Kafka unreachable: ready (200) with kafka degraded, feeds served', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    const dir = await mkdtemp(join(tmpdir(), 'faults-kafka-'));
    dirs.push(dir);
    const id = uniq('faults');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RECSYS_REDIS_URL: `${baseConfig.redis.url}/${DB}`,
      RECSYS_LAKE_DIR: join(dir, 'lake'),
      RECSYS_BATCH_DIR: join(dir, 'batch'),
      RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
      MLFLOW_TRACKING_URI: '',
      RECSYS_TOPIC_EVENTS: `${id}.events`,
      RECSYS_TOPIC_SERVED: `${id}.served`,
      RECSYS_MODEL_POLL_MS: '300',
      RECSYS_LOG_LEVEL: 'warn',
    };
    // A model and candidates from a real (small) batch run.
    const batchConfig = loadConfig(env);
    const redis = new Redis(batchConfig.redis.url, { maxRetriesPerRequest: 2 });
    try {
      await redis.flushdb();
      const batch = await runBatch(batchConfig, log, redis, { generateEvents: 20_000, seed: 7 });
      assert.equal(batch.model.promoted, true);

      const [port, deadKafka] = [await freePort(), await freePort()];
      const server = await startServing(
        {
          ...env,
          RECSYS_KAFKA_BROKERS: `127.0.0.1:${deadKafka}`,
          RECSYS_HTTP_HOST: '127.0.0.1',
          RECSYS_HTTP_PORT: String(port),
        },
        port,
      );
      children.push(server.child);
      type Readyz = {
        status: string;
        degraded?: string[];
        checks: Record<string, { ok: boolean; error?: string }>;
      };
      let ready: { status: number; body: Readyz | null } = { status: 0, body: null };
      const deadline = Date.now() + 120_000;
      while (Date.now() < deadline) {
        const res = await fetch(`http://127.0.0.1:${port}/readyz`);
        ready = { status: res.status, body: (await res.json()) as Readyz };
        if (ready.status === 200) break;
        await sleep(500);
      }
      assert.equal(ready.status, 200, JSON.stringify(ready.body));
      assert.equal(ready.body?.status, 'degraded');
      assert.deepEqual(ready.body?.degraded, ['kafka']);
      assert.equal(ready.body?.checks.kafka?.ok, false);
      for (const check of ['redis', 'model', 'warm']) {
        assert.equal(ready.body?.checks[check]?.ok, true, check);
      }
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /recsys_readiness_degraded\{[^}]*check="kafka"[^}]*\} 1/);
      assert.match(metrics, /recsys_readiness_degraded\{[^}]*check="redis"[^}]*\} 0/);

      const token = await mintToken(batchConfig.serving, 'u1', 600);
      const feed = await fetch(`http://127.0.0.1:${port}/v1/users/u1/feed?limit=5`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(feed.status, 200, await feed.clone().text());
      assert.equal(((await feed.json()) as { items: unknown[] }).items.length, 5);
    } finally {
      await redis.flushdb().catch(() => undefined);
      redis.disconnect();
    }
  });
});
