/**
 * Redis as the benchmarks use it, through the product's one factory (`store/redis.ts`), so each
 * bench runs against one Redis or a Redis Cluster (`RECSYS_REDIS_URL=redis-cluster://...`) alike.
 * What a bench does beyond the product's stores is here: its own database, emptying it, used
 * memory, and hearing the feature-change signal.
 *
 * Isolation: on one Redis a bench takes a database of its own (`/7` and the like) and empties it.
 * A Redis Cluster has database 0 only, so a bench that empties its database empties the whole
 * cluster: it does so only with BENCH_REDIS_CLUSTER_FLUSH=1 (a cluster of its own, like the
 * cluster profile started for the bench), and refuses otherwise.
 *
 * @example
 *   const redis = benchRedis(benchRedisUrl(base.redis.url, 7), 'bench-serve');
 *   await emptyBenchDatabase(redis);
 */
import { parseRedisUrl } from '../core/index.js';
import { subscribeFeatureChanges, watchUserChanges } from '../store/changes.js';
import { createRedis, isCluster, type Redis, type RedisClient } from '../store/redis.js';

export type { RedisClient };

/** `url` on database `db` for one Redis; a cluster's URL as it is (database 0 only). */
export function benchRedisUrl(url: string, db: number): string {
  if (parseRedisUrl(url).cluster) return url;
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString().replace(/\/$/, '');
}

/**
 * A bench connection from the product's factory (one node or a cluster). With `subscriber`, one
 * that may listen to the sharded change signal of a cluster ({@link onFeatureChanges}). Errors
 * are left to the commands (a restarted Redis in the fault matrix is no crash).
 */
export function benchRedis(url: string, name: string, subscriber = false): RedisClient {
  const redis = createRedis(url, name, { shardedSubscriber: subscriber });
  redis.on('error', () => undefined);
  return redis;
}

/** The masters of a cluster, or the one node: where INFO, FLUSHDB and SCAN must go. */
function masters(redis: RedisClient): Redis[] {
  return isCluster(redis) ? redis.nodes('master') : [redis];
}

/** Resolves once `redis` answers (a cluster client has learned its slots). */
export async function redisReady(redis: RedisClient): Promise<void> {
  await redis.ping();
}

/** Whether emptying a Redis Cluster's only database is allowed (BENCH_REDIS_CLUSTER_FLUSH=1). */
export const clusterFlushAllowed = (): boolean => process.env.BENCH_REDIS_CLUSTER_FLUSH === '1';

/**
 * FLUSHDB of the bench's database: on one Redis its own (never 0, the caller's choice); on a
 * cluster every master's database 0, only with BENCH_REDIS_CLUSTER_FLUSH=1.
 */
export async function emptyBenchDatabase(redis: RedisClient): Promise<void> {
  if (isCluster(redis) && !clusterFlushAllowed()) {
    throw new Error(
      'this bench empties its Redis database, and a Redis Cluster has only database 0: ' +
        'point it at a cluster of its own and set BENCH_REDIS_CLUSTER_FLUSH=1',
    );
  }
  await redisReady(redis);
  await Promise.all(masters(redis).map((node) => node.flushdb()));
}

/** INFO memory's used_memory, summed over a cluster's masters (replicas hold copies). */
export async function usedMemoryBytes(redis: RedisClient): Promise<number> {
  await redisReady(redis);
  const infos = await Promise.all(masters(redis).map((node) => node.info('memory')));
  return infos.reduce((sum, info) => sum + Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0), 0);
}

/**
 * CPU seconds the Redis server(s) spent so far (INFO cpu of every master, without forked
 * children such as saves): a delta over a phase is Redis's share of the work, whatever else runs.
 */
export async function redisCpuSec(redis: RedisClient): Promise<number> {
  await redisReady(redis);
  const infos = await Promise.all(masters(redis).map((node) => node.info('cpu')));
  const field = (info: string, name: string): number =>
    Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return infos.reduce((sum, i) => sum + field(i, 'used_cpu_sys') + field(i, 'used_cpu_user'), 0);
}

// MEMORY USAGE names its key after a subcommand, which ioredis' Cluster cannot route (it sends
// the command to any node, which answers MOVED); a script's key is routed to its slot. Defined as
// a command: auto-pipelining groups a plain EVAL by its first argument, the script text.
const MEMORY_USAGE = "return redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', '0')";
type WithMemoryUsage = RedisClient & { benchMemoryUsage?(key: string): Promise<number | null> };

/** MEMORY USAGE of `key` (every element counted), 0 for a missing key; on any node. */
export async function memoryUsageBytes(redis: RedisClient, key: string): Promise<number> {
  const r = redis as WithMemoryUsage;
  if (!r.benchMemoryUsage)
    r.defineCommand('benchMemoryUsage', { numberOfKeys: 1, lua: MEMORY_USAGE });
  return Number((await r.benchMemoryUsage?.(key)) ?? 0);
}

/** Hears feature changes of some users; `add` a user before its events are sent. */
export interface FeatureChangeListener {
  add(userId: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Calls `onChange(userId)` when the features role applied events of a user: the one channel on
 * one Redis (every user), the user's sharded channel on a cluster (users given to `add`).
 * `subscriber` is a connection of its own ({@link benchRedis} with `subscriber`).
 */
export async function onFeatureChanges(
  subscriber: RedisClient,
  onChange: (userId: string) => void,
): Promise<FeatureChangeListener> {
  if (isCluster(subscriber)) {
    const watch = watchUserChanges(subscriber, onChange);
    return { add: (userId) => watch.add(userId), stop: () => watch.stop() };
  }
  const stop = await subscribeFeatureChanges(subscriber, onChange);
  return { add: async () => undefined, stop };
}
