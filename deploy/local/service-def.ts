/**
 * What `deploy/local` knows of a service it runs: its name, how it is installed, prepared and
 * probed; and the context every service step gets.
 */
import { join } from 'node:path';
import type { Config, Logger } from '../../core/index.js';
import type { SpawnSpec } from './process.js';

/** The backbone, monitoring (`monitoring.ts`), and the product's own processes (`app.ts`). */
export const BACKBONE_NAMES = ['kafka', 'registry', 'redis', 'mosquitto', 'elasticsearch'] as const;
export const MONITOR_NAMES = ['prometheus', 'alertmanager'] as const;
export const APP_NAMES = ['stream', 'serving'] as const;
export const SERVICE_NAMES = [...BACKBONE_NAMES, ...MONITOR_NAMES, ...APP_NAMES] as const;
export type BackboneName = (typeof BACKBONE_NAMES)[number];
export type MonitorName = (typeof MONITOR_NAMES)[number];
export type AppName = (typeof APP_NAMES)[number];
export type ServiceName = (typeof SERVICE_NAMES)[number];

export interface StackContext {
  config: Readonly<Config>;
  /** Checkout root (holds package.json). */
  root: string;
  /** Absolute data/log/pid folder, git-ignored. */
  localDir: string;
  cacheDir: string;
  log: Logger;
}

export interface ServiceDef {
  name: ServiceName;
  /** Heap or memory cap the service is started with, for `status`. */
  memory: string;
  port(ctx: StackContext): number;
  install(ctx: StackContext): Promise<void>;
  /** Writes config, formats storage; returns how to start it. */
  prepare(ctx: StackContext): Promise<Omit<SpawnSpec, 'logFile' | 'pidFile'>>;
  /** One quick readiness probe; throws or returns false when not ready. */
  probe(ctx: StackContext): Promise<boolean>;
  /** Set-up once it answers (each `up` that finds it ours, so idempotent), e.g. Kafka's ACLs. */
  afterReady?(ctx: StackContext): Promise<void>;
}

/** Where a backbone service keeps its data. */
export const dataDir = (ctx: Pick<StackContext, 'localDir'>, name: BackboneName): string =>
  join(ctx.localDir, 'data', name);
