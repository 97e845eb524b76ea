/** A sample of the users who have features, for warming caches (`serving/feed/warm-up.ts`). */
import { userFeaturesKey } from './keys.js';
import { type RedisClient, scanKeys } from './redis.js';

const FEATURES_KEY = /^\{u:(.*)\}:f$/s;

/**
 * Up to `n` users who have features (found by SCAN, at most 20 batches of 1,000 keys), for
 * warming caches; not a uniform sample.
 */
export async function sampleUsers(redis: RedisClient, n: number): Promise<string[]> {
  const users: string[] = [];
  let scans = 0;
  await scanKeys(redis, userFeaturesKey('*'), 1000, (keys) => {
    for (const key of keys) {
      const id = FEATURES_KEY.exec(key)?.[1];
      if (id !== undefined && users.length < n) users.push(id);
    }
    return ++scans < 20 && users.length < n;
  });
  return users;
}
