/**
 * The replay's own copy of the product on the running backbone, and its clean-up.
 *
 * Isolation: topics `<id>.events|dlq|served|items` (and their schema subjects), consumer groups
 * `<id>-<role>`, its own MQTT share group and bridge client id (session expiry 0 unless
 * overridden; discarded at the end), Redis database `db` (FLUSHDB at start and end; never 0),
 * Elasticsearch data streams of its own namespace (deleted at the end), lake, batch and model
 * registry under one temporary directory, free loopback ports. What cannot be isolated: MQTT
 * topics are one namespace whose prefix the broker's ACL fixes (`recsys/events/%u`), so any
 * other bridge on the same broker also receives events published over MQTT (the replay's user
 * ids carry the run's prefix); `--via http` avoids it. MQTT accounts made for the replay's users
 * stay in the broker's password file (the CLI has no delete).
 *
 * Every step that leaves something behind registers its undoing first ({@link Cleanup}); the
 * undoing runs in reverse order on success, failure and SIGINT/SIGTERM.
 *
 * @example
 *   const stack = await ReplayStack.create({ db: 3, log: console.error });
 *   try { await stack.startStream(); ... } finally { await stack.cleanup.run(); }
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import kafkajs from 'kafkajs';
import { Redis } from 'ioredis';
import { createRedis, scanKeys, type RedisClient } from '../../store/redis.js';
import mqtt from 'mqtt';
import { createLogger, loadConfig, sleep, type Config } from '../../core/index.js';
import { createKafka } from '../../stream/kafka.js';
import { elasticAuthHeaders } from '../../stream/elastic.js';
import { openRegistry } from '../../store/registry/index.js';

/** kafkajs' own logs stay off (`logLevel` NOTHING); this only satisfies the factory. */
const QUIET = createLogger('silent', 'replay-stack');
import { freePort, startReady, stopProcess } from '../processes.js';
import { Cleanup } from './cleanup.js';

export interface StackOptions {
  /** Redis database of the run (1..15). */
  db: number;
  say: (line: string) => void;
  /** Prefix of topics, groups and ids. @default 'replay' */
  prefix?: string;
  /** Variables of the product's processes that win over the stack's own (e.g. session expiry). */
  env?: Record<string, string>;
}

/** Key in a run's Redis database naming the run that holds it (see `#claimDatabase`). */
export const LOCK_KEY = 'recsys:replay:owner';
const LOCK_TTL_SEC = 60;

/** Roles of the stream process: no indexer or catalog role (not measured; catalog loads direct). */
export const STREAM_ROLES = ['ingest', 'features', 'lake', 'impressions'];

export class ReplayStack {
  readonly cleanup: Cleanup;
  readonly env: Record<string, string>;
  /** The private stream process's service token (RECSYS_INGEST_TOKENS). */
  readonly ingestToken = `replay-${randomBytes(24).toString('base64url')}`;
  readonly config: Readonly<Config>;
  readonly redis: RedisClient;
  /** The backbone's Redis is a Redis Cluster (database 0 only: the run's keys are its own). */
  readonly redisCluster: boolean;
  streamPort = 0;
  servingPort = 0;
  #stream: ChildProcess | null = null;
  #serving: ChildProcess | null = null;
  /** Short-lived children (batch, CLIs) still running: stopped by the clean-up. */
  readonly #children = new Set<ChildProcess>();

  private constructor(
    readonly id: string,
    readonly dir: string,
    readonly opts: StackOptions,
    cleanup: Cleanup,
  ) {
    this.cleanup = cleanup;
    const base = loadConfig(process.env);
    this.redisCluster = base.redis.cluster !== null;
    let redisUrl = base.redis.url;
    if (!this.redisCluster) {
      const url = new URL(base.redis.url);
      url.pathname = `/${opts.db}`;
      redisUrl = url.toString().replace(/\/$/, '');
    }
    this.env = {
      RECSYS_TOPIC_EVENTS: `${id}.events`,
      RECSYS_TOPIC_DLQ: `${id}.dlq`,
      RECSYS_TOPIC_SERVED: `${id}.served`,
      RECSYS_TOPIC_ITEMS: `${id}.items`,
      RECSYS_GROUP_FEATURES: `${id}-features`,
      RECSYS_GROUP_INDEXER: `${id}-indexer`,
      RECSYS_GROUP_LAKE: `${id}-lake`,
      RECSYS_GROUP_IMPRESSIONS: `${id}-impressions`,
      RECSYS_GROUP_CATALOG: `${id}-catalog`,
      RECSYS_GROUP_ATTRIBUTION: `${id}-attribution`,
      // Data stream namespaces allow no '-'.
      RECSYS_ES_NAMESPACE: id.replaceAll('-', '_'),
      RECSYS_MQTT_SHARE_GROUP: id,
      RECSYS_MQTT_CLIENT_ID: `${id}/bridge`,
      RECSYS_MQTT_SESSION_EXPIRY_S: '0',
      // History goes in with this service token; each replayed event with its user's JWT.
      RECSYS_INGEST_TOKENS: this.ingestToken,
      RECSYS_REDIS_URL: redisUrl,
      RECSYS_LAKE_DIR: join(dir, 'lake'),
      // Files close within a second or two, so the lake holds the history soon after ingest.
      RECSYS_LAKE_ROLL_MS: '1000',
      RECSYS_BATCH_DIR: join(dir, 'batch'),
      RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
      MLFLOW_TRACKING_URI: '',
      RECSYS_RATE_LIMIT_PER_S: '100000',
      RECSYS_MODEL_POLL_MS: '1000',
      RECSYS_LOG_LEVEL: process.env.RECSYS_LOG_LEVEL ?? 'warn',
      ...opts.env,
    };
    this.config = loadConfig({ ...process.env, ...this.env });
    this.redis = this.redisCluster
      ? createRedis(this.config.redis.url, `${id}-observe`)
      : new Redis(this.config.redis.url, { maxRetriesPerRequest: 3, lazyConnect: true });
    // A Redis restart (the fault matrix) is retried by ioredis; without a listener each failed
    // reconnect would print as an unhandled error event.
    this.redis.on('error', () => undefined);
  }

  /** Makes the temporary directory and connects to the run's Redis database, emptied. */
  static async create(opts: StackOptions): Promise<ReplayStack> {
    if (!Number.isInteger(opts.db) || opts.db < 1 || opts.db > 15) {
      throw new RangeError(`Redis database must be 1..15 (0 is the product's), got ${opts.db}`);
    }
    const cleanup = new Cleanup(opts.say);
    const id = `${opts.prefix ?? 'replay'}-${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
    const dir = await mkdtemp(join(tmpdir(), 'recsys-replay-'));
    cleanup.add('temporary directory', () => rm(dir, { recursive: true, force: true }));
    const stack = new ReplayStack(id, dir, opts, cleanup);
    cleanup.add('redis', async () => {
      if (stack.redis.status === 'ready') await stack.#flush();
      stack.redis.disconnect();
    });
    cleanup.add('topics and schema subjects', () => stack.#deleteTopics());
    cleanup.add('elasticsearch data streams', () => stack.#deleteDataStreams());
    cleanup.add('running commands', () =>
      Promise.all([...stack.#children].map((c) => stopProcess(c))),
    );
    if (!stack.redisCluster) {
      await (stack.redis as Redis).connect();
      await stack.#claimDatabase(opts.db, dir);
    } else {
      if (stack.redis.status !== 'ready') await once(stack.redis, 'ready');
      await stack.#flush();
    }
    return stack;
  }

  /**
   * Makes the run the only user of its Redis database: another run's FLUSHDB would empty this
   * one's features mid-replay (both then wait for events that never apply). A database a live
   * run holds (`LOCK_KEY`, renewed while the run lasts) is refused, untouched, with its owner;
   * a free one is emptied and held.
   */
  async #claimDatabase(db: number, dir: string): Promise<void> {
    const redis = this.redis as Redis;
    if ((await redis.set(LOCK_KEY, this.id, 'EX', LOCK_TTL_SEC, 'NX')) === null) {
      const owner = await redis.get(LOCK_KEY);
      redis.disconnect();
      await rm(dir, { recursive: true, force: true });
      throw new Error(
        `Redis database ${db} is in use by another run (${owner ?? 'gone since'}): wait for it to end, or give this one another --db`,
      );
    }
    // The flush that follows removes the key: held again from then on, until the clean-up.
    const renew = setInterval(
      () => {
        redis.set(LOCK_KEY, this.id, 'EX', LOCK_TTL_SEC).catch(() => undefined);
      },
      (LOCK_TTL_SEC * 1000) / 3,
    );
    renew.unref();
    this.cleanup.add('database claim', async () => clearInterval(renew));
    await this.#flush();
    await redis.set(LOCK_KEY, this.id, 'EX', LOCK_TTL_SEC);
  }

  /**
   * Empties the run's Redis: its database, or on a Redis Cluster (one database, maybe shared)
   * the keys that name the run (its users' and items' ids carry {@link id}); the trending sets,
   * whose members are the run's items, are left.
   */
  async #flush(): Promise<void> {
    if (!this.redisCluster) {
      await (this.redis as Redis).flushdb();
      return;
    }
    await scanKeys(this.redis, `*${this.id}*`, 1000, async (keys) => {
      for (const k of keys) await this.redis.unlink(k);
    });
  }

  /** The stream process with {@link STREAM_ROLES}. */
  async startStream(): Promise<void> {
    this.streamPort = await freePort();
    this.cleanup.add('stream process', async () => {
      if (this.#stream) await stopProcess(this.#stream);
      await this.discardBridgeSession();
    });
    await startReady('dist/stream/main.js', STREAM_ROLES, this.env, this.streamPort, {
      onSpawn: (child) => (this.#stream = child),
    });
  }

  /**
   * The feed server, once it answers `/healthz`; then up to `readyWaitMs` for `/readyz` (a
   * server without a model is ready once warm: the heuristic blend ranks, and /readyz lists the
   * model as degraded). Not ready then is no failure when only the model or the warm-up is
   * missing; the report says so. Returns the readiness checks that failed.
   */
  async startServing(readyWaitMs = 120_000): Promise<Record<string, unknown>> {
    this.servingPort = await freePort();
    this.cleanup.add('serving process', async () => {
      if (this.#serving) await stopProcess(this.#serving);
    });
    await startReady('dist/serving/main.js', [], this.env, this.servingPort, {
      readyPath: '/healthz',
      onSpawn: (child) => (this.#serving = child),
    });
    const deadline = Date.now() + readyWaitMs;
    for (;;) {
      const res = await fetch(`http://127.0.0.1:${this.servingPort}/readyz`);
      const body = (await res.json().catch(() => ({}))) as {
        checks?: Record<string, { ok?: boolean }>;
      };
      if (res.status === 200) return {};
      const failing = Object.fromEntries(
        Object.entries(body.checks ?? {}).filter(([, c]) => c.ok === false),
      );
      if (Date.now() > deadline) {
        const others = Object.keys(failing).filter((n) => n !== 'model' && n !== 'warm');
        if (others.length > 0) throw new Error(`serving not ready: ${JSON.stringify(failing)}`);
        return failing;
      }
      await sleep(500);
    }
  }

  /**
   * Waits until the feed server serves the registry's champion, or the blend when there is
   * none (`recsys_model_info` on its /metrics); returns that version.
   */
  async waitServingModel(timeoutMs = 30_000): Promise<string> {
    const registry = openRegistry(this.config.batch, QUIET);
    let want: string;
    try {
      want = (await registry.champion())?.version ?? 'blend';
    } finally {
      await registry.close();
    }
    const serving = new RegExp(`^recsys_model_info\\{[^}]*version="${want}"[^}]*\\} [1-9]`, 'm');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = await fetch(`http://127.0.0.1:${this.servingPort}/metrics`);
      if (serving.test(await res.text())) return want;
      if (Date.now() > deadline) throw new Error(`serving did not switch to model ${want}`);
      await sleep(250);
    }
  }

  /**
   * POSTs events to the stream process's `/v1/events` in batches, with the service token or the
   * given user's JWT; retries a 503.
   */
  async postEvents(
    events: readonly Record<string, unknown>[],
    batch = 500,
    token = this.ingestToken,
  ): Promise<void> {
    const size = Math.min(batch, this.config.ingest.maxBatchEvents);
    for (let i = 0; i < events.length; i += size) {
      const body = JSON.stringify(events.slice(i, i + size));
      // A 503 (Kafka away, the bridge full) is retried with the same events (their eventIds make
      // a repeat harmless) for up to two minutes, after Retry-After when given.
      const deadline = Date.now() + 120_000;
      for (let attempt = 1; ; attempt++) {
        const res = await fetch(`http://127.0.0.1:${this.streamPort}/v1/events`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body,
        });
        if (res.status === 202) break;
        const text = await res.text();
        if (res.status !== 503 || Date.now() > deadline) {
          throw new Error(`POST /v1/events answered ${res.status}: ${text.slice(0, 500)}`);
        }
        const after = Number(res.headers.get('retry-after'));
        await sleep(after > 0 ? after * 1000 : Math.min(5000, 200 * attempt));
      }
    }
  }

  /** Waits until each consumer group has committed `total` records of the events topic. */
  async waitCommitted(groups: string[], total: number, timeoutMs: number): Promise<void> {
    const admin = this.#kafka().admin();
    await admin.connect();
    const deadline = Date.now() + timeoutMs;
    try {
      for (const group of groups) {
        for (;;) {
          const [c] = await admin.fetchOffsets({
            groupId: group,
            topics: [this.config.kafka.topics.events],
          });
          const done = (c?.partitions ?? []).reduce((s, p) => s + Math.max(0, Number(p.offset)), 0);
          if (done >= total) break;
          if (Date.now() > deadline) {
            throw new Error(`group ${group} committed ${done} of ${total} within ${timeoutMs} ms`);
          }
          await sleep(250);
        }
      }
    } finally {
      await admin.disconnect();
    }
  }

  /**
   * Writes the catalog to `<batchDir>/catalog.jsonl` (what the batch joins) and loads it into
   * Redis with the catalog CLI. Both, because `catalog load` does not write the batch's copy.
   */
  async loadCatalog(
    items: Map<string, string>,
    createdAt: (itemId: string) => number,
  ): Promise<string> {
    const file = join(this.config.batch.dir, 'catalog.jsonl');
    const lines = [...items].map(([itemId, categoryL1]) =>
      JSON.stringify({ itemId, categoryL1, isAvailable: true, createdAt: createdAt(itemId) }),
    );
    await mkdir(this.config.batch.dir, { recursive: true });
    await writeFile(file, lines.join('\n') + '\n');
    await this.run('dist/stream/catalog-cli.js', ['load', file]);
    return file;
  }

  /** Runs the batch once (`node dist/batch/main.js`), its lines passed to `say`. */
  runBatch(): Promise<string> {
    return this.run('dist/batch/main.js', [], (line) => this.opts.say(`  batch: ${line}`));
  }

  /** Adds an MQTT account with the stack's CLI (Mosquitto reloads its password file). */
  addMqttUser(user: string, password: string): Promise<string> {
    return this.run('dist/deploy/local/cli.js', ['mqtt-user', user, password]);
  }

  /** Runs `node <script> args` with the run's env to completion; rejects on a non-zero exit. */
  run(script: string, args: string[], onLine?: (line: string) => void): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(process.cwd(), script), ...args], {
        cwd: process.cwd(),
        env: { ...process.env, ...this.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.#children.add(child);
      child.once('exit', () => this.#children.delete(child));
      let out = '';
      let err = '';
      let partial = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (!onLine) return;
        const lines = (partial + d.toString()).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) if (line.trim()) onLine(line);
      });
      child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
      child.once('error', reject);
      child.once('exit', (code) =>
        code === 0
          ? resolve(out)
          : reject(new Error(`${script} ${args[0] ?? ''} exited ${code}: ${err.slice(-2000)}`)),
      );
    });
  }

  #kafka(): kafkajs.Kafka {
    return createKafka(this.config.kafka, QUIET, `${this.id}-admin`, {
      logLevel: kafkajs.logLevel.NOTHING,
    });
  }

  async #deleteTopics(): Promise<void> {
    const topics = Object.values(this.config.kafka.topics);
    const admin = this.#kafka().admin();
    await admin.connect();
    try {
      const existing = new Set(await admin.listTopics());
      const mine = topics.filter((t) => existing.has(t));
      if (mine.length > 0) await admin.deleteTopics({ topics: mine, timeout: 10_000 });
    } finally {
      await admin.disconnect();
    }
    for (const topic of topics) {
      const subject = `${this.config.registry.url}/subjects/${encodeURIComponent(`${topic}-value`)}`;
      // Soft delete, then permanent (the Confluent API needs both).
      for (const url of [subject, `${subject}?permanent=true`]) {
        await fetch(url, { method: 'DELETE' }).catch(() => undefined);
      }
    }
  }

  /** The run's data streams (`logs-recsys.*-<namespace>`), if an indexer made any. */
  async #deleteDataStreams(): Promise<void> {
    const { url } = this.config.elasticsearch;
    const pattern = `logs-recsys.*-${this.env.RECSYS_ES_NAMESPACE}`;
    await fetch(`${url}/_data_stream/${pattern}`, {
      method: 'DELETE',
      headers: elasticAuthHeaders(this.config.elasticsearch),
      signal: AbortSignal.timeout(10_000),
    }).catch(() => undefined);
  }

  /**
   * Ends the bridge's broker session: with an expiry of 0 this covers a killed bridge; with a
   * longer one (a run that kills the bridge on purpose) the broker would otherwise keep queuing
   * every user's events for it.
   */
  async discardBridgeSession(clientId = this.env.RECSYS_MQTT_CLIENT_ID): Promise<void> {
    const { bridgeUrl, username, password } = this.config.mqtt;
    const client = await mqtt.connectAsync(bridgeUrl, {
      protocolVersion: 5,
      username,
      password,
      clientId,
      clean: true,
      connectTimeout: 3000,
      reconnectPeriod: 0,
    });
    await client.endAsync();
  }
}
