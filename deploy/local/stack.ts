/**
 * `up`, `down` and `status` over the services in services.ts. `up` installs what is missing,
 * starts what is not running, and waits for every service to answer its readiness probe within
 * a deadline; a failure names the service and shows the tail of its log.
 */
import { rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { RecsysError, sleep } from '../../core/index.js';
import { ensureDebianPackages, javaHome } from './install.js';
import { groupRssBytes, isOurs, readPidFile, spawnDetached, stopGroup, tail } from './process.js';
import { APP } from './app.js';
import { APP_NAMES, type ServiceDef, type ServiceName, type StackContext } from './service-def.js';
import { MONITORING } from './monitoring.js';
import { BACKBONE } from './services.js';
import { KAFKA_NODES } from './kafka-cluster.js';
import { REDIS_NODES } from './redis-cluster.js';

/**
 * Every service `deploy/local` runs: the backbone, monitoring, the product's processes, and the
 * cluster profile's nodes (`profile.ts`).
 */
export const SERVICES: Readonly<Record<ServiceName, ServiceDef>> = {
  ...BACKBONE,
  ...MONITORING,
  ...APP,
  ...KAFKA_NODES,
  ...REDIS_NODES,
};

export class ServiceStartError extends RecsysError {
  readonly service: ServiceName;
  constructor(service: ServiceName, message: string, logTail: string, cause?: unknown) {
    super(
      'RECSYS_LOCAL_START_FAILED',
      `${service}: ${message}\n--- last lines of its log ---\n${logTail}`,
      { cause },
    );
    this.service = service;
  }
}

const paths = (ctx: StackContext, name: ServiceName) => ({
  logFile: join(ctx.localDir, 'logs', `${name}.log`),
  pidFile: join(ctx.localDir, 'run', `${name}.pid`),
});

export interface UpResult {
  name: ServiceName;
  /** started: by this call; running: already ours; external: someone else's, answering. */
  state: 'started' | 'running' | 'external';
  readyMs: number;
}

async function probeOnce(def: ServiceDef, ctx: StackContext): Promise<boolean> {
  try {
    return await def.probe(ctx);
  } catch {
    return false;
  }
}

function portOpen(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(500, () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function up(ctx: StackContext, names: readonly ServiceName[]): Promise<UpResult[]> {
  const t0 = Date.now();
  await ensureDebianPackages(ctx.log);
  await javaHome();
  await Promise.all(
    names.map(async (name) => {
      const t = Date.now();
      await SERVICES[name].install(ctx);
      ctx.log.debug({ service: name, ms: Date.now() - t }, 'installed');
    }),
  );
  ctx.log.info({ ms: Date.now() - t0 }, 'installs ready');
  // When one service fails, the ones this call spawned are stopped again: the caller gets an
  // error, not a half-started stack it has no record of.
  const spawned: ServiceName[] = [];
  const results = await Promise.allSettled(
    names.map((name) => startOne(ctx, SERVICES[name], t0, () => spawned.push(name))),
  );
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) {
    await down(ctx, spawned);
    throw failure.reason;
  }
  return results.map((r) => (r as PromiseFulfilledResult<UpResult>).value);
}

async function startOne(
  ctx: StackContext,
  def: ServiceDef,
  t0: number,
  onSpawned: () => void,
): Promise<UpResult> {
  const { logFile, pidFile } = paths(ctx, def.name);
  const existing = await readPidFile(pidFile);
  let state: UpResult['state'];
  if (existing && isOurs(existing)) {
    state = 'running';
  } else if (await probeOnce(def, ctx)) {
    ctx.log.warn(
      { service: def.name, port: def.port(ctx) },
      'already answering, not started by deploy/local; using it',
    );
    return { name: def.name, state: 'external', readyMs: Date.now() - t0 };
  } else if (await portOpen(def.port(ctx))) {
    throw new ServiceStartError(
      def.name,
      `port ${def.port(ctx)} is taken by another process that is not ${def.name}`,
      await tail(logFile),
    );
  } else {
    let spec;
    try {
      spec = await def.prepare(ctx);
    } catch (err) {
      throw new ServiceStartError(
        def.name,
        `could not be prepared: ${(err as Error).message}`,
        await tail(logFile),
        err,
      );
    }
    const record = await spawnDetached({ ...spec, logFile, pidFile });
    onSpawned();
    ctx.log.info({ service: def.name, pid: record.pid, log: logFile }, 'started');
    state = 'started';
  }
  const deadline = Date.now() + ctx.config.local.startTimeoutMs;
  for (;;) {
    if (await probeOnce(def, ctx)) break;
    const record = await readPidFile(pidFile);
    if (!record || !isOurs(record)) {
      throw new ServiceStartError(def.name, 'exited before it became ready', await tail(logFile));
    }
    if (Date.now() > deadline) {
      throw new ServiceStartError(
        def.name,
        `not ready after ${ctx.config.local.startTimeoutMs} ms`,
        await tail(logFile),
      );
    }
    await sleep(250);
  }
  if (def.afterReady) {
    try {
      await def.afterReady(ctx);
    } catch (err) {
      throw new ServiceStartError(
        def.name,
        `set-up after start failed: ${(err as Error).message}`,
        await tail(logFile),
        err,
      );
    }
  }
  const readyMs = Date.now() - t0;
  ctx.log.info({ service: def.name, readyMs }, 'ready');
  return { name: def.name, state, readyMs };
}

export async function down(ctx: StackContext, names: readonly ServiceName[]): Promise<void> {
  // The product's processes first: they flush and commit while the backbone still answers.
  const app = names.filter((n) => (APP_NAMES as readonly string[]).includes(n));
  await Promise.all(app.map((name) => stopOne(ctx, name)));
  await Promise.all(names.filter((n) => !app.includes(n)).map((name) => stopOne(ctx, name)));
}

async function stopOne(ctx: StackContext, name: ServiceName): Promise<void> {
  const { pidFile } = paths(ctx, name);
  const record = await readPidFile(pidFile);
  if (!record) return;
  if (!isOurs(record)) {
    ctx.log.info({ service: name, pid: record.pid }, 'not running; removing stale pid file');
    await rm(pidFile, { force: true });
    return;
  }
  // Elasticsearch and Kafka flush on SIGTERM; give them time before SIGKILL.
  const outcome = await stopGroup(record, pidFile, 30_000);
  ctx.log.info({ service: name, pid: record.pid, outcome }, 'stopped');
}

/** Those of `names` this stack started and that still run. */
export async function running<N extends ServiceName>(
  ctx: StackContext,
  names: readonly N[],
): Promise<N[]> {
  const alive = await Promise.all(
    names.map(async (name) => {
      const record = await readPidFile(paths(ctx, name).pidFile);
      return record !== null && isOurs(record);
    }),
  );
  return names.filter((_, i) => alive[i]);
}

export interface StatusRow {
  name: ServiceName;
  pid: number | null;
  ours: boolean;
  ready: boolean;
  port: number;
  rssBytes: number;
  memory: string;
}

export async function status(
  ctx: StackContext,
  names: readonly ServiceName[],
): Promise<StatusRow[]> {
  return Promise.all(
    names.map(async (name) => {
      const def = SERVICES[name];
      const record = await readPidFile(paths(ctx, name).pidFile);
      const ours = record !== null && isOurs(record);
      return {
        name,
        pid: ours && record ? record.pid : null,
        ours,
        ready: await probeOnce(def, ctx),
        port: def.port(ctx),
        rssBytes: ours && record ? groupRssBytes(record.pid) : 0,
        memory: def.memory,
      };
    }),
  );
}

export { paths as servicePaths };
