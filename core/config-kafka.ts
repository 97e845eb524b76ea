/** Kafka's SASL login as `loadConfig` (`config.ts`) reads it. */
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
