/** The trending settings as `loadConfig` (`config.ts`) reads them. */
import { ConfigError } from './errors.js';
import type { Reader } from './config-reader.js';
import { parseRedisUrl } from './redis-url.js';

/** Trending shards on a Redis Cluster when RECSYS_TRENDING_SHARDS is unset: 16 slots to spread. */
export const CLUSTER_TRENDING_SHARDS = 16;

export interface TrendingConfig {
  windowsSec: number[];
  buckets: number;
  /** Hash slots the trending sets spread over (`store/trending.ts`); 1 keeps them in `{trend}`. */
  shards: number;
}

export function trendingSettings(r: Reader): TrendingConfig {
  const { str, int, list } = r;
  const shards = int('RECSYS_TRENDING_SHARDS', 0, 1024);
  return {
    windowsSec: list('RECSYS_TRENDING_WINDOWS_S').map((w) => {
      const n = Number(w);
      if (!Number.isInteger(n) || n < 60) {
        throw new ConfigError('RECSYS_TRENDING_WINDOWS_S', `expected seconds >= 60, got "${w}"`);
      }
      return n;
    }),
    buckets: int('RECSYS_TRENDING_BUCKETS', 1, 10_000),
    // 0: by the Redis form (RECSYS_REDIS_URL, checked in config.ts): one slot on one node,
    // spread on a cluster.
    shards:
      shards > 0
        ? shards
        : parseRedisUrl(str('RECSYS_REDIS_URL')).cluster
          ? CLUSTER_TRENDING_SHARDS
          : 1,
  };
}
