/**
 * What the server integration tests share: a real serving process (`node dist/serving/main.js`)
 * with the real feed service on its own Redis database (13 by default) seeded with a small catalog and
 * trending counts, an empty model registry (feeds come unranked) and a unique served-log
 * topic; plus curl and `redis-cli PUBLISH` helpers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, type TestContext } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { type Config, loadConfig } from '../../../core/index.js';
import { sleep } from '../../../core/retry.js';
import { mintToken } from '../../../core/auth.js';
import { CatalogStore } from '../../../store/catalog.js';
import { FEATURE_CHANNEL } from '../../../store/keys.js';
import { TrendingStore } from '../../../store/trending.js';
import { deleteTopics, freePort } from '../ingest/bridge-process.js';
import { config as baseConfig, requireServices, run, uniq } from '../harness.js';

/** The suite's Redis database (flushed): 13, or RECSYS_TEST_REDIS_DB on a shared Redis. */
export const DB = Number(process.env.RECSYS_TEST_REDIS_DB ?? 13);
const MAIN = join(process.cwd(), 'dist', 'serving', 'main.js');

export class ServingProcess {
  child!: ChildProcess;
  config!: Readonly<Config>;
  redis!: Redis;
  baseUrl = '';
  wsUrl = '';
  output = '';
  exited!: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #dir = '';
  #offset = 0;

  async start(extraEnv: Record<string, string> = {}): Promise<void> {
    this.#dir = await mkdtemp(join(tmpdir(), 'recsys-serving-'));
    const port = await freePort();
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RECSYS_REDIS_URL: `${baseConfig.redis.url}/${DB}`,
      RECSYS_HTTP_HOST: '127.0.0.1',
      RECSYS_HTTP_PORT: String(port),
      RECSYS_MODEL_REGISTRY_URL: `file://${join(this.#dir, 'models')}`,
      RECSYS_TOPIC_SERVED: uniq('test.served'),
      RECSYS_LOG_LEVEL: 'warn',
      ...extraEnv,
    };
    this.config = loadConfig(env);
    this.redis = new Redis(this.config.redis.url, { lazyConnect: false });
    await this.redis.flushdb();
    await this.seed();
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.wsUrl = `ws://127.0.0.1:${port}/v1/feed`;
    this.child = spawn(process.execPath, [MAIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer): void => {
      this.output = (this.output + d.toString()).slice(-32_000);
    };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`serving exited:\n${this.output}`);
      const ok = await fetch(`${this.baseUrl}/healthz`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`serving not up in 30 s:\n${this.output}`);
      await sleep(100);
    }
  }

  /** Six catalog items with trending counts 6..1 (it-1 most trending). */
  async seed(): Promise<void> {
    const catalog = new CatalogStore(this.redis, { cacheTtlMs: 0, cacheSize: 0 });
    const now = Date.now();
    await catalog.upsert(
      Array.from({ length: 9 }, (_, i) => ({
        itemId: `it-${i + 1}`,
        categoryL1: `c${i % 3}`,
        categoryL2: null,
        price: 10 + i,
        isAvailable: true,
        createdAt: now - 30 * 86_400_000, // older than RECSYS_FEED_NEW_ITEM_AGE_MS: not explored
      })),
    );
    await this.trend(
      Array.from({ length: 6 }, (_, i) => [`it-${i + 1}`, 6 - i] as [string, number]),
    );
  }

  /** Adds trending counts (as the feature consumer would). */
  async trend(counts: Array<[string, number]>): Promise<void> {
    const trending = new TrendingStore(this.redis, this.config.trending);
    const records = counts.flatMap(([itemId, n]) =>
      Array.from({ length: n }, () => ({
        itemId,
        category: `c${(Number(itemId.slice(3)) - 1) % 3}`,
        ts: Date.now(),
        offset: String(this.#offset++),
      })),
    );
    await trending.apply('serving-test', 0, records);
  }

  token(userId: string, ttlSec = 600): Promise<string> {
    return mintToken(this.config.serving, userId, ttlSec);
  }

  async stop(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
    if (this.redis) {
      await this.redis.flushdb().catch(() => undefined);
      this.redis.disconnect();
    }
    await deleteTopics([this.config.kafka.topics.served]).catch(() => undefined);
    if (this.#dir) await rm(this.#dir, { recursive: true, force: true });
  }
}

/** Runs `redis-cli` (the real client) against the suite's Redis database; its output. */
export async function redisCli(...args: string[]): Promise<string> {
  // -u: the URL carries the database and, on a secure backbone, the ACL user and password.
  const res = await run('redis-cli', ['-u', `${baseConfig.redis.url}/${DB}`, ...args]);
  if (res.code !== 0) throw new Error(`redis-cli ${args[0]}: ${res.stderr}`);
  return res.stdout;
}

/** What a feature consumer does after changing a user's features, with the real client. */
export async function publishFeatureChange(userId: string): Promise<void> {
  await redisCli('PUBLISH', FEATURE_CHANNEL, userId);
}

export interface CurlResult {
  status: number;
  body: string;
  json: unknown;
}

/** `curl -s -w '%{http_code}'`: the body, then the status on the last line. */
export async function curl(url: string, args: string[] = []): Promise<CurlResult> {
  const res = await run('curl', ['-s', '-w', '\n%{http_code}', ...args, url], {
    timeoutMs: 15_000,
  });
  const at = res.stdout.lastIndexOf('\n');
  const body = res.stdout.slice(0, at);
  let json: unknown = null;
  try {
    json = JSON.parse(body);
  } catch {
    // not JSON
  }
  return { status: Number(res.stdout.slice(at + 1)), body, json };
}

/**
 * The suite's server: started with `env` before its tests and stopped after them. When Redis or
 * Kafka is down the tests skip (`skipped()`); under CI the hook fails instead.
 */
export function suiteServer(env: Record<string, string>): {
  server: ServingProcess;
  skipped: () => boolean;
} {
  const server = new ServingProcess();
  let skip = false;
  before(async (t) => {
    if (!(await requireServices(t as unknown as TestContext, 'redis', 'kafka'))) {
      skip = true;
      return;
    }
    await server.start(env);
  });
  after(() => server.stop());
  return { server, skipped: () => skip };
}

/** The value of the first sample line of metric `name` whose labels include `labels`. */
export function metricSample(text: string, name: string, labels = ''): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) && line.includes(labels)) return Number(line.split(' ').pop());
  }
  return Number.NaN;
}
