/**
 * `npm run chaos`: the fault matrix of issue 16 against the backbone deploy/local runs (from
 * RECSYS_LOCAL_DIR; the backbone faults stop and start its Kafka, Redis and Elasticsearch, so
 * run it on a stack of your own, never on a shared one). It starts its own copy of the product,
 * drives a steady mixed load, injects one fault per phase, and prints one table line per fault;
 * the whole result goes to `bench/results/chaos-<time>.json`. Exit status 1 when anything
 * accepted was lost or stored twice, a malformed payload missed the DLQ, or a fault did not
 * recover.
 *
 *   npm run chaos                                  # every fault, 300 events/s (about 15 min)
 *   npm run chaos -- --faults bridge,features,kafka --rate 200
 *   npm run chaos -- --profile cluster --rate 250  # the cluster form (cluster-faults.ts)
 *
 * The cluster form runs on deploy/local's cluster profile (`up --profile cluster`, from the same
 * RECSYS_LOCAL_DIR; its brokers and Redis Cluster are set for the product's processes here), 2
 * processes of every role (`--instances`) and 1 worker per feed server (`--workers`), and its
 * own faults (keys none, kafka-broker, redis-master, bridge, features, indexer, lake, serving);
 * `--node-down-s` (15) is how long a killed broker or Redis master stays down, and the table
 * gains a failover column.
 *
 * Options: --faults <keys> (none, bridge, features, catalog, indexer, lake, impressions,
 * attribution, serving-worker, serving, redis, kafka, es; default all), --rate <events/s>,
 * --feed-rate <req/s>, --warm-s, --steady-s, --workers <serving workers>, --db <1..15>
 * (default 11), --out <file>, --env NAME=value (a variable of the product's processes; repeatable).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { loadConfig } from '../../core/index.js';
import { applyLocalSecrets } from '../../deploy/local/secrets.js';
import { clusterEnv } from '../../deploy/local/profile.js';
import { CLUSTER_FAULT_KEYS } from './cluster-faults.js';
import { FAULT_KEYS } from './faults.js';
import { markdownTable } from './report.js';
import { CHAOS_DEFAULTS, runChaos } from './run.js';

function parseArgs(argv: string[]): { flags: Map<string, string>; env: Record<string, string> } {
  const flags = new Map<string, string>();
  const env: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (!a.startsWith('--')) throw new Error(`unexpected argument "${a}"`);
    const value = argv[++i] ?? '';
    if (a !== '--env') flags.set(a.slice(2), value);
    else {
      const eq = value.indexOf('=');
      if (eq < 1) throw new Error(`--env takes NAME=value, got "${value}"`);
      env[value.slice(0, eq)] = value.slice(eq + 1);
    }
  }
  return { flags, env };
}

function num(flags: Map<string, string>, name: string, fallback: number): number {
  const v = flags.get(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number, got "${v}"`);
  return n;
}

async function main(): Promise<number> {
  const { flags, env } = parseArgs(process.argv.slice(2));
  // The stack's secrets (RECSYS_LOCAL_DIR/secrets/: the JWT secret, the bridge's MQTT password)
  // unless set: the product's processes inherit them.
  await applyLocalSecrets(process.cwd());
  const profile = flags.get('profile') ?? 'single';
  if (profile !== 'single' && profile !== 'cluster')
    throw new Error(`--profile takes single or cluster, got "${profile}"`);
  const cluster = profile === 'cluster';
  // The cluster profile's brokers, Redis Cluster and replication settings, for this process and
  // the product's.
  if (cluster) Object.assign(process.env, clusterEnv({ config: loadConfig(process.env) }));
  const config = loadConfig(process.env);
  const known = cluster ? CLUSTER_FAULT_KEYS : FAULT_KEYS;
  const keys = flags.get('faults')?.split(',').filter(Boolean) ?? Object.keys(known);
  const faults = keys.map((k) => {
    const name = known[k];
    if (!name) throw new Error(`unknown fault "${k}"; known: ${Object.keys(known).join(', ')}`);
    return name;
  });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const localDir = resolve(config.local.dir);
  const out =
    flags.get('out') ?? join('bench', 'results', `chaos-${cluster ? 'cluster-' : ''}${stamp}.json`);
  const say = (line: string): void =>
    console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
  const result = await runChaos({
    ...CHAOS_DEFAULTS,
    faults,
    rate: num(flags, 'rate', CHAOS_DEFAULTS.rate),
    feedRate: num(flags, 'feed-rate', CHAOS_DEFAULTS.feedRate),
    warmMs: num(flags, 'warm-s', CHAOS_DEFAULTS.warmMs / 1000) * 1000,
    steadyMs: num(flags, 'steady-s', CHAOS_DEFAULTS.steadyMs / 1000) * 1000,
    servingWorkers: num(flags, 'workers', cluster ? 1 : CHAOS_DEFAULTS.servingWorkers),
    profile,
    instances: num(flags, 'instances', cluster ? 2 : 1),
    nodeDownMs: num(flags, 'node-down-s', 15) * 1000,
    failoverTimeoutMs: num(flags, 'failover-timeout-s', 90) * 1000,
    db: num(flags, 'db', CHAOS_DEFAULTS.db),
    env,
    localDir,
    logDir: join(localDir, 'logs', `chaos-${cluster ? 'cluster-' : ''}${stamp}`),
    say,
  });
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`\n${markdownTable(result.rows)}\n`);
  console.log(
    'K / R / E / L: Kafka, Redis (features applied), Elasticsearch, lake. Kafka duplicates are ' +
      'records beyond the acknowledged sends (at-least-once); the stores must hold each once.',
  );
  if (Object.keys(result.uncommitted).length > 0) {
    console.log(
      `not committed when the run stopped waiting: ${JSON.stringify(result.uncommitted)}`,
    );
  }
  for (const note of result.interference) console.log(`INTERFERENCE: ${note}`);
  for (const f of result.failures) console.log(`FAILED: ${f}`);
  console.log(`${result.durationS} s; result: ${out}`);
  return result.failures.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`chaos: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
