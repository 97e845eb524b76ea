/**
 * `RECSYS_REDIS_URL` in its two forms, parsed once:
 * - one node: `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS), as ioredis
 *   takes it;
 * - a Redis Cluster: `redis-cluster://[user:password@]host1:port1,host2:port2,...` (or
 *   `rediss-cluster://`), the seed nodes the client learns the whole cluster from. One seed is
 *   enough; list several so the client starts while one is down. The ACL user and password apply
 *   to every node. Redis Cluster has database 0 only, so a database number is refused.
 *
 * @example
 *   parseRedisUrl('redis-cluster://app:pw@10.0.0.1:7000,10.0.0.2:7000');
 *   // { url: ..., cluster: { nodes: [{ host: '10.0.0.1', port: 7000 }, ...], username: 'app',
 *   //   password: 'pw', tls: false } }
 */

import { ConfigError } from './errors.js';

export interface RedisClusterTarget {
  /** Seed nodes, in the order given. */
  nodes: { host: string; port: number }[];
  /** ACL user, '' for the default user. */
  username: string;
  /** '' for none. */
  password: string;
  tls: boolean;
}

export interface RedisTarget {
  /** The URL as given (without a trailing slash). */
  url: string;
  /** The cluster's seeds and credentials; null for one node. */
  cluster: RedisClusterTarget | null;
}

/** Why a URL is refused; the config names the variable. */
export class RedisUrlError extends Error {}

const CLUSTER = /^(rediss?)-cluster:\/\/(?:([^@/]*)@)?([^/?#]*)(\/[^?#]*)?$/;

/** Parses either form; throws {@link RedisUrlError} with the reason. */
export function parseRedisUrl(raw: string): RedisTarget {
  const url = raw.replace(/\/+$/, '');
  const m = CLUSTER.exec(url);
  if (!m) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new RedisUrlError(`not a URL: "${raw}"`);
    }
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
      throw new RedisUrlError(
        `expected redis:, rediss:, redis-cluster: or rediss-cluster: URL, got "${raw}"`,
      );
    }
    return { url, cluster: null };
  }
  const [, scheme, auth, hosts, path] = m;
  if (path !== undefined && path !== '/0') {
    throw new RedisUrlError(
      `Redis Cluster has only database 0; remove "${path}" from "${redact(raw)}"`,
    );
  }
  const nodes = (hosts ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((hostPort) => {
      const hp = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(hostPort);
      const port = Number(hp?.[2]);
      if (!hp || port < 1 || port > 65535) {
        throw new RedisUrlError(`expected host:port seed nodes, got "${hostPort}"`);
      }
      return { host: (hp[1] as string).replace(/^\[|\]$/g, ''), port };
    });
  if (nodes.length === 0) throw new RedisUrlError(`no seed node in "${redact(raw)}"`);
  let username = '';
  let password = '';
  if (auth !== undefined) {
    const colon = auth.indexOf(':');
    username = decodeURIComponent(colon === -1 ? auth : auth.slice(0, colon));
    password = colon === -1 ? '' : decodeURIComponent(auth.slice(colon + 1));
  }
  return { url, cluster: { nodes, username, password, tls: scheme === 'rediss' } };
}

/** RECSYS_REDIS_URL for `loadConfig`: {@link parseRedisUrl}, failing with the variable's name. */
export function redisTarget(raw: string): RedisTarget {
  try {
    return parseRedisUrl(raw);
  } catch (err) {
    if (err instanceof RedisUrlError) throw new ConfigError('RECSYS_REDIS_URL', err.message);
    throw err;
  }
}

/** The URL with its password replaced by `***`, for messages. */
export function redact(raw: string): string {
  return raw.replace(/(\/\/[^:@/]*:)[^@/]*@/, '$1***@');
}
