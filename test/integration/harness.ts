/**
 * What integration tests share: the config the stack runs with, a guard that fails (under
 * CI=true) or skips (on a laptop without the stack) when a service is down, and a runner for
 * the real command-line clients (kcat, redis-cli, mosquitto_pub/sub, curl) that prove our
 * interfaces from outside the project.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import type { TestContext } from 'node:test';
import kafkajs from 'kafkajs';
import { loadConfig, type Config } from '../../core/config.js';
import type { ServiceName, StackContext } from '../../deploy/local/service-def.js';
import { SERVICES } from '../../deploy/local/stack.js';
import { kafkaJava } from '../../deploy/local/kafka.js';
import { createLogger } from '../../core/log.js';
import { sleep } from '../../core/retry.js';
import { createKafka, type Kafka } from '../../stream/kafka.js';
import { elasticAuthHeaders } from '../../stream/elastic.js';
import { applyLocalSecrets } from '../../deploy/local/secrets.js';

// The stack's secrets (RECSYS_LOCAL_DIR/secrets/, as `up` made them) unless the run sets its
// own: the tests' processes inherit them, as `up`'s do.
await applyLocalSecrets(process.cwd());
export const config = loadConfig(process.env);
export const CI = process.env.CI === 'true';
export const log = createLogger(process.env.RECSYS_TEST_LOG_LEVEL ?? 'warn', 'test');

/**
 * Returns true when all `names` answer. Otherwise: under CI the test fails; elsewhere it is
 * skipped with a note that says how to start the stack.
 */
export async function requireServices(t: TestContext, ...names: ServiceName[]): Promise<boolean> {
  const ctx = { config, log, localDir: resolve(config.local.dir) } as unknown as StackContext;
  const down: string[] = [];
  for (const name of names) {
    const ok = await SERVICES[name].probe(ctx).catch(() => false);
    if (!ok) down.push(name);
  }
  if (down.length === 0) return true;
  const message = `service(s) not reachable: ${down.join(', ')} (start them with: npm run stack -- up)`;
  if (CI) throw new Error(message);
  t.skip(message);
  return false;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs a command to completion (or kills it after `timeoutMs`), optionally feeding stdin, and
 * keeps stdout as bytes (kcat prints binary Avro bodies).
 */
export function runBytes(
  cmd: string,
  args: string[],
  opts: RunOptions = {},
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() });
    });
    if (child.stdin) {
      // A command that exits without reading stdin must not turn EPIPE into an uncaught error.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

/** {@link runBytes} with stdout as text. */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const res = await runBytes(cmd, args, opts);
  return { ...res, stdout: res.stdout.toString() };
}

/** The stack's own CLI; the tests run from the checkout root. */
export const CLI = join(process.cwd(), 'dist', 'deploy', 'local', 'cli.js');

/**
 * The environment of product processes a test starts, isolated from other tests: Redis database
 * `db`, lake, batch and registry under `dir` (no MLflow), and topics, consumer groups, MQTT share
 * group and client id named after `id`; no rate limit to speak of, quick rebalances, warn logs.
 * `overrides` win.
 */
export function productEnv(
  dir: string,
  id: string,
  db: number,
  overrides: NodeJS.ProcessEnv = {},
): NodeJS.ProcessEnv {
  return {
    ...process.env,
    RECSYS_REDIS_URL: `${config.redis.url}/${db}`,
    RECSYS_LAKE_DIR: join(dir, 'lake'),
    RECSYS_BATCH_DIR: join(dir, 'batch'),
    RECSYS_MODEL_REGISTRY_URL: `file://${join(dir, 'models')}`,
    MLFLOW_TRACKING_URI: '',
    RECSYS_TOPIC_EVENTS: `${id}.events`,
    RECSYS_TOPIC_DLQ: `${id}.dlq`,
    RECSYS_TOPIC_SERVED: `${id}.served`,
    RECSYS_TOPIC_ITEMS: `${id}.items`,
    RECSYS_GROUP_FEATURES: `${id}-features`,
    RECSYS_GROUP_INDEXER: `${id}-indexer`,
    RECSYS_GROUP_ATTRIBUTION: `${id}-attribution`,
    RECSYS_MQTT_SHARE_GROUP: id,
    RECSYS_MQTT_CLIENT_ID: `${id}/bridge`,
    RECSYS_RATE_LIMIT_PER_S: '100000',
    RECSYS_CONSUMER_SESSION_TIMEOUT_MS: '6000',
    RECSYS_LOG_LEVEL: 'warn',
    ...overrides,
  };
}

/**
 * Adds (or updates) an MQTT account with the stack's own tool, which returns once Mosquitto
 * accepts the account (it reloads its password file asynchronously after SIGHUP).
 */
export async function addMqttUser(username: string, password: string): Promise<void> {
  const res = await run('node', [CLI, 'mqtt-user', username, password], { timeoutMs: 60_000 });
  assert.equal(res.code, 0, `mqtt-user ${username} failed: ${res.stderr}`);
}

/**
 * A kafkajs client for a test (`createKafka`, so it logs in as the config says), quiet: the
 * test asserts on what it gets, kafkajs' own retry logs would only be noise.
 */
export function testKafka(role = 'test', cfg: Readonly<Config> = config): Kafka {
  return createKafka(cfg.kafka, log, role, { logLevel: kafkajs.logLevel.NOTHING });
}

/** curl's arguments for Elasticsearch's API key (RECSYS_ES_API_KEY), none without one. */
export function esCurlAuth(cfg: Readonly<Config> = config): string[] {
  return Object.entries(elasticAuthHeaders(cfg.elasticsearch)).flatMap(([k, v]) => [
    '-H',
    `${k}: ${v}`,
  ]);
}

/**
 * kcat's (librdkafka's) arguments for where Kafka is and how to log in: `-b` the first broker,
 * and with RECSYS_KAFKA_SASL_MECHANISM the same SASL account the stack's clients use.
 */
export function kcatArgs(cfg: Readonly<Config> = config): string[] {
  const args = ['-b', cfg.kafka.brokers[0] ?? '127.0.0.1:9092'];
  const sasl = cfg.kafka.sasl;
  if (!sasl) return args;
  return args.concat(
    ...[
      'security.protocol=SASL_PLAINTEXT',
      `sasl.mechanisms=${sasl.mechanism.toUpperCase()}`,
      `sasl.username=${sasl.username}`,
      `sasl.password=${sasl.password}`,
    ].map((kv) => ['-X', kv]),
  );
}

/** {@link kcatArgs} of the tests' configuration. */
export const kcatKafka = kcatArgs();

/** A unique suffix so test runs never see each other's topics, keys or subjects. */
export function uniq(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Starts `node <script> ...args` (a product entry point under dist/) on `port` and waits until
 * `ready` answers 200; throws with the tail of its stderr if it exits or is not ready in 60 s.
 */
export async function startProduct(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  port: number,
  ready = '/readyz',
): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(process.cwd(), script), ...args], {
    env: { ...env, RECSYS_HTTP_PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${script} exited ${child.exitCode}: ${err}`);
    const ok = await fetch(`http://127.0.0.1:${port}${ready}`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return child;
    if (Date.now() > deadline) throw new Error(`${script} not ready in 60 s: ${err}`);
    await sleep(200);
  }
}

/**
 * `kafka-configs --describe` of a topic by Kafka's own tool (kafka.admin.ConfigCommand on the
 * cached broker jars): its stdout, asserted to have exited 0.
 */
export async function describeTopicConfigs(
  cacheDir: string,
  brokers: string,
  topic: string,
): Promise<string> {
  const tool = await kafkaJava({ cacheDir } as StackContext, [
    '-Xmx128m',
    '-XX:TieredStopAtLevel=1',
  ]);
  const described = await run(
    tool.java,
    [
      ...tool.args,
      'kafka.admin.ConfigCommand',
      '--bootstrap-server',
      brokers,
      '--entity-type',
      'topics',
      '--entity-name',
      topic,
      '--describe',
    ],
    { timeoutMs: 60_000 },
  );
  assert.equal(described.code, 0, described.stderr);
  return described.stdout;
}
