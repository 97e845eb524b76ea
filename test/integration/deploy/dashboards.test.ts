/**
 * Every Grafana panel watches a metric that exists: the product runs (a batch for the model and
 * candidates, a stream process with ingest, features, indexer and attribution, a feed server), Prometheus
 * from deploy/local scrapes them (a file_sd file beside the stack's own), a short load passes
 * (events over HTTP with one rejected, feeds, a live subscriber and a push), and then each
 * panel's PromQL, read from deploy/grafana/dashboards/*.json, must parse and return at least
 * one series. Prometheus's targets API shows both processes up.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { loadConfig, type Config } from '../../../core/config.js';
import { sleep } from '../../../core/retry.js';
import { runBatch } from '../../../batch/run.js';
import { mintToken, WS_PROTOCOL } from '../../../core/auth.js';
import { prometheusConfDir } from '../../../deploy/local/monitoring.js';
import type { StackContext } from '../../../deploy/local/service-def.js';
import { deleteTopics, freePort, purgeMqttSession } from '../ingest/bridge-process.js';
import { config as baseConfig, log, requireServices, run, uniq, productEnv } from '../harness.js';
import { elasticAuthHeaders } from '../../../stream/elastic.js';

/** The database shared with the e2e test (both flush it), or RECSYS_TEST_REDIS_DB. */
const DB = Number(process.env.RECSYS_TEST_REDIS_DB ?? 6);
const PROM = `http://127.0.0.1:${baseConfig.local.prometheusPort}`;

interface Panel {
  title: string;
  targets?: { expr: string }[];
}

async function panelExprs(): Promise<{ dashboard: string; panel: string; expr: string }[]> {
  const dir = join(process.cwd(), 'deploy', 'grafana', 'dashboards');
  const out: { dashboard: string; panel: string; expr: string }[] = [];
  for (const file of (await readdir(dir)).filter((f) => f.endsWith('.json'))) {
    const doc = JSON.parse(await readFile(join(dir, file), 'utf8')) as { panels: Panel[] };
    for (const p of doc.panels) {
      for (const t of p.targets ?? []) out.push({ dashboard: file, panel: p.title, expr: t.expr });
    }
  }
  return out;
}

/** Grafana's `$__rate_interval`, as Grafana would set it for a 5 s scrape: 1 minute is ample. */
const asQuery = (expr: string): string => expr.replaceAll('$__rate_interval', '1m');

async function query(expr: string): Promise<{ ok: boolean; series: number; error?: string }> {
  const res = await fetch(`${PROM}/api/v1/query?query=${encodeURIComponent(asQuery(expr))}`);
  const body = (await res.json()) as {
    status: string;
    error?: string;
    data?: { result: unknown[] };
  };
  if (body.status !== 'success')
    return { ok: false, series: 0, error: body.error ?? res.statusText };
  return { ok: true, series: body.data?.result.length ?? 0 };
}

function start(script: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, [join(process.cwd(), script), ...args], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr?.on('data', (d: Buffer) => log.warn({ script, stderr: d.toString().slice(-2000) }));
  return child;
}

async function waitReady(port: number, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    assert.equal(child.exitCode, null, `${what} exited`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return;
    assert.ok(Date.now() < deadline, `${what} not ready in 90 s`);
    await sleep(250);
  }
}

describe('Grafana dashboards against the real Prometheus', () => {
  const id = uniq('dash').toLowerCase();
  let dir = '';
  let env: NodeJS.ProcessEnv;
  let config: Readonly<Config>;
  let redis: Redis;
  let targetsFile = '';
  const children: ChildProcess[] = [];
  let ran = false;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dashboards-'));
    env = productEnv(dir, id, DB, {
      RECSYS_ES_NAMESPACE: id.replace(/[^a-z0-9]/g, ''),
    });
    config = loadConfig(env);
    redis = new Redis(config.redis.url, { maxRetriesPerRequest: 2, lazyConnect: true });
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    if (targetsFile) await rm(targetsFile, { force: true });
    if (ran) {
      await redis.flushdb().catch(() => undefined);
      await purgeMqttSession(env.RECSYS_MQTT_CLIENT_ID as string).catch(() => undefined);
      await deleteTopics(Object.values(config.kafka.topics)).catch(() => undefined);
      const ns = env.RECSYS_ES_NAMESPACE as string;
      await fetch(`${config.elasticsearch.url}/_data_stream/logs-recsys.*-${ns}`, {
        method: 'DELETE',
        headers: elasticAuthHeaders(config.elasticsearch),
      }).catch(() => undefined);
    }
    redis.disconnect();
    await rm(dir, { recursive: true, force: true });
  });

  test('every panel expression parses and returns a series after a short load', async (t) => {
    const services = ['kafka', 'registry', 'redis', 'mosquitto', 'elasticsearch'] as const;
    if (!(await requireServices(t, ...services, 'prometheus'))) return;
    ran = true;
    await redis.connect();
    await redis.flushdb();
    const batch = await runBatch(config, log, redis, { generateEvents: 30_000, seed: 7 }, () => {
      // quiet
    });
    assert.equal(batch.model.promoted, true, 'the batch registered a champion');

    const streamPort = await freePort();
    const servePort = await freePort();
    const stream = start('dist/stream/main.js', ['ingest', 'features', 'indexer', 'attribution'], {
      ...env,
      RECSYS_HTTP_PORT: String(streamPort),
    });
    children.push(stream);
    const serving = start('dist/serving/main.js', [], {
      ...env,
      RECSYS_HTTP_PORT: String(servePort),
    });
    children.push(serving);
    await waitReady(streamPort, stream, 'stream');
    await waitReady(servePort, serving, 'serving');

    // Prometheus finds both through a file beside the stack's own targets.
    const ctx = { localDir: resolve(process.cwd(), baseConfig.local.dir) } as StackContext;
    targetsFile = join(prometheusConfDir(ctx), 'targets', `${id}.json`);
    await writeFile(
      targetsFile,
      JSON.stringify([
        { targets: [`127.0.0.1:${streamPort}`], labels: { process: 'stream' } },
        { targets: [`127.0.0.1:${servePort}`], labels: { process: 'serving' } },
      ]),
    );

    // The load: a live subscriber, events (one rejected), feeds.
    const user = 'u3';
    const token = await mintToken(config.serving, user, 600);
    const ws = new WebSocket(`ws://127.0.0.1:${servePort}/v1/feed`, [
      WS_PROTOCOL,
      `bearer.${token}`,
    ]);
    let frames = 0;
    ws.on('message', () => frames++);
    await new Promise<void>((ok, fail) => {
      ws.once('open', () => ok());
      ws.once('error', fail);
    });
    const event = (i: number): Record<string, unknown> => ({
      eventId: crypto.randomUUID(),
      userId: user,
      itemId: `i${1 + (i % 20)}`,
      type: i % 3 === 0 ? 'click' : 'view',
      ts: Date.now(),
    });
    // Posted as the user, with the user's own token (HTTP ingest takes a user's JWT).
    const postEvents = (body: unknown): Promise<Response> =>
      fetch(`http://127.0.0.1:${streamPort}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
    const rejected = await postEvents({ eventId: crypto.randomUUID(), userId: user, type: 'view' });
    assert.equal(rejected.status, 400, 'an event without itemId goes to the DLQ');
    const deadline = Date.now() + 120_000;
    let failing: string[] = [];
    for (let round = 0; ; round++) {
      const accepted = await postEvents(
        Array.from({ length: 20 }, (_, i) => event(round * 20 + i)),
      );
      assert.equal(accepted.status, 202, await accepted.text());
      for (let i = 0; i < 10; i++) {
        const feed = await fetch(`http://127.0.0.1:${servePort}/v1/users/${user}/feed`, {
          headers: { authorization: `Bearer ${token}` },
        });
        assert.equal(feed.status, 200);
        await feed.body?.cancel();
      }
      failing = [];
      for (const p of await panelExprs()) {
        const r = await query(p.expr);
        assert.ok(r.ok, `${p.dashboard} "${p.panel}": ${p.expr} does not parse: ${r.error}`);
        if (r.series === 0) failing.push(`${p.dashboard} "${p.panel}": ${p.expr}`);
      }
      if (failing.length === 0 || Date.now() > deadline) break;
      await sleep(3000);
    }
    ws.close();
    assert.deepEqual(failing, [], 'panels with no series');
    assert.ok(frames >= 2, `the subscriber got its feed and a push (${frames} frames)`);

    // Read with curl, a client this project did not write.
    const curl = await run('curl', ['-sf', `${PROM}/api/v1/targets`]);
    const targets = JSON.parse(curl.stdout) as {
      data: { activeTargets: { labels: { instance: string }; health: string }[] };
    };
    for (const port of [streamPort, servePort]) {
      const target = targets.data.activeTargets.find(
        (a) => a.labels.instance === `127.0.0.1:${port}`,
      );
      assert.equal(target?.health, 'up', `127.0.0.1:${port} is scraped and up`);
    }
  });
});
