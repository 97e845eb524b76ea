/**
 * The Redis connection every stream and serving process uses, its health check and memory: one
 * node (`Redis`) or a Redis Cluster (`Cluster`), by the form of RECSYS_REDIS_URL
 * (`core/redis-url.ts`). Stores take either ({@link RedisClient}); what differs is here:
 * pipelines ({@link openPipeline}), key scans ({@link scanKeys}), and which change signal is used
 * (`store/changes.ts`).
 */
import { Cluster, Redis, type ChainableCommander } from 'ioredis';
import { Gauge } from 'prom-client';
import {
  DependencyUnavailableError,
  parseRedisUrl,
  REDIS_CLIENT_DOWN,
  type RedisClusterTarget,
  type Registry,
  withTimeout,
} from '../core/index.js';

export type { Cluster, Redis };

/** A connection to one Redis node or to a Redis Cluster. */
export type RedisClient = Redis | Cluster;

/** Whether `redis` is a Redis Cluster client. */
export function isCluster(redis: RedisClient): redis is Cluster {
  return (redis as { isCluster?: boolean }).isCluster === true;
}

// Capped, growing reconnect delay; ioredis reconnects for as long as the process lives.
const reconnectDelay = (times: number): number => Math.min(100 * 2 ** Math.min(times, 6), 5000);

/**
 * A Redis connection. With `coalesceWrites`, the commands issued in one turn of the event loop
 * leave in one write: the socket is corked at the first and uncorked by `setImmediate`, so a
 * server whose concurrent requests each issue a few commands makes one system call (and Redis
 * one read) per turn instead of one per command.
 *
 * This replaces ioredis' `enableAutoPipelining`, whose per-turn `Pipeline` objects outlived
 * young-generation collections and cost more client CPU per request (bench/README.md).
 */
export function createRedis(
  url: string,
  name: string,
  options: { coalesceWrites?: boolean; shardedSubscriber?: boolean } = {},
): RedisClient {
  const target = parseRedisUrl(url);
  if (target.cluster)
    return createCluster(target.cluster, name, options.shardedSubscriber ?? false);
  const redis = new Redis(url, {
    connectionName: name,
    // Commands wait while reconnecting instead of failing at once, but not forever.
    maxRetriesPerRequest: 3,
    enableOfflineQueue: true,
    connectTimeout: 2000,
    retryStrategy: reconnectDelay,
    lazyConnect: false,
  });
  if (options.coalesceWrites) coalesceWrites(redis);
  return redis;
}

/** How often a Cluster client reads the slot map again (`CLUSTER SLOTS` on one node), ms. */
export const SLOTS_REFRESH_MS = 1000;

/**
 * A Redis Cluster client over the seed nodes. Commands go to the master of their key's slot
 * (MOVED/ASK followed, the slot map refreshed on failover). Auto-pipelining is on: the commands
 * of one turn of the event loop go to each node in one write, which is what `coalesceWrites` does
 * on one node, and what {@link openPipeline} relies on. With `sharded` (the connection of the
 * live feed's change signal) it keeps one subscriber connection per master, so SSUBSCRIBE reaches
 * the node of each channel's slot (`store/changes.ts`); other connections do not open them.
 */
function createCluster(target: RedisClusterTarget, name: string, sharded: boolean): Cluster {
  return new Cluster(target.nodes, {
    enableAutoPipelining: true,
    shardedSubscribers: sharded,
    enableOfflineQueue: true,
    clusterRetryStrategy: reconnectDelay,
    // A failover takes some seconds (the replica waits cluster-node-timeout): commands retry
    // MOVED/TRYAGAIN/CLUSTERDOWN this many times, 100 ms apart, before they fail.
    maxRedirections: 50,
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    // The slot map is read again every SLOTS_REFRESH_MS besides on a followed MOVED: ioredis
    // follows a MOVED only when every command of an auto-pipeline got the same one, and the
    // commands of one turn for several slots of a master that became a replica each get their
    // own, which reach the caller without refreshing the map. The catalog role failed that way
    // for minutes in the cluster fault matrix (test/integration/cluster/redis-slot-map.test.ts).
    slotsRefreshInterval: SLOTS_REFRESH_MS,
    redisOptions: {
      connectionName: name,
      maxRetriesPerRequest: 3,
      connectTimeout: 2000,
      ...(target.username ? { username: target.username } : {}),
      ...(target.password ? { password: target.password } : {}),
      ...(target.tls ? { tls: {} } : {}),
    },
  });
}

/**
 * A pipeline over `redis`. On one node it is ioredis' pipeline: one write, replies in order.
 * A Redis Cluster pipeline must keep to one node (ioredis rejects any other), and ours span users
 * and items on every node; there each command is sent at once and auto-pipelining writes the
 * commands of the turn to each node together. `exec` gives `[error, reply]` in call order either
 * way; a command whose keys span slots fails alone (CROSSSLOT), as it would in a transaction.
 */
export function openPipeline(redis: RedisClient): ChainableCommander {
  if (!isCluster(redis)) return redis.pipeline();
  const replies: Promise<[Error | null, unknown]>[] = [];
  const target = redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const batch: ChainableCommander = new Proxy({} as ChainableCommander, {
    get(_, prop) {
      if (prop === 'exec') return () => Promise.all(replies.splice(0));
      if (prop === 'length') return replies.length;
      if (prop === 'then') return undefined;
      const command = target[prop as string];
      if (typeof command !== 'function') return undefined;
      return (...args: unknown[]) => {
        replies.push(
          command.apply(redis, args).then(
            (reply) => [null, reply],
            (err: Error) => [err, null],
          ),
        );
        return batch;
      };
    },
  });
  return batch;
}

/**
 * Keys matching `match` (a SCAN pattern, all keys when null), `count` per SCAN, handed to `each`
 * batch by batch until it returns false. A cluster is scanned master by master: SCAN on the
 * cluster client would read one node only.
 */
export async function scanKeys(
  redis: RedisClient,
  match: string | null,
  count: number,
  each: (keys: string[]) => Promise<boolean | void> | boolean | void,
): Promise<void> {
  // A cluster client knows its masters once it has loaded the slot map: before that (just
  // made) `nodes('master')` is empty, and the scan would find nothing.
  if (isCluster(redis) && redis.status !== 'ready') await redis.ping();
  const nodes: Redis[] = isCluster(redis) ? redis.nodes('master') : [redis];
  const args: (string | number)[] = match === null ? [] : ['MATCH', match];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, ...(args as ['MATCH', string]), 'COUNT', count);
      cursor = next;
      if ((await each(keys)) === false) return;
    } while (cursor !== '0');
  }
}

/**
 * Corks the connection's socket at the first command written in a turn of the event loop and
 * uncorks it in the check phase, after the turn's I/O callbacks, so their commands go out in
 * one write. Only commands written to the live connection are corked (not those given their
 * own stream, nor those queued while offline); a socket replaced meanwhile is uncorked all the
 * same.
 */
function coalesceWrites(redis: Redis): void {
  const send = redis.sendCommand.bind(redis);
  let corked: Redis['stream'] | null = null;
  const uncork = (): void => {
    const stream = corked;
    corked = null;
    stream?.uncork();
  };
  redis.sendCommand = (command, stream) => {
    if (corked === null && stream === undefined && redis.status === 'ready') {
      corked = redis.stream;
      corked.cork();
      setImmediate(uncork);
    }
    return send(command, stream);
  };
}

// Socket-level failures of the connection (Node's error codes), as ioredis passes them on.
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * Whether `err` says Redis could not be reached (as opposed to a command Redis refused, which
 * is a bug): ioredis gives up on a command after `maxRetriesPerRequest` reconnects, rejects
 * commands of a closed connection, or passes on the socket's error.
 */
export function isRedisUnavailable(err: unknown): boolean {
  if (err instanceof DependencyUnavailableError) return err.dependency === 'redis';
  if (!(err instanceof Error)) return false;
  if (err.name === 'MaxRetriesPerRequestError' || err.name === 'ClusterAllFailedError') return true;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
  if (/^(CLUSTERDOWN|TRYAGAIN|MASTERDOWN) /.test(err.message)) return true;
  return REDIS_CLIENT_DOWN.test(err.message);
}

export async function redisHealth(redis: RedisClient, timeoutMs: number): Promise<void> {
  if (redis.status !== 'ready') {
    throw new DependencyUnavailableError('redis', `connection is ${redis.status}`);
  }
  try {
    const pong = await withTimeout(
      redis.ping(),
      timeoutMs,
      () => new Error(`no PONG within ${timeoutMs} ms`),
    );
    if (pong !== 'PONG') throw new Error(`unexpected PING reply ${pong}`);
  } catch (err) {
    throw new DependencyUnavailableError('redis', (err as Error).message, { cause: err });
  }
}

/**
 * `recsys_redis_used_memory_bytes` and `recsys_redis_maxmemory_bytes` from `INFO memory`, read
 * when Prometheus scrapes (one small command per scrape): the Redis memory the dashboards show,
 * without a separate exporter. Registered once per registry; a failed read leaves no sample.
 */
export function redisMemoryMetrics(redis: RedisClient, registry: Registry): void {
  if (registry.getSingleMetric('recsys_redis_used_memory_bytes')) return;
  let info: Promise<Record<string, number>> | null = null;
  // A cluster's figures are its masters' summed (replicas hold copies of the same data).
  const nodes = (): Redis[] => (isCluster(redis) ? redis.nodes('master') : [redis]);
  // Both gauges collect in one scrape: one INFO (per master) for both.
  const read = (): Promise<Record<string, number>> => {
    info ??= Promise.all(nodes().map((node) => node.info('memory')))
      .then((texts) => {
        const out: Record<string, number> = {};
        for (const text of texts) {
          for (const m of text.matchAll(/^(used_memory|maxmemory):(\d+)/gm))
            out[m[1] as string] = (out[m[1] as string] ?? 0) + Number(m[2]);
        }
        return out;
      })
      .catch(() => ({}))
      .finally(() => setImmediate(() => (info = null)));
    return info;
  };
  for (const [name, field, help] of [
    [
      'recsys_redis_used_memory_bytes',
      'used_memory',
      'memory Redis uses (INFO memory used_memory)',
    ],
    ['recsys_redis_maxmemory_bytes', 'maxmemory', 'Redis maxmemory (0 = no limit)'],
  ] as const) {
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        const value = (await read())[field];
        if (value === undefined) this.reset();
        else this.set(value);
      },
    });
  }
}
