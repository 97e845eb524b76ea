/** The Redis connection every stream and serving process uses, its health check and memory. */
import { Redis } from 'ioredis';
import { Gauge } from 'prom-client';
import { DependencyUnavailableError, type Registry, withTimeout } from '../core/index.js';

export type { Redis };

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
  options: { coalesceWrites?: boolean } = {},
): Redis {
  const redis = new Redis(url, {
    connectionName: name,
    // Commands wait while reconnecting instead of failing at once, but not forever.
    maxRetriesPerRequest: 3,
    enableOfflineQueue: true,
    connectTimeout: 2000,
    // Capped, growing reconnect delay; ioredis reconnects for as long as the process lives.
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 5000),
    lazyConnect: false,
  });
  if (options.coalesceWrites) coalesceWrites(redis);
  return redis;
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
  if (err.name === 'MaxRetriesPerRequestError') return true;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
  return /^(Connection is closed|Stream isn't writeable|Command timed out)/.test(err.message);
}

export async function redisHealth(redis: Redis, timeoutMs: number): Promise<void> {
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
export function redisMemoryMetrics(redis: Redis, registry: Registry): void {
  if (registry.getSingleMetric('recsys_redis_used_memory_bytes')) return;
  let info: Promise<Record<string, number>> | null = null;
  // Both gauges collect in one scrape: one INFO for both.
  const read = (): Promise<Record<string, number>> => {
    info ??= redis
      .info('memory')
      .then((text) => {
        const out: Record<string, number> = {};
        for (const m of text.matchAll(/^(used_memory|maxmemory):(\d+)/gm))
          out[m[1] as string] = Number(m[2]);
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
