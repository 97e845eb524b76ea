/** The Redis connection every stream and serving process uses, and its health check. */
import { Redis } from 'ioredis';
import { DependencyUnavailableError, withTimeout } from '../core/index.js';

export type { Redis };

/**
 * A Redis connection. `autoPipelining` sends the commands issued in one tick of the event loop
 * in one write (ioredis `enableAutoPipelining`): for a server whose concurrent requests each
 * issue a few commands, it saves most of the write system calls.
 */
export function createRedis(
  url: string,
  name: string,
  options: { autoPipelining?: boolean } = {},
): Redis {
  return new Redis(url, {
    connectionName: name,
    enableAutoPipelining: options.autoPipelining ?? false,
    // Commands wait while reconnecting instead of failing at once, but not forever.
    maxRetriesPerRequest: 3,
    enableOfflineQueue: true,
    connectTimeout: 2000,
    // Capped, growing reconnect delay; ioredis reconnects for as long as the process lives.
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 5000),
    lazyConnect: false,
  });
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
