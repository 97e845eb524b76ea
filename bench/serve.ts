/**
 * `npm run bench:serve`: the feed server on the real stack, in one run so the numbers share the
 * machine's state: set-up (`runBatch` on BENCH_EVENTS generated events, live sessions for the
 * 2,000 bench users, the same feeds built in this process as a host-speed baseline), then
 * 0. warm-up and the `/healthz` baseline at 2,000/s; 1. feed requests at BENCH_RATES from
 * vegeta (open loop) with the CPU each process spends; 2. live pushes to BENCH_SUBSCRIBERS
 * WebSocket subscribers while events are posted; 3. server memory with BENCH_SOCKETS sockets.
 * Run with `--expose-gc --no-memory-reducer`: this process collects its own garbage before each
 * step. BENCH_SERVER_NODE_ARGS adds Node options to the server. The method in full, and the
 * history of the numbers: bench/README.md. Writes bench/results/serve-<time>.json, prints a summary.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { createLogger, loadConfig, sleep } from '../core/index.js';
import { runBatch } from '../batch/run.js';
import { Registry } from 'prom-client';
import { startFeedService } from '../serving/feed/service.js';
import { ensureGoTool } from '../deploy/local/install.js';
import { VERSIONS } from '../deploy/local/versions.js';
import { mintToken, WS_PROTOCOL } from '../core/auth.js';
import { freePort, startReady, stopProcess } from './processes.js';
import { benchRedis, benchRedisUrl, emptyBenchDatabase } from './redis.js';
import { loadScenarios } from './scenarios.js';
import { seedFeatures } from './seed-features.js';
import { applyLocalSecrets } from '../deploy/local/secrets.js';
import { attack, childrenOf, pidOfCommand, writeTargets, type AttackResult } from './vegeta.js';

const num = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
/** Rates, durations and targets shared with the k6 scripts (deploy/k6/scenarios.json). */
const S = loadScenarios(process.cwd());
const EVENTS = num('BENCH_EVENTS', 200_000);
const RATES = process.env.BENCH_RATES?.split(',').map(Number) ?? S.feed.rates;
const DURATION_MS = num('BENCH_DURATION_MS', S.feed.durationMs);
const WARMUP_MS = num('BENCH_WARMUP_MS', S.feed.warmupMs);
const SEED_EVENTS = num('BENCH_SEED_EVENTS', 20);
const WORKERS = process.env.RECSYS_SERVING_WORKERS ?? '2';
const SUBSCRIBERS = num('BENCH_SUBSCRIBERS', S.live.subscribers);
const EVENT_RATE = num('BENCH_EVENT_RATE', S.live.eventRate);
const SOCKETS = num('BENCH_SOCKETS', S.memory.sockets);
const root = process.cwd();
/** The benchmark stream process's service token for `POST /v1/events`. */
const INGEST_TOKEN = `bench-${randomBytes(24).toString('base64url')}`;
const log = createLogger(process.env.RECSYS_LOG_LEVEL ?? 'warn', 'bench');
const id = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;

/**
 * Memory of a process and its children (the workers of RECSYS_SERVING_WORKERS), MiB: the sum of
 * their resident sets, and of their proportional sets (PSS, from smaps_rollup). The RSS sum
 * counts the pages the processes share (the node binary, ONNX Runtime's library) once per
 * process; PSS splits each shared page between its sharers, so it sums to what they use.
 */
async function memoryMiB(pid: number): Promise<{ rss: number; pss: number }> {
  const kib = async (p: number): Promise<{ rss: number; pss: number }> => {
    const status = await readFile(`/proc/${p}/status`, 'utf8');
    const rollup = await readFile(`/proc/${p}/smaps_rollup`, 'utf8').catch(() => '');
    const sum = {
      rss: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0),
      pss: Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0),
    };
    for (const child of await childrenOf(p)) {
      const c = await kib(child);
      sum.rss += c.rss;
      sum.pss += c.pss;
    }
    return sum;
  };
  const total = await kib(pid);
  return { rss: Math.round(total.rss / 1024), pss: Math.round(total.pss / 1024) };
}

/**
 * The same feeds without HTTP or other processes in the way: the feed service in this process
 * builds `n` feeds for the bench users (16 at a time) and the CPU it spent is divided by `n`.
 * Taken in the same run as the server's numbers (start and end), it says how fast this shared
 * host is right now, and how much the server adds (HTTP, worker processes) to a feed's CPU.
 */
async function inProcessCpuPerFeed(
  config: ReturnType<typeof loadConfig>,
  users: readonly string[],
  n: number,
): Promise<number> {
  const feeds = startFeedService({ config, log, metrics: new Registry() });
  try {
    const deadline = Date.now() + 60_000;
    while (!(await feeds.readiness()).ok) {
      if (Date.now() > deadline) throw new Error('in-process feed service not ready in 60 s');
      await sleep(100);
    }
    let next = 0;
    const batch = async (count: number): Promise<void> => {
      const end = next + count;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < end) await feeds.getFeed(users[next++ % users.length] as string, 20);
        }),
      );
    };
    await batch(1000);
    const c0 = process.cpuUsage();
    await batch(n);
    const c = process.cpuUsage(c0);
    return Math.round((c.user + c.system) / n);
  } finally {
    await feeds.close();
  }
}

function percentiles(values: number[]) {
  const s = Array.from(Float64Array.from(values).sort());
  const at = (p: number): number =>
    s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN;
  return {
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: s[s.length - 1] ?? NaN,
    samples: s.length,
  };
}

/** The batch, live sessions, the in-process baseline, vegeta, and the server and stream processes. */
async function setUp() {
  const dir = await mkdtemp(join(tmpdir(), 'bench-serve-'));
  const base = loadConfig(process.env);
  const env: Record<string, string> = {
    RECSYS_REDIS_URL: benchRedisUrl(base.redis.url, 7),
    RECSYS_LAKE_DIR: join(dir, 'lake'),
    RECSYS_BATCH_DIR: join(dir, 'batch'),
    RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
    RECSYS_TOPIC_EVENTS: `bench-${id}.events`,
    RECSYS_TOPIC_DLQ: `bench-${id}.dlq`,
    RECSYS_TOPIC_SERVED: `bench-${id}.served`,
    RECSYS_TOPIC_ITEMS: `bench-${id}.items`,
    RECSYS_GROUP_FEATURES: `bench-${id}-features`,
    RECSYS_MQTT_SHARE_GROUP: `bench-${id}`,
    RECSYS_MQTT_CLIENT_ID: `bench-${id}/bridge`,
    RECSYS_RATE_LIMIT_PER_S: '1000000',
    RECSYS_INGEST_TOKENS: INGEST_TOKEN,
    RECSYS_LOG_LEVEL: 'warn',
    RECSYS_SERVING_WORKERS: WORKERS,
  };
  const config = loadConfig({ ...process.env, ...env });
  const redis = benchRedis(config.redis.url, 'bench-serve');
  await emptyBenchDatabase(redis);
  const t0 = performance.now();
  const batch = await runBatch(
    config,
    log,
    redis,
    { generateEvents: EVENTS, seed: 11 },
    () => undefined,
  );
  console.log(
    `set-up: batch on ${EVENTS} events in ${((performance.now() - t0) / 1000).toFixed(1)} s (model ${batch.model.version})`,
  );
  const benchUsers = Array.from({ length: 2000 }, (_, i) => `u${i}`);
  const seeded = await seedFeatures(config, redis, benchUsers, SEED_EVENTS);
  console.log(`set-up: ${seeded} events applied as live sessions of ${benchUsers.length} users`);
  const inProcessBefore = await inProcessCpuPerFeed(config, benchUsers, 5000);
  console.log(`in-process: ${inProcessBefore} µs of CPU per feed (no HTTP)`);
  const vegeta = await ensureGoTool(
    config.local.cacheDir,
    'vegeta',
    'github.com/tsenart/vegeta/v12',
    VERSIONS.vegeta,
    log,
  );

  const streamPort = await freePort();
  const servePort = await freePort();
  const stream = await startReady('dist/stream/main.js', ['ingest', 'features'], env, streamPort);
  const server = await startReady('dist/serving/main.js', [], env, servePort, {
    nodeArgs: (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean),
  });
  // Never leave the children behind (they hold this process's stderr open).
  process.on('exit', () => {
    for (const c of [stream, server]) if (c.exitCode === null) c.kill('SIGKILL');
  });
  const users = Array.from({ length: Math.max(SUBSCRIBERS, 2000) }, (_, i) => `u${i}`);
  const tokens = new Map<string, string>();
  for (const u of users) tokens.set(u, await mintToken(config.serving, u, 3600));
  const feedTargets = join(dir, 'feed-targets.txt');
  await writeTargets(
    feedTargets,
    benchUsers.map((u) => ({
      url: `http://127.0.0.1:${servePort}/v1/users/${u}/feed?limit=20`,
      headers: { authorization: `Bearer ${tokens.get(u) as string}` },
    })),
  );
  const healthTargets = join(dir, 'health-targets.txt');
  await writeTargets(healthTargets, [{ url: `http://127.0.0.1:${servePort}/healthz` }]);
  // The bench's own garbage, collected before a measurement rather than during it (module
  // comment; with `--expose-gc`).
  const collectGarbage = (): void => (globalThis as { gc?: () => void }).gc?.();
  const say = (label: string, r: AttackResult): void =>
    console.log(
      `${label} @${r.rate}/s: sent ${r.sentPerSec}/s, ok ${r.throughputPerSec}/s, ` +
        `p50 ${r.latencyMs.p50.toFixed(2)} ms, p99 ${r.latencyMs.p99.toFixed(2)} ms, ` +
        `max ${r.latencyMs.max.toFixed(1)} ms, statuses ${JSON.stringify(r.statuses)}, ` +
        `CPU/s ${JSON.stringify(r.cpu)}, server workers ${JSON.stringify(r.serverWorkers)}`,
    );
  const serverPid = server.pid as number;
  // The rest of the feed's cost: the stream roles count the served log's impressions, and the
  // broker takes the served log.
  const kafkaPid = await pidOfCommand('kafka.Kafka');
  const others: Record<string, number> = { stream: stream.pid as number };
  if (kafkaPid !== null) others.kafka = kafkaPid;
  return {
    base,
    batch,
    benchUsers,
    collectGarbage,
    config,
    dir,
    env,
    feedTargets,
    healthTargets,
    inProcessBefore,
    kafkaPid,
    others,
    redis,
    say,
    seeded,
    servePort,
    server,
    serverPid,
    stream,
    streamPort,
    t0,
    tokens,
    users,
    vegeta,
  };
}

/** Warm-up, the /healthz baseline, then feed requests at each rate until one is not sustained. */
async function measureFeeds(s: SetUp) {
  const { collectGarbage, feedTargets, healthTargets, others, say, serverPid, vegeta } = s;
  // 0. Warm-up, then the baseline.
  collectGarbage();
  const warmup = await attack(vegeta, feedTargets, 500, WARMUP_MS, { serverPid, others });
  say('warm-up feed', warmup);
  collectGarbage();
  const baseline = await attack(vegeta, healthTargets, 2000, DURATION_MS, { serverPid, others });
  say('baseline /healthz', baseline);

  // 1. Feed requests at fixed rates.
  const http: (AttackResult & { serverCpuUsPerRequest: number })[] = [];
  // Sustained: sent on schedule, nearly every request answered 200, p99 under a second.
  const sustained = (r: AttackResult): boolean =>
    r.requests >= 0.97 * ((r.rate * r.durationMs) / 1000) &&
    (r.statuses['200'] ?? 0) >= 0.97 * r.requests &&
    r.latencyMs.p99 <= 1000;
  for (const rate of RATES) {
    collectGarbage();
    const r = await attack(vegeta, feedTargets, rate, DURATION_MS, { serverPid, others });
    const serverCpuUsPerRequest = Math.round(
      ((r.cpu.server ?? 0) * 1e6) / Math.max(1, r.throughputPerSec),
    );
    http.push({ ...r, serverCpuUsPerRequest });
    say('feed', r);
    if (!sustained(r)) break;
    await sleep(1000);
  }
  return { baseline, http, sustained, warmup };
}

/** Live pushes to subscribers while events flow. */
async function measurePush(s: SetUp) {
  const { servePort, streamPort, tokens, users } = s;
  // 2. Live push to subscribers while events flow.
  const pending = new Map<string, number[]>();
  const pushLatencies: number[] = [];
  const sockets: WebSocket[] = [];
  let shed = 0; // upgrades shed under load (503, Retry-After: 1), tried again as a client would
  const open = (u: string, track: boolean): Promise<void> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${servePort}/v1/feed`, [
        WS_PROTOCOL,
        `bearer.${tokens.get(u) ?? ''}`,
      ]);
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        if (res.statusCode !== 503) return reject(new Error(`upgrade ${res.statusCode}`));
        shed += 1;
        setTimeout(() => open(u, track).then(resolve, reject), 1000);
      });
      let first = true;
      ws.on('message', () => {
        if (first) {
          first = false;
          resolve();
          return;
        }
        if (!track) return;
        const now = performance.now();
        const sent = pending.get(u) ?? [];
        for (const at of sent) pushLatencies.push(now - at);
        pending.set(u, []);
      });
      ws.on('error', reject);
      ws.once('open', () => sockets.push(ws));
    });
  for (let i = 0; i < SUBSCRIBERS; i += 100) {
    await Promise.all(users.slice(i, Math.min(i + 100, SUBSCRIBERS)).map((u) => open(u, true)));
  }
  const pushT0 = performance.now();
  let posted = 0;
  while (performance.now() - pushT0 < 15_000) {
    const due = Math.floor(((performance.now() - pushT0) * EVENT_RATE) / 1000);
    while (posted < due) {
      const u = users[Math.floor(Math.random() * SUBSCRIBERS)] as string;
      const body = JSON.stringify({
        eventId: crypto.randomUUID(),
        userId: u,
        itemId: `i${Math.floor(Math.random() * 2000)}`,
        type: 'view',
        ts: Date.now(),
      });
      const list = pending.get(u) ?? [];
      list.push(performance.now());
      pending.set(u, list);
      void fetch(`http://127.0.0.1:${streamPort}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${INGEST_TOKEN}` },
        body,
      });
      posted++;
    }
    await sleep(5);
  }
  await sleep(3000);
  const push = percentiles(pushLatencies);
  console.log(
    `push: ${posted} events posted, ${push.samples} pushes measured, p50 ${push.p50.toFixed(1)} ms, p99 ${push.p99.toFixed(1)} ms, ${shed} upgrades shed and retried`,
  );
  return { open, pending, posted, push, pushLatencies, pushT0, sockets };
}

/** Server memory with many open sockets, then the result file and summary. */
async function finish(
  s: SetUp,
  feeds: Awaited<ReturnType<typeof measureFeeds>>,
  pushed: Awaited<ReturnType<typeof measurePush>>,
) {
  const { batch, benchUsers, config, dir, inProcessBefore, redis, server, stream, users } = s;
  const { baseline, http, sustained, warmup } = feeds;
  const { open, posted, push, sockets } = pushed;
  // 3. Server memory with many open sockets.
  const memBefore = await memoryMiB(server.pid as number);
  for (let i = sockets.length; i < SOCKETS; i += 200) {
    const batchUsers = Array.from(
      { length: Math.min(200, SOCKETS - i) },
      (_, k) => users[(i + k) % users.length] as string,
    );
    await Promise.all(batchUsers.map((u) => open(u, false)));
  }
  await sleep(2000);
  const memSockets = await memoryMiB(server.pid as number);
  console.log(
    `server RSS: ${memBefore.rss} MiB (PSS ${memBefore.pss}) with ${SUBSCRIBERS} sockets, ` +
      `${memSockets.rss} MiB (PSS ${memSockets.pss}) with ${sockets.length}`,
  );
  for (const ws of sockets) ws.terminate();

  await stopProcess(server);
  await stopProcess(stream);
  const inProcessAfter = await inProcessCpuPerFeed(config, benchUsers, 5000);
  await emptyBenchDatabase(redis);
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });

  const peak = http.filter(sustained).reduce((m, h) => Math.max(m, h.throughputPerSec), 0);
  const at2000 = http.find((h) => h.rate === 2000);
  const result = {
    bench: 'serve',
    at: new Date().toISOString(),
    machine: { cpus: cpus().length, loadavg: loadavg() },
    settings: {
      workers: Number(WORKERS),
      events: EVENTS,
      seededEventsPerUser: SEED_EVENTS,
      rates: RATES,
      durationMs: DURATION_MS,
      warmupMs: WARMUP_MS,
      loadGenerator: `vegeta ${VERSIONS.vegeta}`,
      subscribers: SUBSCRIBERS,
      eventRate: EVENT_RATE,
      sockets: SOCKETS,
      candidates: config.serving.candidates,
    },
    batch: { stepsMs: batch.stepsMs, model: batch.model },
    /** CPU µs per feed built in the bench process (no HTTP), at the start and the end. */
    inProcessCpuUsPerFeed: { before: inProcessBefore, after: inProcessAfter },
    warmup,
    baseline,
    http,
    peakSustainedPerSec: peak,
    feedAt2000: at2000 ? at2000.latencyMs : null,
    /** Feed p99 at 2,000/s over the /healthz p99 at 2,000/s of the same run. */
    p99VsBaselineAt2000: at2000
      ? Math.round((at2000.latencyMs.p99 / baseline.latencyMs.p99) * 100) / 100
      : null,
    push: { posted, latencyMs: push },
    rssMiB: {
      withSubscribers: memBefore.rss,
      withSockets: memSockets.rss,
      sockets: sockets.length,
    },
    /** The same processes' proportional set size (shared pages split between them). */
    pssMiB: { withSubscribers: memBefore.pss, withSockets: memSockets.pss },
    targets: {
      p99At2000Ms: S.feed.targets.p99Ms,
      peakPerSec: S.feed.targets.peakPerSec,
      pushP99Ms: S.live.targets.pushP99Ms,
      rssMiBAt10kSockets: S.memory.targets.rssMiBAt10kSockets,
    },
  };
  await mkdir(join(root, 'bench/results'), { recursive: true });
  const file = join(root, 'bench/results', `serve-${result.at.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, JSON.stringify(result, null, 2) + '\n');
  console.log(`\n${file}`);
  const at2000Text = at2000
    ? `at 2,000/s p50 ${at2000.latencyMs.p50.toFixed(2)} ms p99 ${at2000.latencyMs.p99.toFixed(2)} ms ` +
      `(${result.p99VsBaselineAt2000}x the /healthz p99 of ${baseline.latencyMs.p99.toFixed(2)} ms), ` +
      `server CPU ${at2000.serverCpuUsPerRequest} µs per feed`
    : '2,000/s not run';
  console.log(
    `feed: peak ${peak}/s; ${at2000Text} | ` +
      `push p50 ${push.p50.toFixed(1)} ms p99 ${push.p99.toFixed(1)} ms | RSS ${memSockets.rss} MiB (PSS ${memSockets.pss}) with ${sockets.length} sockets | ` +
      `in-process ${inProcessBefore} / ${inProcessAfter} µs CPU per feed`,
  );
}

type SetUp = Awaited<ReturnType<typeof setUp>>;

async function main(): Promise<void> {
  await applyLocalSecrets(process.cwd()); // the local stack's secrets, unless set
  const s = await setUp();
  const feeds = await measureFeeds(s);
  const pushed = await measurePush(s);
  await finish(s, feeds, pushed);
}

await main();
process.exit(0);
