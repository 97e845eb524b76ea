/**
 * Profiles of the local stack. `single` (the default) is the stack as it always was: one Kafka
 * broker, one Redis. `cluster` (`up --profile cluster`) runs 3 Kafka brokers (`kafka-cluster.ts`)
 * and a Redis Cluster of 3 masters with one replica each (`redis-cluster.ts`) in their place,
 * on ports of their own, beside the same registry, Mosquitto, Elasticsearch and monitoring. In
 * the cluster profile the names `kafka` and `redis` stand for all of their nodes.
 *
 * @example
 *   npm run stack -- up --profile cluster
 *   eval "$(npm run -s stack -- cluster-env)"   # the product's processes then use the cluster
 */
import type { Config } from '../../core/index.js';
import { CONTROLLER_OFFSET, clusterBrokers } from './kafka-cluster.js';
import { redisClusterUrl, redisNodes } from './redis-cluster.js';
import {
  KAFKA_NODE_NAMES,
  REDIS_NODE_NAMES,
  SERVICE_NAMES,
  type ServiceName,
  type StackContext,
} from './service-def.js';

export const PROFILES = ['single', 'cluster'] as const;
export type Profile = (typeof PROFILES)[number];

export function parseProfile(value: string | undefined): Profile {
  if (value === undefined) return 'single';
  if (!(PROFILES as readonly string[]).includes(value))
    throw new Error(`unknown profile "${value}"; known: ${PROFILES.join(', ')}`);
  return value as Profile;
}

/** Names as `profile` reads them: in the cluster profile `kafka` and `redis` mean their nodes. */
export function expandNames(profile: Profile, names: readonly string[]): ServiceName[] {
  const out: ServiceName[] = [];
  for (const name of names) {
    if (profile === 'cluster' && name === 'kafka') out.push(...KAFKA_NODE_NAMES);
    else if (profile === 'cluster' && name === 'redis') out.push(...REDIS_NODE_NAMES);
    else if ((SERVICE_NAMES as readonly string[]).includes(name)) out.push(name as ServiceName);
    else throw new Error(`unknown service "${name}"; known: ${SERVICE_NAMES.join(', ')}`);
  }
  return [...new Set(out)];
}

/** What `up` starts in `profile` without names: RECSYS_LOCAL_SERVICES, read in that profile. */
export const profileServices = (config: Readonly<Config>, profile: Profile): ServiceName[] =>
  expandNames(profile, config.local.services);

/**
 * The variables the product's processes need to use the cluster profile: its brokers, the Redis
 * Cluster's seed nodes, and topics created at replication factor 3 with min.insync.replicas 2.
 */
export function clusterEnv(ctx: Pick<StackContext, 'config'>): Record<string, string> {
  return {
    RECSYS_KAFKA_BROKERS: clusterBrokers(ctx).join(','),
    RECSYS_REDIS_URL: redisClusterUrl(ctx),
    RECSYS_KAFKA_REPLICATION_FACTOR: '3',
    RECSYS_KAFKA_MIN_INSYNC_REPLICAS: '2',
  };
}

/** The cluster profile's ports, one line each (for `help` and `status`). */
export function clusterPorts(ctx: Pick<StackContext, 'config'>): string[] {
  const k = ctx.config.local.clusterKafkaPort;
  const r = ctx.config.local.clusterRedisPort;
  return [
    `kafka-1..3  brokers ${clusterBrokers(ctx).join(', ')}; controllers :${k + CONTROLLER_OFFSET}-${k + CONTROLLER_OFFSET + 2} (RECSYS_CLUSTER_KAFKA_PORT=${k})`,
    `redis-1..6  nodes ${redisNodes(ctx).join(', ')}; cluster bus :${r + 10_000}-${r + 10_005} (RECSYS_CLUSTER_REDIS_PORT=${r})`,
  ];
}
