/**
 * Fixed-rate HTTP load with vegeta (a load tester no one here wrote; built once by
 * `deploy/local`'s `ensureGoTool`), and the CPU each process spent meanwhile.
 *
 * vegeta sends at the requested rate whatever the answers take (open loop: a slow server shows
 * as latency, not as a lower offered rate), each request timed from its send. When all its
 * workers are busy it falls behind the schedule: `sentPerSec` then says what was offered.
 *
 * @example
 *   await writeTargets(file, [{ url, headers: { authorization: 'Bearer …' } }]);
 *   const r = await attack(vegetaPath, file, 2000, 10_000); // r.latencyMs.p99
 */
import { spawn } from 'node:child_process';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';

export interface Target {
  url: string;
  headers?: Readonly<Record<string, string>>;
}

export interface AttackResult {
  rate: number;
  durationMs: number;
  requests: number;
  /** The rate vegeta actually sent at. */
  sentPerSec: number;
  /** Successful (2xx) responses per second. */
  throughputPerSec: number;
  successRatio: number;
  statuses: Record<string, number>;
  latencyMs: { mean: number; p50: number; p90: number; p95: number; p99: number; max: number };
  /**
   * CPU seconds per second of the attack, by process: the server with its workers, vegeta,
   * this process (`bench`), Redis, the other processes named in `options.others` (with their
   * children), and `machine`, all the host's cores busy (from /proc/stat; includes the
   * kernel's networking).
   */
  cpu: Record<string, number>;
  /**
   * CPU seconds per second of each of the server's child processes (its workers), in pid
   * order: the kernel hands connections to workers, not requests, so one may work harder.
   */
  serverWorkers: number[];
}

export async function writeTargets(file: string, targets: readonly Target[]): Promise<void> {
  let text = '';
  for (const t of targets) {
    text += `GET ${t.url}\n`;
    for (const [k, v] of Object.entries(t.headers ?? {})) text += `${k}: ${v}\n`;
    text += '\n';
  }
  await writeFile(file, text);
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    // One OS thread for Go's scheduler: on 2 cores, vegeta's threads otherwise compete with the
    // server's processes for both cores (measured at 2,000/s: p99 20 to 46 ms with 2 threads,
    // 16 to 27 ms with 1); one thread sends well past 5,000 requests/s.
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, GOMAXPROCS: process.env.GOMAXPROCS ?? '1' },
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${err.trim()}`)),
    );
  });
}

/** utime + stime of a process, seconds (0 when it is gone). */
async function cpuSeconds(pid: number | 'self', children = false): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return 0;
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14-17 of stat (utime stime cutime cstime) are at 11-14 after the command name.
  const ticks = children ? Number(f[13]) + Number(f[14]) : Number(f[11]) + Number(f[12]);
  // /proc counts in USER_HZ, 100 on Linux.
  return ticks / 100;
}

/** Pids of the child processes of `pid`. */
export async function childrenOf(pid: number): Promise<number[]> {
  const kids = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  return kids.split(/\s+/).filter(Boolean).map(Number);
}

/** CPU seconds of `pid` and its descendants (the server's cluster workers). */
export async function treeCpu(pid: number): Promise<number> {
  let total = await cpuSeconds(pid);
  for (const k of await childrenOf(pid)) total += await treeCpu(k);
  return total;
}

/** Busy seconds of all cores (user, nice, system, irq, softirq, steal), from /proc/stat. */
async function machineCpu(): Promise<number> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0] as string;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const busy = [0, 1, 2, 5, 6, 7].reduce((sum, i) => sum + (f[i] ?? 0), 0);
  return busy / 100;
}

/** Pids of the processes whose `/proc/<pid>/<file>` text passes `test`, in /proc's order. */
async function pidsWhere(
  file: 'comm' | 'cmdline',
  test: (text: string) => boolean,
): Promise<number[]> {
  const out: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const text = await readFile(`/proc/${p}/${file}`, 'utf8').catch(() => '');
    if (test(text)) out.push(Number(p));
  }
  return out;
}

/** Pids of processes whose command name is `comm`. */
const pidsOf = (comm: string): Promise<number[]> =>
  pidsWhere('comm', (name) => name.trim() === comm);

/** The first process whose command line contains `text` (e.g. the Kafka broker's main class). */
export async function pidOfCommand(text: string): Promise<number | null> {
  const [pid] = await pidsWhere('cmdline', (cmdline) => cmdline.includes(text));
  return pid ?? null;
}

export async function attack(
  vegeta: string,
  targetsFile: string,
  rate: number,
  durationMs: number,
  options: {
    serverPid?: number;
    /** More processes to count, by name (each with its children). */
    others?: Readonly<Record<string, number>>;
    connections?: number;
    maxWorkers?: number;
  } = {},
): Promise<AttackResult> {
  const out = `${targetsFile}.${rate}.bin`;
  const redisPids = await pidsOf('redis-server');
  const sample = async (): Promise<Record<string, number>> => {
    let redis = 0;
    for (const p of redisPids) redis += await cpuSeconds(p);
    const sample: Record<string, number> = {
      server: options.serverPid ? await treeCpu(options.serverPid) : 0,
      // vegeta is this process's child: its CPU lands in our children's total when it exits.
      vegeta: await cpuSeconds('self', true),
      // This process: it shares the cores with the server too (its garbage collections).
      bench: await cpuSeconds('self'),
      redis,
    };
    for (const [name, pid] of Object.entries(options.others ?? {}))
      sample[name] = await treeCpu(pid);
    sample.machine = await machineCpu();
    return sample;
  };
  const workers = options.serverPid ? await childrenOf(options.serverPid) : [];
  const workerCpu = (): Promise<number[]> => Promise.all(workers.map((w) => treeCpu(w)));
  const before = await sample();
  const workersBefore = await workerCpu();
  const t0 = performance.now();
  await run(vegeta, [
    'attack',
    `-targets=${targetsFile}`,
    `-rate=${rate}/s`,
    `-duration=${durationMs}ms`,
    `-connections=${options.connections ?? 64}`,
    `-max-workers=${options.maxWorkers ?? 1024}`,
    // Bodies are read to the end but not kept: only statuses and timings are reported, and
    // writing every body into the results file cost vegeta CPU on the server's two cores
    // (0.39-0.41 cores at 5,000/s with bodies kept, 0.37-0.38 without, 2 rounds each).
    '-max-body=0',
    '-timeout=10s',
    `-output=${out}`,
  ]);
  const seconds = (performance.now() - t0) / 1000;
  const after = await sample();
  const workersAfter = await workerCpu();
  const perSecond = (cpu: number): number => Math.round((cpu / seconds) * 100) / 100;
  const cpu = Object.fromEntries(
    Object.keys(before).map((k) => [k, perSecond((after[k] ?? 0) - (before[k] ?? 0))]),
  );
  const report = JSON.parse(await run(vegeta, ['report', '-type=json', out])) as {
    requests: number;
    rate: number;
    throughput: number;
    success: number;
    status_codes: Record<string, number>;
    latencies: Record<string, number>;
  };
  await rm(out, { force: true });
  const ms = (ns: number | undefined): number => Math.round((ns ?? NaN) / 1e3) / 1e3;
  const l = report.latencies;
  return {
    rate,
    durationMs,
    requests: report.requests,
    sentPerSec: Math.round(report.rate),
    throughputPerSec: Math.round(report.throughput),
    successRatio: report.success,
    statuses: report.status_codes,
    latencyMs: {
      mean: ms(l.mean),
      p50: ms(l['50th']),
      p90: ms(l['90th']),
      p95: ms(l['95th']),
      p99: ms(l['99th']),
      max: ms(l.max),
    },
    cpu,
    serverWorkers: workersAfter.map((c, i) => perSecond(c - (workersBefore[i] ?? 0))),
  };
}
