/**
 * A private Redis Cluster for tests: 3 masters with one replica each (`redis-server
 * --cluster-enabled yes` ×6 in a temporary directory, joined by `redis-cli --cluster create
 * --cluster-replicas 1`), with an ACL user and the default user off, on spare ports (each port
 * and its bus port, port + 10000, free). `stop()` ends the six processes this started and removes
 * the directory; call it in teardown (it is safe to call twice, and after a failed start).
 *
 * @example
 *   const cluster = await startRedisCluster();
 *   try { createRedis(cluster.url, 'test'); ... } finally { await cluster.stop(); }
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, type RunResult } from '../harness.js';

export interface RedisClusterProcesses {
  /** Node ports, in creation order (the first three start as masters). */
  ports: number[];
  user: string;
  password: string;
  /** `redis-cluster://user:password@127.0.0.1:<p0>,127.0.0.1:<p1>` */
  url: string;
  /** `redis-cli` with the ACL user against node `port` (`-c`: follows MOVED). */
  cli(args: string[], opts?: { port?: number; follow?: boolean }): Promise<RunResult>;
  /** Port of the master serving `key`'s slot now. */
  masterOf(key: string): Promise<number>;
  /** SIGKILLs the node on `port` (a master's replica then takes over its slots). */
  kill(port: number): Promise<void>;
  /** How long the six nodes took to form the cluster, ms. */
  startMs: number;
  stop(): Promise<void>;
}

/** Whether `port` can be bound on 127.0.0.1 now. */
function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** `count` ports from `from` up whose cluster bus port (+10000) is free too. */
async function sparePorts(from: number, count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let p = from; ports.length < count && p < 22000; p++) {
    if ((await free(p)) && (await free(p + 10000))) ports.push(p);
  }
  if (ports.length < count) throw new Error(`no ${count} spare ports from ${from}`);
  return ports;
}

export async function startRedisCluster(
  opts: { fromPort?: number; nodeTimeoutMs?: number } = {},
): Promise<RedisClusterProcesses> {
  const t0 = Date.now();
  const user = 'app';
  const password = `pw-${process.pid}-${Date.now()}`;
  const dir = await mkdtemp(join(tmpdir(), 'recsys-redis-cluster-'));
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(
      children.splice(0).map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
            child.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            child.kill('SIGTERM');
          }),
      ),
    );
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const ports = await sparePorts(opts.fromPort ?? 21000, 6);
    const byPort = new Map<number, ChildProcess>();
    for (const port of ports) {
      const child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--dbfilename',
          `dump-${port}.rdb`,
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout',
          String(opts.nodeTimeoutMs ?? 2000),
          // Replicas sync at once (the default waits 5 s for more replicas to share the transfer).
          '--repl-diskless-sync-delay',
          '0',
          '--appendonly',
          'no',
          '--save',
          '',
          '--daemonize',
          'no',
          '--logfile',
          join(dir, `redis-${port}.log`),
          // The default user off: every client must log in as the ACL user (the URL's).
          '--user',
          'default',
          'off',
          '--user',
          user,
          'on',
          `>${password}`,
          '~*',
          '&*',
          '+@all',
          '--masteruser',
          user,
          '--masterauth',
          password,
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      children.push(child);
      byPort.set(port, child);
    }
    // The first node still running (a test may have killed some).
    const live = (): number =>
      ports.find((p) => {
        const child = byPort.get(p);
        return child !== undefined && child.exitCode === null && child.signalCode === null;
      }) ?? (ports[0] as number);
    const auth = ['--user', user, '--pass', password, '--no-auth-warning'];
    const cli = (args: string[], o: { port?: number; follow?: boolean } = {}) =>
      run('redis-cli', [
        ...(o.follow === false ? [] : ['-c']),
        '-p',
        String(o.port ?? live()),
        ...auth,
        ...args,
      ]);
    for (const port of ports) {
      for (let i = 0; ; i++) {
        if ((await cli(['PING'], { port })).stdout.includes('PONG')) break;
        if (i > 100) throw new Error(`redis-server on ${port} did not answer`);
        await sleep(50);
      }
    }
    const created = await run(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...ports.map((p) => `127.0.0.1:${p}`),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
        ...auth,
      ],
      { timeoutMs: 60_000 },
    );
    if (created.code !== 0)
      throw new Error(`cluster create failed: ${created.stdout}${created.stderr}`);
    // Ready when every node says the cluster is ok and knows its 6 nodes, and every replica has
    // its master's data (a replica that never synced would not take over).
    for (let i = 0; ; i++) {
      const states = await Promise.all(
        ports.map((port) => cli(['INFO', 'all'], { port, follow: false })),
      );
      const infos = await Promise.all(ports.map((port) => cli(['CLUSTER', 'INFO'], { port })));
      const clusterOk = infos.every(
        (s) => /cluster_state:ok/.test(s.stdout) && /cluster_known_nodes:6/.test(s.stdout),
      );
      const replicas = states.filter((s) => /role:slave/.test(s.stdout));
      const synced =
        replicas.length === 3 && replicas.every((s) => /master_link_status:up/.test(s.stdout));
      if (clusterOk && synced) break;
      if (i > 300) throw new Error('cluster did not become ok with 3 synced replicas');
      await sleep(100);
    }
    const masterOf = async (key: string): Promise<number> => {
      const slot = Number((await cli(['CLUSTER', 'KEYSLOT', key])).stdout.trim());
      // CLUSTER NODES: `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>...`
      for (const line of (await cli(['CLUSTER', 'NODES'])).stdout.trim().split('\n')) {
        const f = line.split(' ');
        if (!/master/.test(f[2] ?? '') || /fail/.test(f[2] ?? '')) continue;
        for (const range of f.slice(8)) {
          const [lo, hi = lo] = range.split('-').map(Number);
          if (slot >= (lo as number) && slot <= (hi as number))
            return Number(/:(\d+)@/.exec(f[1] ?? '')?.[1]);
        }
      }
      throw new Error(`no master for slot ${slot}`);
    };
    const url = `redis-cluster://${user}:${password}@127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}`;
    const kill = async (port: number): Promise<void> => {
      const child = byPort.get(port);
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    };
    const startMs = Date.now() - t0;
    return { ports, user, password, url, cli, masterOf, kill, startMs, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
