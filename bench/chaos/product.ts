/**
 * The product as the fault matrix runs it, on a {@link ReplayStack} (its own topics, groups,
 * Redis database, data streams, lake, MQTT share group and bridge client id): every stream role
 * in a process of its own (`node dist/stream/main.js <role>`, so one role can be killed alone)
 * and the feed server with several workers, each on a free loopback port, their output in
 * `<logDir>/<name>.log`. What a fault needs: SIGKILL a process (serving: the primary and its
 * workers, as a crash of the whole server), kill one serving worker, start a process again on
 * its port, and probe readiness the way a load balancer would (fresh connections, so every
 * serving worker is asked).
 *
 * @example
 *   const product = new ChaosProduct(stack, logDir, { servingWorkers: 2 });
 *   await product.startAll();
 *   product.kill('features');
 *   await product.start('features');
 */
import type { ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { sleep } from '../../core/index.js';
import { createServer } from 'node:net';
import { startReady, stopProcess } from '../processes.js';
import type { ReplayStack } from '../replay/stack.js';

/** Every stream role of `stream/main.ts`, each its own process here. */
export const STREAM_ROLES = [
  'ingest',
  'features',
  'catalog',
  'indexer',
  'lake',
  'impressions',
  'attribution',
] as const;
export type StreamRoleName = (typeof STREAM_ROLES)[number];
export type ProcessName = StreamRoleName | 'serving';
export const PROCESS_NAMES: readonly ProcessName[] = [...STREAM_ROLES, 'serving'];

interface Proc {
  /** The process's name: its role, or `<role>-<n>` with several instances of each. */
  name: string;
  role: ProcessName;
  /** Started and ready, and not killed since: what a load balancer would send requests to. */
  up: boolean;
  script: string;
  args: string[];
  /** Variables of this process over the stack's (a bridge's own MQTT client id). */
  env: Record<string, string>;
  port: number;
  child: ChildProcess | null;
  fd: number;
}

export interface ChaosProductOptions {
  /** Feed server workers (RECSYS_SERVING_WORKERS). @default 2 */
  servingWorkers?: number;
  /** How long a start may take before it counts as failed, ms. @default 180000 */
  startTimeoutMs?: number;
  /**
   * Processes of each role (the cluster form: 2). With more than one, each is named
   * `<role>-<n>`, each bridge has an MQTT client id of its own in the one share group, and
   * {@link ChaosProduct.port} of a role balances over its live instances. @default 1
   */
  instances?: number;
}

/** One GET on a fresh connection (no keep-alive): its status, or 0 when it failed. */
export function probe(port: number, path: string, timeoutMs = 2000): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port, path, agent: false, timeout: timeoutMs },
      (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
        res.once('error', () => resolve(0));
      },
    );
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(0));
    req.end();
  });
}

export class ChaosProduct {
  readonly #procs = new Map<string, Proc>();
  readonly workers: number;
  readonly instances: number;
  /** Every process by name, roles in {@link PROCESS_NAMES} order. */
  readonly names: readonly string[];
  #turn = 0;
  readonly #startTimeoutMs: number;
  /** Set by the clean-up: a start still retrying gives up, a child spawned late is killed. */
  #closed = false;

  constructor(
    readonly stack: ReplayStack,
    readonly logDir: string,
    options: ChaosProductOptions = {},
  ) {
    this.workers = options.servingWorkers ?? 2;
    this.#startTimeoutMs = options.startTimeoutMs ?? 180_000;
    this.instances = Math.max(1, options.instances ?? 1);
    this.names = PROCESS_NAMES.flatMap((role) => this.#namesOf(role));
    stack.cleanup.add('product processes', async () => {
      this.#closed = true;
      await Promise.all([...this.#procs.values()].map((p) => this.#stop(p)));
      for (const p of this.#procs.values()) closeSync(p.fd);
      for (const id of this.bridgeClientIds()) await stack.discardBridgeSession(id);
    });
  }

  #namesOf(role: ProcessName): string[] {
    if (this.instances === 1) return [role];
    return Array.from({ length: this.instances }, (_, i) => `${role}-${i + 1}`);
  }

  /** The processes of a role, by name. */
  instancesOf(role: ProcessName): string[] {
    return this.#namesOf(role);
  }

  /** The bridges' MQTT client ids (one share group). */
  bridgeClientIds(): string[] {
    const base = this.stack.env.RECSYS_MQTT_CLIENT_ID as string;
    if (this.instances === 1) return [base];
    return this.#namesOf('ingest').map((_, i) => `${base}-${i + 1}`);
  }

  /**
   * The HTTP port of a process (its `/readyz`; ingest's `POST /v1/events`; serving's feeds). For
   * a role with several instances, the next live one in turn, as a load balancer that drops a
   * backend at its first refused connection and takes it back once it is ready (all of them
   * down: the next in turn, whose refusal the client then sees).
   */
  port(name: string): number {
    const p = this.#procs.get(name);
    if (p) return p.port;
    const procs = this.#namesOf(name as ProcessName).map((n) => this.#proc(n));
    const live = procs.filter((x) => x.up);
    const pool = live.length > 0 ? live : procs;
    return (pool[this.#turn++ % pool.length] as Proc).port;
  }

  /** Every process, on free ports, in parallel; resolves once all are ready. */
  async startAll(): Promise<void> {
    const clientIds = this.bridgeClientIds();
    for (const role of PROCESS_NAMES) {
      for (const [i, name] of this.#namesOf(role).entries()) {
        const serving = role === 'serving';
        this.#procs.set(name, {
          name,
          role,
          up: false,
          script: serving ? 'dist/serving/main.js' : 'dist/stream/main.js',
          args: serving ? [] : [role],
          env: role === 'ingest' ? { RECSYS_MQTT_CLIENT_ID: clientIds[i] as string } : {},
          port: await stablePort(),
          child: null,
          fd: openSync(join(this.logDir, `${name}.log`), 'a'),
        });
      }
    }
    await Promise.all(this.names.map((name) => this.start(name)));
  }

  /**
   * Starts a process (again) on its port and resolves once `/readyz` answers 200. A port still
   * held by a dying process (serving's workers leave a moment after their primary) is retried.
   */
  async start(name: string): Promise<void> {
    const p = this.#proc(name);
    const env: Record<string, string> = {
      ...this.stack.env,
      ...p.env,
      ...(p.role === 'serving' ? { RECSYS_SERVING_WORKERS: String(this.workers) } : {}),
    };
    const deadline = Date.now() + this.#startTimeoutMs;
    for (;;) {
      if (this.#closed) throw new Error(`${name}: not started, the run is being cleaned up`);
      try {
        await startReady(p.script, p.args, env, p.port, {
          timeoutMs: Math.max(1000, deadline - Date.now()),
          outputFd: p.fd,
          onSpawn: (child) => {
            p.child = child;
            child.once('exit', () => (p.up = false));
            if (this.#closed) child.kill('SIGKILL');
          },
        });
        p.up = true;
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        // Exited at once: most likely the port is still taken (RECSYS_PORT_IN_USE).
        await sleep(500);
      }
    }
  }

  /** SIGKILL: the process, and for serving its workers too (a crash of the whole server). */
  async kill(name: string): Promise<void> {
    const p = this.#proc(name);
    p.up = false;
    const pid = p.child?.pid;
    if (!pid || p.child?.exitCode !== null || p.child.signalCode !== null) return;
    const workers = p.role === 'serving' ? await childPids(pid) : [];
    for (const id of [pid, ...workers]) signal(id, 'SIGKILL');
    await waitGone([pid, ...workers], 10_000);
  }

  /** SIGKILLs one serving worker (the primary starts another); returns its pid. */
  async killWorker(): Promise<number> {
    const primary = this.#proc(this.#namesOf('serving')[0] as string).child?.pid;
    if (!primary) throw new Error('serving is not running');
    const workers = await childPids(primary);
    const victim = workers[0];
    if (victim === undefined) throw new Error('serving has no worker to kill');
    signal(victim, 'SIGKILL');
    await waitGone([victim], 10_000);
    return victim;
  }

  /** The serving primary's live workers. */
  async servingWorkers(name = 'serving'): Promise<number[]> {
    const primary = this.#proc(name).child?.pid;
    return primary ? childPids(primary) : [];
  }

  /**
   * Whether a process answers `/readyz` 200. For serving, the kernel hands each connection to
   * any worker, so it asks on `4 × workers` fresh connections and needs every answer to be 200
   * and every worker alive.
   */
  async ready(name: string): Promise<boolean> {
    const p = this.#proc(name);
    if (!p.child || p.child.exitCode !== null || p.child.signalCode !== null) return false;
    if (p.role !== 'serving' || this.workers <= 1) return (await probe(p.port, '/readyz')) === 200;
    if ((await this.servingWorkers(name)).length < this.workers) return false;
    const answers = await Promise.all(
      Array.from({ length: 4 * this.workers }, () => probe(p.port, '/readyz')),
    );
    return answers.every((s) => s === 200);
  }

  #proc(name: string): Proc {
    const p = this.#procs.get(name);
    if (!p) throw new Error(`${name} was never started`);
    return p;
  }

  async #stop(p: Proc): Promise<void> {
    if (p.child) await stopProcess(p.child);
  }
}

/**
 * A free loopback port below Linux's ephemeral range (32768-60999). A process restarted on a
 * port inside that range can find it taken as the local port of some outgoing connection (an
 * Elasticsearch restart on 39200 failed that way in a run), so the ports the faults restart
 * processes on come from 20000-32767, as fixed service ports would.
 */
export async function stablePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_768);
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(20);
}

/** Child pids of a process (Linux: /proc/<pid>/task/<tid>/children of each of its threads). */
export async function childPids(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const out = new Set<number>();
  for (const tid of tasks) {
    const text = await readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => '');
    for (const s of text.split(/\s+/)) if (s) out.add(Number(s));
  }
  return [...out].filter(alive);
}
