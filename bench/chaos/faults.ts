/**
 * The faults of the matrix, one per phase, and how recovery from each is timed.
 *
 * A process fault is a SIGKILL (no chance to flush or commit) and, after `restartDelayMs`, a
 * new process with the same environment on the same port, as a supervisor would start it; a
 * serving worker is restarted by its primary. Backbone faults go through deploy/local's CLI by
 * service name (`down <name>`, then `up <name>`), so only a stack deploy/local runs (its pid
 * files in RECSYS_LOCAL_DIR) can be used for them: Redis restarted, Kafka stopped for 20 s,
 * Elasticsearch stopped for 60 s.
 *
 * Recovered means: every product process answers `/readyz` 200 (serving: every worker, see
 * `ChaosProduct.ready`) and every consumer group has committed everything its topics held when
 * the fault began, i.e. the backlog the fault caused is worked off.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import kafkajs from 'kafkajs';
import { createLogger, sleep, type Config } from '../../core/index.js';
import { createKafka } from '../../stream/kafka.js';
import { isOurs, readPidFile } from '../../deploy/local/process.js';
import { type ChaosProduct, type ProcessName } from './product.js';
import type { GroupTopics } from './observe.js';

export interface FaultContext {
  product: ChaosProduct;
  /** `node dist/deploy/local/cli.js <args>`; rejects on a non-zero exit. */
  stackCli: (args: string[]) => Promise<void>;
  restartDelayMs: number;
  /** The run's configuration (its topics, groups, Redis, MQTT). */
  config: Readonly<Config>;
  /** RECSYS_LOCAL_DIR of the stack (its pid files). */
  localDir: string;
  /** The run's id prefix (users, groups). */
  prefix: string;
  /** Tells the backbone watch that `service` is stopped on purpose (until `up`). */
  expectDown: (service: string) => void;
  /** A user of the current phase's load. */
  loadUser: () => string;
  /** An MQTT account of the run that belongs to no phase (probe events are not counted). */
  probeDevice: { userId: string; password: string };
  /** Live sockets open now, and how many the load keeps. */
  openSockets: () => number;
  liveSockets: number;
  /** Cluster form: how long a killed broker or Redis node stays down. */
  nodeDownMs: number;
  /** Cluster form: how long a failover may take before the killed part is restarted anyway. */
  failoverTimeoutMs: number;
}

/** How long the path a fault broke took to work again, without the killed part (cluster form). */
export interface Failover {
  /** From the fault until the path worked again (null: not within `failoverTimeoutMs`). */
  ms: number | null;
  /** What was timed. */
  measure: string;
  detail?: Record<string, unknown>;
}

export interface Fault {
  name: string;
  /** A backbone service the fault stops (needs a deploy/local stack of ours). */
  backbone?: string;
  /**
   * Injects the fault and undoes it; resolves once the undoing began (restart, `up`), with the
   * failover time when the fault measures one.
   */
  run(ctx: FaultContext): Promise<Failover | void>;
}

const killAndRestart =
  (name: ProcessName) =>
  async (ctx: FaultContext): Promise<void> => {
    await ctx.product.kill(name);
    await sleep(ctx.restartDelayMs);
    await ctx.product.start(name);
  };

const stopFor =
  (service: string, ms: number) =>
  async (ctx: FaultContext): Promise<void> => {
    await ctx.stackCli(['down', service]);
    await sleep(ms);
    // A start that fails is tried again, as an operator would; the failure is still reported.
    const errors: string[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await ctx.stackCli(['up', service]);
        break;
      } catch (err) {
        errors.push((err as Error).message.split('\n')[0] as string);
        if (attempt === 3) throw new Error(errors.join('; '));
        await sleep(5000);
      }
    }
    if (errors.length > 0)
      throw new Error(`started after ${errors.length} failed start(s): ${errors.join('; ')}`);
  };

/** Every fault, in the order the full matrix runs them. */
export const FAULTS: readonly Fault[] = [
  { name: 'none (control)', run: async () => undefined },
  { name: 'kill bridge', run: killAndRestart('ingest') },
  { name: 'kill features', run: killAndRestart('features') },
  { name: 'kill catalog', run: killAndRestart('catalog') },
  { name: 'kill indexer', run: killAndRestart('indexer') },
  { name: 'kill lake', run: killAndRestart('lake') },
  { name: 'kill impressions', run: killAndRestart('impressions') },
  { name: 'kill attribution', run: killAndRestart('attribution') },
  {
    name: 'kill serving worker',
    run: async (ctx) => {
      await ctx.product.killWorker();
    },
  },
  { name: 'kill serving', run: killAndRestart('serving') },
  { name: 'restart redis', backbone: 'redis', run: stopFor('redis', 0) },
  { name: 'stop kafka 20 s', backbone: 'kafka', run: stopFor('kafka', 20_000) },
  {
    name: 'stop elasticsearch 60 s',
    backbone: 'elasticsearch',
    run: stopFor('elasticsearch', 60_000),
  },
];

/** Faults by a short key (`bridge`, `features`, ..., `serving-worker`, `redis`, `kafka`, `es`). */
export const FAULT_KEYS: Readonly<Record<string, string>> = {
  none: 'none (control)',
  bridge: 'kill bridge',
  features: 'kill features',
  catalog: 'kill catalog',
  indexer: 'kill indexer',
  lake: 'kill lake',
  impressions: 'kill impressions',
  attribution: 'kill attribution',
  'serving-worker': 'kill serving worker',
  serving: 'kill serving',
  redis: 'restart redis',
  kafka: 'stop kafka 20 s',
  es: 'stop elasticsearch 60 s',
};

/** Consumer groups of the product and the topics each reads. */
export function groupTopics(config: Readonly<Config>): GroupTopics {
  const groups = config.consumer.groups;
  const topics = config.kafka.topics;
  return {
    [groups.features]: [topics.events],
    [groups.indexer]: [topics.events, topics.served, topics.dlq],
    [groups.lake]: [topics.events],
    [groups.impressions]: [topics.served, topics.events],
    [groups.attribution]: [topics.served, topics.events],
    [groups.catalog]: [topics.items],
  };
}

export interface Recovery {
  /** From the fault's start until recovered (null: not within the time allowed). */
  recoveredMs: number | null;
  /** Per process that stopped answering ready: from the fault's start until it did again. */
  readyMs: Record<string, number | null>;
  /** Per group: from the fault's start until it committed the backlog. */
  caughtUpMs: Record<string, number | null>;
  /** The fault itself failed (e.g. a restart that never became ready). */
  error?: string;
  /** Cluster form: the failover time the fault measured. */
  failover?: Failover;
}

/**
 * Runs a fault and times the recovery from its start: readiness of every process, and the
 * groups' committed offsets against the topics' ends when it began. Polled every 250 ms.
 */
export async function runFault(
  fault: Fault,
  ctx: FaultContext,
  config: Readonly<Config>,
  timeoutMs: number,
): Promise<Recovery> {
  const groups = groupTopics(config);
  const kafka = createKafka(config.kafka, createLogger('silent', 'chaos'), 'chaos-recovery', {
    logLevel: kafkajs.logLevel.NOTHING,
  });
  const ends = await topicEnds(kafka, groups);
  const t0 = Date.now();
  const readyMs: Recovery['readyMs'] = {};
  const caughtUpMs: Recovery['caughtUpMs'] = {};
  let finished = false;
  let error: string | undefined;
  let failover: Failover | undefined;
  const running = fault.run(ctx).then(
    (f) => {
      finished = true;
      if (f) failover = f;
    },
    (err: Error) => {
      finished = true;
      error = err.message;
    },
  );
  let recoveredMs: number | null = null;
  while (Date.now() < t0 + timeoutMs) {
    const names = ctx.product.names;
    const states = await Promise.all(names.map((n) => ctx.product.ready(n)));
    const now = Date.now() - t0;
    names.forEach((name, i) => {
      if (!states[i]) readyMs[name] = null;
      else if (readyMs[name] === null) readyMs[name] = now;
    });
    const behind = await committedBehind(kafka, groups, ends).catch(() => null);
    for (const [g, n] of Object.entries(behind ?? {})) {
      if (n === 0) caughtUpMs[g] ??= now;
    }
    const caughtUp = behind !== null && Object.values(behind).every((n) => n === 0);
    if (finished && states.every(Boolean) && caughtUp) {
      recoveredMs = now;
      break;
    }
    await sleep(250);
  }
  await running;
  for (const g of Object.keys(groups)) caughtUpMs[g] ??= null;
  return {
    recoveredMs,
    readyMs,
    caughtUpMs,
    ...(error ? { error } : {}),
    ...(failover ? { failover } : {}),
  };
}

type Ends = Map<string, Map<number, number>>;

async function topicEnds(kafka: kafkajs.Kafka, groups: GroupTopics): Promise<Ends> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const ends: Ends = new Map();
    for (const t of new Set(Object.values(groups).flat())) {
      const offsets = await admin.fetchTopicOffsets(t);
      ends.set(t, new Map(offsets.map((o) => [o.partition, Number(o.high)])));
    }
    return ends;
  } finally {
    await admin.disconnect();
  }
}

/** Per group, records of `ends` not yet committed (a fresh admin: Kafka may have restarted). */
async function committedBehind(
  kafka: kafkajs.Kafka,
  groups: GroupTopics,
  ends: Ends,
): Promise<Record<string, number>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const out: Record<string, number> = {};
    for (const [group, topics] of Object.entries(groups)) {
      let behind = 0;
      for (const t of await admin.fetchOffsets({ groupId: group, topics })) {
        for (const [partition, end] of ends.get(t.topic) ?? []) {
          const c = Number(t.partitions.find((p) => p.partition === partition)?.offset ?? -1);
          behind += Math.max(0, end - Math.max(0, c));
        }
      }
      out[group] = behind;
    }
    return out;
  } finally {
    await admin.disconnect();
  }
}

/** Whether deploy/local runs `service` from `localDir` (its pid file names a live process). */
export async function stackRuns(localDir: string, service: string): Promise<boolean> {
  const record = await readPidFile(join(localDir, 'run', `${service}.pid`));
  return record !== null && isOurs(record);
}

/** Runs the stack's CLI with this process's environment (its RECSYS_LOCAL_DIR and ports). */
export function stackCli(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(process.cwd(), 'dist/deploy/local/cli.js'), ...args],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`cli ${args.join(' ')} exited ${code}: ${err}`)),
    );
  });
}
