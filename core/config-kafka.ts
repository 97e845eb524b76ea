/** Kafka's SASL login and topic replication as `loadConfig` (`config.ts`) reads them. */
import { ConfigError } from './errors.js';
import type { Reader } from './config-reader.js';

/** SASL credentials every Kafka client logs in with (kafkajs' names for the mechanisms). */
export interface KafkaSasl {
  mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512';
  username: string;
  password: string;
}

const SASL_MECHANISMS: readonly KafkaSasl['mechanism'][] = [
  'scram-sha-256',
  'scram-sha-512',
  'plain',
];

/** Kafka's SASL login, or null without a mechanism; a mechanism needs a user and a password. */
export function kafkaSasl(r: Reader): KafkaSasl | null {
  const mechanism = r.str('RECSYS_KAFKA_SASL_MECHANISM').toLowerCase();
  if (mechanism === '') return null;
  if (!(SASL_MECHANISMS as readonly string[]).includes(mechanism)) {
    throw new ConfigError(
      'RECSYS_KAFKA_SASL_MECHANISM',
      `expected ${SASL_MECHANISMS.join(', ')} or nothing, got "${mechanism}"`,
    );
  }
  const username = r.str('RECSYS_KAFKA_USERNAME');
  const password = r.str('RECSYS_KAFKA_PASSWORD');
  if (!username) throw new ConfigError('RECSYS_KAFKA_USERNAME', `required with SASL ${mechanism}`);
  if (!password) throw new ConfigError('RECSYS_KAFKA_PASSWORD', `required with SASL ${mechanism}`);
  return { mechanism: mechanism as KafkaSasl['mechanism'], username, password };
}

/** Topic replication; min.insync.replicas above the replication factor could never be met. */
export function replication(r: Reader): {
  replicationFactor: number;
  minInsyncReplicas: number;
} {
  const replicationFactor = r.int('RECSYS_KAFKA_REPLICATION_FACTOR', -1, 32767);
  if (replicationFactor === 0)
    throw new ConfigError('RECSYS_KAFKA_REPLICATION_FACTOR', 'expected -1 or at least 1, got "0"');
  const minInsyncReplicas = r.int('RECSYS_KAFKA_MIN_INSYNC_REPLICAS', 0, 32767);
  if (replicationFactor > 0 && minInsyncReplicas > replicationFactor)
    throw new ConfigError(
      'RECSYS_KAFKA_MIN_INSYNC_REPLICAS',
      `${minInsyncReplicas} exceeds RECSYS_KAFKA_REPLICATION_FACTOR ${replicationFactor}`,
    );
  return { replicationFactor, minInsyncReplicas };
}
