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
/** The cluster profile's nodes (`profile.ts`): 3 Kafka brokers, 6 Redis Cluster nodes. */
export const KAFKA_NODE_NAMES = ['kafka-1', 'kafka-2', 'kafka-3'] as const;
export const REDIS_NODE_NAMES = [
  'redis-1',
  'redis-2',
  'redis-3',
  'redis-4',
  'redis-5',
  'redis-6',
] as const;
export const SERVICE_NAMES = [
  ...BACKBONE_NAMES,
  ...MONITOR_NAMES,
  ...APP_NAMES,
  ...KAFKA_NODE_NAMES,
  ...REDIS_NODE_NAMES,
] as const;
export type BackboneName = (typeof BACKBONE_NAMES)[number];
export type KafkaNodeName = (typeof KAFKA_NODE_NAMES)[number];
export type RedisNodeName = (typeof REDIS_NODE_NAMES)[number];
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

/** Where a backbone service or a cluster node keeps its data. */
export const dataDir = (
  ctx: Pick<StackContext, 'localDir'>,
  name: BackboneName | KafkaNodeName | RedisNodeName,
): string => join(ctx.localDir, 'data', name);

/**
 * redis-server's storage settings, the same for the single Redis and each cluster node:
 * session features are rebuilt from Kafka, but an append-only file makes a restart cheap; no
 * eviction (a full Redis refuses writes instead of dropping features); a user's features are one
 * small hash (store/keys.ts) whose recent-items and dedup values pass the default 64-byte
 * listpack limit, and a hash over the limit is stored as a hashtable at several times the memory.
 */
export function redisStorageArgs(maxmemory: string): string[] {
  return [
    ...['--appendonly', 'yes', '--appendfsync', 'everysec', '--save', ''],
    ...['--maxmemory', maxmemory, '--maxmemory-policy', 'noeviction'],
    ...['--hash-max-listpack-value', '512'],
  ];
}
