/**
 * What every long-running stream role (ingest, features, indexer, lake, catalog) returns, so one
 * entry point can run any set of them in one process and report their readiness together.
 */
import type { Registry } from 'prom-client';
import { type Config, type Logger, retry } from '../core/index.js';
import type { Kafka } from 'kafkajs';
import type { ConsumerHandle } from './consumer.js';
import { checkHealth, type HealthReport } from './health.js';
import { kafkaHealth } from './kafka.js';
import { redisHealth, type Redis } from './redis.js';

export interface RoleDeps {
  config: Readonly<Config>;
  log: Logger;
  metrics: Registry;
}

export interface StreamRole {
  /** Resolves once the role's dependencies are up and it consumes or serves. */
  ready: Promise<void>;
  /** Named dependency checks plus the role's own state (e.g. group membership). */
  readiness(): Promise<HealthReport>;
  /** Rejects when the role hit an error no retry can fix; the process should exit non-zero. */
  failed: Promise<never>;
  /** Finishes work in hand, makes it durable, commits, disconnects. */
  stop(): Promise<void>;
}

/** Runs `fn` until it succeeds; see {@link retryForever}. */
export type ForeverRetry = <T>(
  what: string,
  fn: () => Promise<T>,
  retriable?: (err: unknown) => boolean,
) => Promise<T>;

/**
 * The start-up wait every role uses: a dependency that is down (Kafka, the registry, Redis,
 * Elasticsearch) is retried with the shared capped, jittered backoff and each failure logged,
 * until it answers or `signal` aborts. Every error is retried unless `retriable` says otherwise
 * (e.g. `isRetriable`, so an incompatible schema stops the role instead of looping).
 */
export function retryForever(log: Logger, signal: AbortSignal): ForeverRetry {
  return (what, fn, retriable = () => true) =>
    retry(fn, {
      attempts: Number.POSITIVE_INFINITY,
      initialDelayMs: 250,
      maxDelayMs: 5000,
      signal,
      retriable,
      onRetry: (err, attempt, delayMs) =>
        log.warn({ err: (err as Error).message, attempt, delayMs }, `${what} failed; retrying`),
    });
}

/**
 * A role's `failed`: rejects when its consumer (known once `ready` resolved) fails for good.
 * Never rejects unobserved.
 */
export function consumerFailure(
  ready: Promise<void>,
  consumer: () => ConsumerHandle | null,
): Promise<never> {
  let fail: (err: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => undefined);
  void ready.then(
    () => consumer()?.failed.catch(fail),
    () => undefined,
  );
  return failed;
}

/** The readiness check of a role's consumer: in its group and not stuck retrying a chunk. */
export function consumerCheck(consumer: () => ConsumerHandle | null): () => void {
  return () => {
    if (!consumer()?.healthy()) throw new Error('consumer: not in its group, or retrying a chunk');
  };
}

/**
 * `readiness` of a role that consumes Kafka into Redis (features, catalog, impressions): Kafka
 * and Redis answer, and its consumer is in its group and not stuck retrying a chunk.
 */
export function kafkaRedisReadiness(
  config: Readonly<Config>,
  kafka: Kafka,
  redis: Redis,
  consumer: () => ConsumerHandle | null,
): () => Promise<HealthReport> {
  return () =>
    checkHealth(
      {
        kafka: () => kafkaHealth(kafka, config.healthTimeoutMs),
        redis: () => redisHealth(redis, config.healthTimeoutMs),
        consumer: consumerCheck(consumer),
      },
      config.healthTimeoutMs,
    );
}
