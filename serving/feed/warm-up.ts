/**
 * Warm-up: once a model is loaded (or the registry said the blend ranks), `WARMUP_FEEDS` feeds for users who have live features (or
 * made-up new users when there are none) are built and thrown away before the service reports
 * ready, so the first real requests find the code compiled and the shared caches (catalog,
 * neighbours, popularity, trending) filled. A failed attempt is logged and tried again.
 *
 * @example
 *   const warmUp = startWarmUp({ log, redis, models, build });
 *   warmUp.done(); // false until the warm-up feeds were built
 */
import { sleep, type Logger } from '../../core/index.js';
import type { RedisClient } from '../../store/redis.js';
import { sampleUsers } from '../../store/user-sample.js';
import type { ModelHolder } from '../model.js';

/** Feeds built (and thrown away) before the service reports ready, and users they are for. */
const WARMUP_FEEDS = 1000;
const WARMUP_USERS = 500;
/** Warm-up feeds in flight at once. */
const CONCURRENCY = 8;

export interface WarmUpDeps {
  log: Logger;
  redis: RedisClient;
  models: ModelHolder;
  /** Builds one feed without recording it. */
  build: (userId: string, limit: number) => Promise<unknown>;
}

export interface WarmUp {
  done(): boolean;
  stop(): void;
}

export function startWarmUp(deps: WarmUpDeps): WarmUp {
  const { log, models } = deps;
  let warmed = false;
  const stop = new AbortController();
  const once = async (): Promise<void> => {
    while (!stop.signal.aborted && models.mode() === 'loading') await sleep(100);
    const users = await sampleUsers(deps.redis, WARMUP_USERS);
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < WARMUP_FEEDS && !stop.signal.aborted) {
          const i = next++;
          await deps.build(users[i % users.length] ?? `recsys-warm-up-${i}`, 20);
        }
      }),
    );
    warmed = true;
    log.info(
      { feeds: WARMUP_FEEDS, users: users.length, ms: Math.round(performance.now() - t0) },
      'warmed up',
    );
  };
  void (async () => {
    while (!warmed && !stop.signal.aborted) {
      try {
        await once();
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'warm-up failed; trying again');
        await sleep(1000);
      }
    }
  })();
  return { done: () => warmed, stop: () => stop.abort() };
}
