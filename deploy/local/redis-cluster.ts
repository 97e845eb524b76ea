/**
 * The cluster profile's Redis (`profile.ts`): 6 `redis-server` processes with cluster-enabled on
 * RECSYS_CLUSTER_REDIS_PORT + 0..5 (each one's cluster bus on its port + 10000), formed once into
 * 3 masters with one replica each by `redis-cli --cluster create --cluster-replicas 1`. The
 * nodes keep their view of the cluster in `nodes.conf` beside their data, so a restart rejoins
 * the same cluster; `ensureRedisCluster` is idempotent: it creates only 6 empty nodes, waits for
 * a formed cluster to settle, and refuses anything in between, saying what it found.
 */
import { mkdir } from 'node:fs/promises';
import { sleep } from '../../core/index.js';
import { sh } from './install.js';
import { CLUSTER_HOST } from './kafka-cluster.js';
import {
  dataDir,
  redisStorageArgs,
  REDIS_NODE_NAMES,
  type RedisNodeName,
  type ServiceDef,
  type StackContext,
} from './service-def.js';

/** Every node's host:port, in node order. */
export function redisNodes(ctx: Pick<StackContext, 'config'>): string[] {
  return REDIS_NODE_NAMES.map((_, i) => `${CLUSTER_HOST}:${ctx.config.local.clusterRedisPort + i}`);
}

/** The seed list a cluster client starts from (RECSYS_REDIS_URL of the cluster profile). */
export function redisClusterUrl(ctx: Pick<StackContext, 'config'>): string {
  return `redis-cluster://${redisNodes(ctx).join(',')}`;
}

const cli = (port: number, ...args: string[]): Promise<string> =>
  sh('redis-cli', ['-h', CLUSTER_HOST, '-p', String(port), ...args]);

function redisNode(i: number): ServiceDef {
  const name = REDIS_NODE_NAMES[i] as RedisNodeName;
  const port = (ctx: StackContext): number => ctx.config.local.clusterRedisPort + i;
  return {
    name,
    memory: 'maxmemory 256mb',
    port,
    async install() {
      // Debian package, see ensureDebianPackages.
    },
    async prepare(ctx) {
      const dir = dataDir(ctx, name);
      await mkdir(dir, { recursive: true });
      return {
        command: 'redis-server',
        // The same settings as the single Redis (services.ts), a quarter of its memory each.
        args: [
          '--bind',
          CLUSTER_HOST,
          '--port',
          String(port(ctx)),
          '--dir',
          dir,
          '--daemonize',
          'no',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          'nodes.conf',
          // A master unreachable this long is failed over to its replica.
          '--cluster-node-timeout',
          '5000',
          ...redisStorageArgs('256mb'),
        ],
        marker: 'redis-server',
      };
    },
    async probe(ctx) {
      return (await cli(port(ctx), 'PING')).trim() === 'PONG';
    },
  };
}

export const REDIS_NODES = Object.fromEntries(
  REDIS_NODE_NAMES.map((name, i) => [name, redisNode(i)]),
) as Readonly<Record<RedisNodeName, ServiceDef>>;

export interface RedisClusterState {
  /** cluster_state of the first node: ok or fail. */
  state: string;
  knownNodes: number;
  masters: number;
  replicas: number;
  slotsAssigned: number;
}

function infoField(info: string, field: string): string {
  return new RegExp(`^${field}:(\\S+)`, 'm').exec(info)?.[1] ?? '';
}

/** What the first node (and its CLUSTER NODES) says of the cluster. */
export async function redisClusterState(ctx: StackContext): Promise<RedisClusterState> {
  const port = ctx.config.local.clusterRedisPort;
  const info = await cli(port, 'CLUSTER', 'INFO');
  const nodes = (await cli(port, 'CLUSTER', 'NODES')).split('\n').filter(Boolean);
  // A line: <id> <ip:port@bus> <flags> <master id> ...; flags hold master or slave (and fail).
  const alive = nodes.map((l) => l.split(' ')[2] ?? '').filter((f) => !/fail|handshake/.test(f));
  return {
    state: infoField(info, 'cluster_state'),
    knownNodes: Number(infoField(info, 'cluster_known_nodes')),
    masters: alive.filter((f) => f.split(',').includes('master')).length,
    replicas: alive.filter((f) => f.split(',').includes('slave')).length,
    slotsAssigned: Number(infoField(info, 'cluster_slots_assigned')),
  };
}

const settled = (s: RedisClusterState): boolean =>
  s.state === 'ok' && s.knownNodes === 6 && s.masters === 3 && s.replicas === 3;

export const describeRedisCluster = (s: RedisClusterState): string =>
  `cluster_state ${s.state}, ${s.knownNodes} nodes known, ${s.masters} masters, ` +
  `${s.replicas} replicas, ${s.slotsAssigned} of 16384 slots`;

/**
 * Forms the cluster when all six nodes are new and empty, otherwise waits until the cluster the
 * nodes already form is settled (3 masters and 3 replicas, all slots served). Returns what it did.
 */
export async function ensureRedisCluster(ctx: StackContext): Promise<'created' | 'formed'> {
  const ports = redisNodes(ctx).map((_, i) => ctx.config.local.clusterRedisPort + i);
  const infos = await Promise.all(ports.map((p) => cli(p, 'CLUSTER', 'INFO')));
  const fresh = infos.every(
    (i) =>
      infoField(i, 'cluster_known_nodes') === '1' && infoField(i, 'cluster_slots_assigned') === '0',
  );
  let outcome: 'created' | 'formed' = 'formed';
  if (fresh) {
    ctx.log.info({ nodes: redisNodes(ctx) }, 'redis: forming the cluster (3 masters, 3 replicas)');
    await sh('redis-cli', [
      '--cluster',
      'create',
      ...redisNodes(ctx),
      '--cluster-replicas',
      '1',
      '--cluster-yes',
    ]);
    outcome = 'created';
  } else if (infos.some((i) => infoField(i, 'cluster_known_nodes') === '1')) {
    const lone = ports.filter(
      (_, k) => infoField(infos[k] as string, 'cluster_known_nodes') === '1',
    );
    throw new Error(
      `Redis nodes on ports ${lone.join(', ')} are not in the cluster the others form; ` +
        `stop the cluster profile and remove ${dataDir(ctx, 'redis-1').replace(/-1$/, '-*')} to start afresh`,
    );
  }
  // Replicas attach and the gossip converges within seconds of `create` or a restart.
  const deadline = Date.now() + ctx.config.local.startTimeoutMs;
  for (;;) {
    const s = await redisClusterState(ctx);
    if (settled(s)) return outcome;
    if (Date.now() > deadline)
      throw new Error(`the Redis Cluster did not settle: ${describeRedisCluster(s)}`);
    await sleep(250);
  }
}
