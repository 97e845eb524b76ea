/**
 * What every long-running role (ingest, features, indexer, lake, catalog, impressions,
 * attribution, serving) returns, so one entry point can run any set of them in one process and
 * report their readiness together; and the start-up retry they share.
 */
import type { Registry } from 'prom-client';
import type { Config } from './config.js';
import type { HealthReport } from './health.js';
import type { Logger } from './log.js';
import { retry } from './retry.js';
import type { ABANDONED, ShutdownBudget } from './shutdown.js';

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
  /**
   * Finishes work in hand, makes it durable, commits, disconnects; within `budget` when given
   * (what is not done by then is handed back: left uncommitted or unacknowledged, and the
   * result is {@link ABANDONED}).
   */
  stop(budget?: ShutdownBudget): Promise<void | typeof ABANDONED>;
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
