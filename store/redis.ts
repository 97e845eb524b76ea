/** The Redis connection every stream and serving process uses, and its health check. */
import { Redis } from 'ioredis';
import { DependencyUnavailableError, withTimeout } from '../core/index.js';

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
