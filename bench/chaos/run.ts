/**
 * One fault-matrix run: a private copy of the product on the running backbone (`ReplayStack`:
 * own topics, groups, Redis database, data streams, lake; every stream role its own process,
 * `product.ts`), a catalog, then one phase per fault under a steady mixed load (`load.ts`):
 * `warmMs` of load, the fault, its recovery, `steadyMs` more. Then the load stops, the run
 * waits until every consumer group has committed everything, reads every store and counts per
 * fault (`report.ts`). Everything the run made is removed at the end; the processes' logs stay
 * in `logDir`.
 *
 * @example
 *   const result = await runChaos({ ...CHAOS_DEFAULTS, faults: ['kill bridge'], say: console.log });
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { mintToken } from '../../core/auth.js';
import { sleep } from '../../core/index.js';
import { ReplayStack } from '../replay/stack.js';
import { CatalogDriver } from './catalog.js';
import { CATALOG_SIZE, itemId, Ledger } from './events.js';
import {
  FAULTS,
  groupTopics,
  runFault,
  stackCli,
  stackRuns,
  type Fault,
  type FaultContext,
  type Recovery,
} from './faults.js';
import { CLUSTER_FAULTS } from './cluster-faults.js';
import { ChaosLoad, phaseUsers, type LoadOptions } from './load.js';
import {
  readApplied,
  readCatalogTopic,
  readDlq,
  readEvents,
  readIndexed,
  readLake,
  readPrices,
  waitQuiet,
} from './observe.js';
import { ChaosProduct } from './product.js';
import { computeRows, failures, type Observed, type Row } from './report.js';

export interface ChaosOptions {
  /**
   * `single`: the backbone of the single profile, one process per role. `cluster`: the cluster
   * profile's backbone (RECSYS_KAFKA_BROKERS and RECSYS_REDIS_URL name it), `instances`
   * processes per role, and the faults of `cluster-faults.ts`. @default 'single'
   */
  profile?: 'single' | 'cluster';
  /** Processes per role. @default 1 */
  instances?: number;
  /** Cluster form: how long a killed broker or Redis node stays down, ms. */
  nodeDownMs?: number;
  /** Cluster form: how long a failover may take before the killed part is restarted, ms. */
  failoverTimeoutMs?: number;
  /** Fault names of {@link FAULTS} (cluster: `CLUSTER_FAULTS`), in this order, one phase each. */
  faults: string[];
  rate: number;
  mqttUsers: number;
  httpUsers: number;
  webUsers: number;
  feedRate: number;
  liveSockets: number;
  malformedShare: number;
  duplicateShare: number;
  qos0Share: number;
  warmMs: number;
  steadyMs: number;
  recoveryTimeoutMs: number;
  restartDelayMs: number;
  servingWorkers: number;
  /** Redis database of the run (1..15). */
  db: number;
  /** Where the product processes' output goes. */
  logDir: string;
  /** RECSYS_LOCAL_DIR of the stack, for the backbone faults. */
  localDir: string;
  /** Extra variables of the product's processes (e.g. a short group session timeout). */
  env: Record<string, string>;
  say: (line: string) => void;
  /** Called with the stack and what was read, before the stack is removed (tests check it). */
  inspect?: (stack: ReplayStack, seen: Observed) => Promise<void>;
}

export const CHAOS_DEFAULTS = {
  faults: FAULTS.map((f) => f.name),
  rate: 300,
  mqttUsers: 10,
  httpUsers: 10,
  webUsers: 6,
  feedRate: 20,
  liveSockets: 4,
  malformedShare: 0.05,
  duplicateShare: 0.03,
  qos0Share: 0.1,
  warmMs: 15_000,
  steadyMs: 10_000,
  recoveryTimeoutMs: 240_000,
  restartDelayMs: 1000,
  servingWorkers: 2,
  db: 11,
  env: {},
} as const;

export interface ChaosResult {
  startedAt: string;
  durationS: number;
  options: Omit<ChaosOptions, 'say' | 'inspect'>;
  rows: Row[];
  failures: string[];
  /** Records a group had not committed when the run stopped waiting (empty: all). */
  uncommitted: Record<string, number>;
  /** Backbone services of ours found stopped by someone else (then started again). */
  interference: string[];
  catalog: { acked: number; failed: number };
}

const BACKBONE = ['kafka', 'registry', 'redis', 'mosquitto', 'elasticsearch'];
const CLUSTER_BACKBONE = [
  ...['kafka-1', 'kafka-2', 'kafka-3'],
  ...['redis-1', 'redis-2', 'redis-3', 'redis-4', 'redis-5', 'redis-6'],
  ...['registry', 'mosquitto', 'elasticsearch'],
];

/** The backbone services deploy/local runs from `localDir` (none on a stack that is not ours). */
async function backboneOfOurs(localDir: string, cluster: boolean): Promise<string[]> {
  const names = cluster ? CLUSTER_BACKBONE : BACKBONE;
  const ours = await Promise.all(names.map((s) => stackRuns(localDir, s)));
  return names.filter((_, i) => ours[i]);
}

/**
 * Watches the backbone services of ours while the matrix runs: one that stops without the
 * matrix having stopped it (on a shared machine, another job can stop it) is started again at
 * once, and the run reports it. The matrix's own `down`/`up` go through {@link BackboneWatch.cli}.
 */
class BackboneWatch {
  readonly notes: string[] = [];
  phase = 0;
  readonly #deliberate = new Set<string>();
  #timer: NodeJS.Timeout | null = null;
  #busy = false;

  constructor(
    readonly watched: string[],
    readonly localDir: string,
    readonly say: (line: string) => void,
  ) {}

  start(): void {
    this.#timer = setInterval(() => void this.#check(), 2000);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
  }

  /** A service the matrix stops itself (a SIGKILL): not started again until its `up`. */
  expectDown(service: string): void {
    this.#deliberate.add(service);
  }

  readonly cli = async (args: string[]): Promise<void> => {
    const [command, ...services] = args;
    if (command === 'down') for (const s of services) this.#deliberate.add(s);
    await stackCli(args);
    if (command === 'up') for (const s of services) this.#deliberate.delete(s);
  };

  async #check(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (const service of this.watched) {
        if (this.#deliberate.has(service) || (await stackRuns(this.localDir, service))) continue;
        const note = `${service} stopped during phase ${this.phase}, not by the matrix; started again`;
        this.say(`WARNING: ${note}`);
        this.notes.push(note);
        await stackCli(['up', service]).catch((err: Error) => this.notes.push(err.message));
      }
    } finally {
      this.#busy = false;
    }
  }
}

/**
 * MQTT accounts through the stack's CLI, two at a time. A reload of Mosquitto's password file
 * while another account is being written can miss an account (the CLI then gives up after
 * 10 s); such an account is added again, up to three times.
 */
async function addMqttUsers(stack: ReplayStack, users: string[], password: string): Promise<void> {
  const add = async (u: string): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        await stack.addMqttUser(u, password);
        return;
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  };
  for (let i = 0; i < users.length; i += 2) await Promise.all(users.slice(i, i + 2).map(add));
}

/** Reads every store (`observe.ts`) for {@link computeRows}. */
async function observe(
  stack: ReplayStack,
  ledger: Ledger,
  catalog: CatalogDriver,
): Promise<Observed> {
  const users = [...new Set([...ledger.events.values()].map((e) => e.userId))];
  const items = Array.from({ length: CATALOG_SIZE }, (_, n) => itemId(stack.id, n));
  const unread: string[] = [];
  const tolerant = <T>(what: string, p: Promise<T>): Promise<T | null> =>
    p.catch((err: Error) => {
      unread.push(`${what}: ${err.message}`);
      return null;
    });
  const [kafka, dlq, applied, indexed, lake, lastPrice, prices] = await Promise.all([
    readEvents(stack.config),
    tolerant('the DLQ', readDlq(stack.config)),
    tolerant('Redis', readApplied(stack.redis, users)),
    tolerant('Elasticsearch', readIndexed(stack.config)),
    tolerant('the lake', readLake(stack.config)),
    tolerant('the items topic', readCatalogTopic(stack.config)),
    tolerant('Redis (catalog)', readPrices(stack.redis, items)),
  ]);
  const catalogStale = new Map<number, number>();
  for (const item of lastPrice && prices ? items : []) {
    if (prices?.get(item) === lastPrice?.get(item)) continue;
    const phase = catalog.lastPhase.get(item) ?? 0;
    catalogStale.set(phase, (catalogStale.get(phase) ?? 0) + 1);
  }
  return { kafka, dlq, applied, indexed, lake, catalogStale, unread };
}

function faultsOf(names: string[], cluster: boolean): Fault[] {
  const known = cluster ? CLUSTER_FAULTS : FAULTS;
  return names.map((name) => {
    const f = known.find((x) => x.name === name);
    if (!f)
      throw new Error(`unknown fault "${name}"; known: ${known.map((x) => x.name).join(', ')}`);
    return f;
  });
}

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const t0 = Date.now();
  const cluster = o.profile === 'cluster';
  const faults = faultsOf(o.faults, cluster);
  for (const f of faults) {
    if (f.backbone && !(await stackRuns(o.localDir, f.backbone))) {
      throw new Error(
        `"${f.name}" stops ${f.backbone}, but deploy/local does not run it from ${o.localDir}: ` +
          'backbone faults need a stack of ours (RECSYS_LOCAL_DIR)',
      );
    }
  }
  await mkdir(o.logDir, { recursive: true });
  const stack = await ReplayStack.create({
    db: o.db,
    say: o.say,
    prefix: 'chaos',
    env: {
      // The product's own session expiry: the broker keeps a killed bridge's session.
      RECSYS_MQTT_SESSION_EXPIRY_S: '86400',
      RECSYS_LAKE_ROLL_MS: '5000',
      ...o.env,
    },
  });
  const stopOnSignal = (): void => void stack.cleanup.run().then(() => process.exit(130));
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    const prefix = stack.id;
    const product = new ChaosProduct(stack, o.logDir, {
      servingWorkers: o.servingWorkers,
      instances: o.instances ?? 1,
    });
    const password = randomBytes(12).toString('base64url');
    const loadOptions: LoadOptions = {
      prefix,
      rate: o.rate,
      mqttUsers: o.mqttUsers,
      httpUsers: o.httpUsers,
      webUsers: o.webUsers,
      malformedShare: o.malformedShare,
      duplicateShare: o.duplicateShare,
      qos0Share: o.qos0Share,
      feedRate: o.feedRate,
      liveSockets: o.liveSockets,
      mqttUrl: stack.config.mqtt.url,
      mqttPassword: () => password,
      topicPrefix: stack.config.mqtt.topicPrefix,
      ingestToken: stack.ingestToken,
      ingestPort: () => product.port('ingest'),
      servingPort: () => product.port('serving'),
      token: (u) => mintToken(stack.config.serving, u, 6 * 3600),
    };
    const probeDevice = { userId: `${prefix}-probe`, password };
    const mqttUsers = [
      ...faults.flatMap((_, i) => phaseUsers(loadOptions, i).mqtt),
      ...(cluster ? [probeDevice.userId] : []),
    ];
    o.say(`${mqttUsers.length} MQTT accounts; the product's processes (logs: ${o.logDir}) ...`);
    await Promise.all([addMqttUsers(stack, mqttUsers, password), product.startAll()]);
    const catalog = new CatalogDriver(stack.config, prefix);
    await catalog.start();
    const groups = groupTopics(stack.config);
    const catalogGroup = stack.config.consumer.groups.catalog;
    await waitQuiet(stack.config, { [catalogGroup]: groups[catalogGroup] ?? [] }, 60_000);

    const ledger = new Ledger();
    const load = new ChaosLoad(loadOptions, ledger);
    const recoveries: { phase: number; fault: string; recovery: Recovery | null }[] = [];
    // Only a run that stops backbone services owns the stack enough to start them again; on a
    // shared stack a service can be stopped on purpose by someone else (an outage test).
    const owns = faults.some((f) => f.backbone);
    const watched = owns ? await backboneOfOurs(o.localDir, cluster) : [];
    const watch = new BackboneWatch(watched, o.localDir, o.say);
    watch.start();
    stack.cleanup.add('backbone watch', async () => watch.stop());
    const ctx: FaultContext = {
      product,
      stackCli: (args: string[]) => watch.cli(args),
      restartDelayMs: o.restartDelayMs,
      config: stack.config,
      localDir: o.localDir,
      prefix,
      expectDown: (service) => watch.expectDown(service),
      loadUser: () => load.currentUser(),
      probeDevice,
      openSockets: () => load.openSockets(),
      liveSockets: o.liveSockets,
      nodeDownMs: o.nodeDownMs ?? 15_000,
      failoverTimeoutMs: o.failoverTimeoutMs ?? 90_000,
    };
    for (const [phase, fault] of faults.entries()) {
      watch.phase = phase;
      catalog.phase = phase;
      await load.switchTo(phase);
      await sleep(o.warmMs);
      o.say(`phase ${phase}: ${fault.name} ...`);
      const recovery = await runFault(fault, ctx, stack.config, o.recoveryTimeoutMs);
      const failedOver = recovery.failover
        ? recovery.failover.ms === null
          ? 'NO failover; '
          : `failed over in ${(recovery.failover.ms / 1000).toFixed(1)} s, `
        : '';
      const took =
        failedOver +
        (recovery.recoveredMs === null
          ? 'NOT recovered'
          : `recovered in ${(recovery.recoveredMs / 1000).toFixed(1)} s`);
      o.say(
        `phase ${phase}: ${fault.name}: ${took}${recovery.error ? ` (${recovery.error})` : ''}`,
      );
      recoveries.push({ phase, fault: fault.name, recovery });
      await sleep(o.steadyMs);
    }
    o.say('stopping the load; waiting until every group committed everything ...');
    await load.stop();
    await catalog.stop();
    const uncommitted = await waitQuiet(stack.config, groups, 300_000);

    o.say('reading Kafka, the DLQ, Redis, Elasticsearch and the lake ...');
    const seen = await observe(stack, ledger, catalog);
    const rows = computeRows(recoveries, ledger, load.stats, seen);
    await o.inspect?.(stack, seen);
    const options: Partial<ChaosOptions> = { ...o };
    delete options.say;
    delete options.inspect;
    return {
      startedAt: new Date(t0).toISOString(),
      durationS: Math.round((Date.now() - t0) / 1000),
      options: options as ChaosResult['options'],
      rows,
      failures: failures(rows, seen.unread),
      uncommitted,
      interference: watch.notes,
      catalog: { acked: catalog.acked, failed: catalog.failed },
    };
  } finally {
    process.off('SIGINT', stopOnSignal);
    process.off('SIGTERM', stopOnSignal);
    await stack.cleanup.run();
  }
}
