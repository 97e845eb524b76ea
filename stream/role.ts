/**
 * What every long-running stream role (ingest, features, indexer, lake, catalog) returns, so one
 * entry point can run any set of them in one process and report their readiness together.
 */
import type { Registry } from 'prom-client';
import type { Config, Logger } from '../core/index.js';
import type { HealthReport } from './health.js';

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
