/**
 * The retrain loop, end to end, with short timings. A deliberately weak champion (one tree of
 * two leaves, made champion by the operator's override) serves; the product runs as processes (stream: ingest, features, attribution; a
 * feed server of two workers; `batch --serve`), and a Prometheus and an Alertmanager of this
 * test's own (the Debian binaries deploy/local runs, on free ports, with the shipped rules and
 * Alertmanager route, windows shortened: 30m -> 20s, for 15m -> 3s, group waits 1s) watch it.
 * Clicks on served items first, then only views: the online CTR falls, RecsysOnlineCtrLow fires,
 * Alertmanager posts it to the batch trigger with the bearer token, the batch runs over the same
 * lake, the gate re-scores the champion on the new held-out data and promotes the better model,
 * both serving workers swap to it (`recsys_model_info{version} 2`, summed over workers) while a
 * steady feed load gets no failed request, and the attribution role counts feeds of the new
 * version.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { loadConfig } from '../../../core/config.js';
import { sleep } from '../../../core/retry.js';
import { runBatch } from '../../../batch/run.js';
import { mintToken } from '../../../core/auth.js';
import { localAlertmanagerConfig } from '../../../deploy/local/monitoring.js';
import { openRegistry } from '../../../store/registry/index.js';
import { deleteTopics, freePort } from '../ingest/bridge-process.js';
import { log, requireServices, uniq, productEnv } from '../harness.js';

/** This helper's Redis database (3 and 7 belong to others); flushed before and after. */
/** The test's Redis database (flushed): 5, or RECSYS_TEST_REDIS_DB on a shared Redis. */
const DB = Number(process.env.RECSYS_TEST_REDIS_DB ?? 5);
const TOKEN = 'retrain-loop-token-0123456789';
const INGEST_TOKEN = `retrain-loop-ingest-${crypto.randomUUID()}`;
const USERS = Array.from({ length: 12 }, (_, i) => `u${i}`);

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv, what: string): ChildProcess {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => log.warn({ what, stderr: d.toString().slice(-1500) }));
  return child;
}

async function until<T>(
  what: string,
  timeoutMs: number,
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined as T);
    if (v !== undefined && ok(v)) return v;
    assert.ok(Date.now() < deadline, `${what}: not after ${timeoutMs} ms (last ${String(v)})`);
    await sleep(500);
  }
}

const text = async (url: string): Promise<string> => (await fetch(url)).text();

/** The value of the first sample of `name` whose line holds every `labels` pair, or 0. */
function sample(metrics: string, name: string, labels: Record<string, string>): number {
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) {
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return 0;
}

describe('the retrain loop', () => {
  const id = uniq('loop').toLowerCase();
  const children: ChildProcess[] = [];
  let dir = '';
  let redis: Redis | null = null;
  let topics: string[] = [];

  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await redis?.flushdb().catch(() => undefined);
    redis?.disconnect();
    if (topics.length > 0) await deleteTopics(topics).catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('falling CTR -> alert -> trigger -> batch -> promotion -> hot swap, no failed feed', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis', 'prometheus', 'alertmanager'))) {
      return;
    }
    dir = await mkdtemp(join(tmpdir(), 'retrain-loop-'));
    const streamPort = await freePort();
    const servePort = await freePort();
    const batchPort = await freePort();
    const promPort = await freePort();
    const amPort = await freePort();
    const env: NodeJS.ProcessEnv = productEnv(dir, id, DB, {
      RECSYS_MODEL_POLL_MS: '500',
      RECSYS_SERVING_WORKERS: '2',
      RECSYS_RETRAIN_TOKEN: TOKEN,
      RECSYS_INGEST_TOKENS: INGEST_TOKEN,
      RECSYS_BATCH_SCHEDULE: '',
      RECSYS_HTTP_PORT: '',
      RECSYS_STREAM_PORT: String(streamPort),
      RECSYS_SERVING_PORT: String(servePort),
      RECSYS_BATCH_PORT: String(batchPort),
    });
    const config = loadConfig(env);
    topics = Object.values(config.kafka.topics);
    redis = new Redis(config.redis.url, { maxRetriesPerRequest: 2 });
    await redis.flushdb();

    // 1. A weak champion: one tree of two leaves.
    const weak = await runBatch(
      config,
      log,
      redis,
      { generateEvents: 30_000, seed: 7, params: { num_boost_round: 1, num_leaves: 2 } },
      () => undefined,
    );
    // The gate refuses a model below the heuristic blend: the operator's override makes this
    // weak one champion anyway (`setChampion`, the rollback path).
    const v1 = weak.model.version;
    const registry = openRegistry(config.batch, log);
    try {
      await registry.setChampion(v1);
    } finally {
      await registry.close();
    }

    // 2. The product, and this test's Prometheus and Alertmanager.
    const node = process.execPath;
    children.push(
      start(node, ['dist/stream/main.js', 'ingest', 'features', 'attribution'], env, 'stream'),
      start(node, ['dist/serving/main.js'], env, 'serving'),
      start(node, ['dist/batch/main.js', '--serve'], env, 'batch'),
    );
    for (const port of [streamPort, servePort, batchPort]) {
      await until(
        `:${port} ready`,
        120_000,
        () => fetch(`http://127.0.0.1:${port}/readyz`),
        (r) => r.ok,
      );
    }
    await writeMonitoring(dir, config, { streamPort, amPort, promPort, batchPort });
    await mkdir(join(dir, 'prom-data'));
    await mkdir(join(dir, 'am-data'));
    children.push(
      start(
        'prometheus-alertmanager',
        [
          `--config.file=${join(dir, 'alertmanager.yml')}`,
          `--storage.path=${join(dir, 'am-data')}`,
          `--web.listen-address=127.0.0.1:${amPort}`,
          '--cluster.listen-address=',
          '--log.level=warn',
        ],
        { ...process.env, GOMEMLIMIT: '64MiB' },
        'alertmanager',
      ),
      start(
        'prometheus',
        [
          `--config.file=${join(dir, 'prometheus.yml')}`,
          `--storage.tsdb.path=${join(dir, 'prom-data')}`,
          `--web.listen-address=127.0.0.1:${promPort}`,
          '--log.level=warn',
        ],
        { ...process.env, GOMEMLIMIT: '128MiB' },
        'prometheus',
      ),
    );
    for (const port of [amPort, promPort]) {
      await until(
        `:${port} ready`,
        30_000,
        () => fetch(`http://127.0.0.1:${port}/-/ready`),
        (r) => r.ok,
      );
    }

    // 3. A steady feed load for the whole loop; every answer must be a 200.
    const tokens = new Map(
      await Promise.all(
        USERS.map(async (u) => [u, await mintToken(config.serving, u, 3600)] as const),
      ),
    );
    const shown = new Map<string, string[]>();
    const load = { ok: 0, failed: [] as string[], stop: false };
    const loop = (async () => {
      for (let i = 0; !load.stop; i++) {
        const user = USERS[i % USERS.length] as string;
        try {
          const res = await fetch(`http://127.0.0.1:${servePort}/v1/users/${user}/feed?limit=20`, {
            headers: { authorization: `Bearer ${tokens.get(user) as string}` },
          });
          const body = (await res.json()) as { items?: { itemId: string }[] };
          if (res.status !== 200) load.failed.push(`${res.status} ${JSON.stringify(body)}`);
          else {
            load.ok++;
            shown.set(
              user,
              (body.items ?? []).map((it) => it.itemId),
            );
          }
        } catch (err) {
          load.failed.push((err as Error).message);
        }
        await sleep(60);
      }
    })();

    // 4. Clicks on what was shown, then only views: the online CTR falls.
    const post = async (type: string): Promise<void> => {
      const events = [...shown].map(([userId, items]) => ({
        eventId: crypto.randomUUID(),
        userId,
        itemId: items[type === 'click' ? 0 : items.length - 1] ?? 'i1',
        type,
        ts: Date.now(),
      }));
      const res = await fetch(`http://127.0.0.1:${streamPort}/v1/events`, {
        method: 'POST',
        // Many users' events in one batch: a backend's service token.
        headers: { 'content-type': 'application/json', authorization: `Bearer ${INGEST_TOKEN}` },
        body: JSON.stringify(events),
      });
      assert.equal(res.status, 202, await res.text());
    };
    const PROM = `http://127.0.0.1:${promPort}`;
    const ctr = async (): Promise<number> => {
      const q = encodeURIComponent(`recsys:online_ctr:ratio30m{model_version="${v1}"}`);
      const body = JSON.parse(await text(`${PROM}/api/v1/query?query=${q}`)) as {
        data: { result: { value: [number, string] }[] };
      };
      return Number(body.data.result[0]?.value[1] ?? Number.NaN);
    };
    await until(
      'CTR over 2% while users click',
      60_000,
      async () => {
        await post('click');
        return ctr();
      },
      (v) => v > 0.02,
    );
    const firing = await until(
      'RecsysOnlineCtrLow firing',
      120_000,
      async () => {
        await post('view');
        const body = JSON.parse(await text(`${PROM}/api/v1/alerts`)) as {
          data: { alerts: { labels: Record<string, string>; state: string }[] };
        };
        return body.data.alerts.find(
          (a) => a.labels.alertname === 'RecsysOnlineCtrLow' && a.state === 'firing',
        );
      },
      (a) => a !== undefined,
    );
    assert.equal(firing?.labels.model_version, v1);

    // 5. Alertmanager -> trigger -> batch -> gate.
    const BATCH = `http://127.0.0.1:${batchPort}/metrics`;
    await until(
      'the trigger accepted the alert',
      60_000,
      () => text(BATCH),
      (m) => sample(m, 'recsys_retrain_triggers_total', { outcome: 'accepted' }) === 1,
    );
    await until(
      'the retrain run succeeded',
      300_000,
      () => text(BATCH),
      (m) => sample(m, 'recsys_retrain_runs_total', { result: 'succeeded' }) === 1,
    );
    const retrained = openRegistry(config.batch, log);
    const versions = await retrained.versions();
    const champion = await retrained.champion();
    await retrained.close();
    const v2 = champion?.version as string;
    assert.notEqual(v2, v1, 'the retrained model was promoted');
    const entry = versions.find((v) => v.version === v2);
    assert.equal(entry?.tags.champion_version, v1, 'the gate re-scored the old champion');
    const [ndcg, championNdcg] = [entry?.metrics.ndcg_at_10, entry?.metrics.champion_ndcg_at_10];
    assert.ok((ndcg as number) > (championNdcg as number), `${ndcg} > ${championNdcg}`);
    t.diagnostic(`v${v2} NDCG@10 ${ndcg} over champion v${v1} re-scored ${championNdcg}`);

    // 6. Both workers swap (the gauge summed over workers), and the new version is served.
    await until(
      'both workers serve the new model',
      60_000,
      () => text(`http://127.0.0.1:${servePort}/metrics`),
      (m) => sample(m, 'recsys_model_info', { version: v2 }) === 2,
    );
    await until(
      'online metrics of the new version',
      60_000,
      () => text(`http://127.0.0.1:${streamPort}/metrics`),
      (m) =>
        sample(m, 'recsys_online_served_items_total', {
          position_bucket: '0-4',
          model_version: v2,
        }) > 0,
    );
    load.stop = true;
    await loop;
    assert.deepEqual(load.failed, [], 'no failed feed request during the loop');
    assert.ok(load.ok > 100, `${load.ok} feeds answered`);
    t.diagnostic(`${load.ok} feeds, none failed`);
  });
});

/** This test's Prometheus (1 s scrape and evaluation, shipped rules with short windows) and Alertmanager. */
async function writeMonitoring(
  dir: string,
  config: ReturnType<typeof loadConfig>,
  ports: { streamPort: number; amPort: number; promPort: number; batchPort: number },
): Promise<void> {
  const root = process.cwd();
  const rules = (await readFile(join(root, 'deploy/prometheus/rules/recsys.rules.yml'), 'utf8'))
    .replaceAll('[30m]', '[20s]')
    .replaceAll('for: 15m', 'for: 3s')
    .replaceAll('interval: 1m', 'interval: 1s');
  await writeFile(join(dir, 'rules.yml'), rules);
  await writeFile(
    join(dir, 'prometheus.yml'),
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      `rule_files: ['${join(dir, 'rules.yml')}']`,
      `alerting: { alertmanagers: [{ static_configs: [{ targets: ['127.0.0.1:${ports.amPort}'] }] }] }`,
      'scrape_configs:',
      `  - { job_name: recsys, static_configs: [{ targets: ['127.0.0.1:${ports.streamPort}'], labels: { process: stream } }] }`,
      '',
    ].join('\n'),
  );
  const tokenFile = join(dir, 'retrain-token');
  await writeFile(tokenFile, TOKEN, { mode: 0o600 });
  const shipped = await readFile(join(root, 'deploy/prometheus/alertmanager.yml'), 'utf8');
  const am = localAlertmanagerConfig(shipped, config, tokenFile)
    .replace('group_wait: 30s', 'group_wait: 1s')
    .replace('group_interval: 5m', 'group_interval: 1s');
  assert.ok(am.includes(`127.0.0.1:${ports.batchPort}/v1/admin/retrain`));
  await writeFile(join(dir, 'alertmanager.yml'), am);
}
