/**
 * Helpers for roles that consume Kafka: their failure hook and readiness checks.
 */
import { checkHealth, type Config, type HealthReport } from '../../core/index.js';
import type { Kafka } from 'kafkajs';
import type { ConsumerHandle } from '../consumer.js';
import { kafkaHealth } from '../kafka.js';
import { redisHealth, type Redis } from '../../store/redis.js';

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
