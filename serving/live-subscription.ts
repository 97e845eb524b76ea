/**
 * The serving process's subscription to change notifications (`store/changes.ts`): feature
 * changes go to the live hub, catalog changes drop the feed service's cached entries (an item
 * made unavailable leaves feeds at once, not after the cache's TTL). Redis may be down at
 * start: the subscription is retried in the background while `ok()` says false (/readyz).
 * After any gap (failed attempts, a reconnect) every cached catalog entry is dropped, since
 * changes published meanwhile were never heard. On a Redis Cluster the feature changes come by
 * sharded pub/sub, one channel per user with a socket here (`watchUserChanges`).
 *
 * @example
 *   const live = startLiveSubscription({ subscriber, hub, feed, log });
 *   live.ok(); // subscribed now?
 *   await live.stop();
 */
import { retry, type Logger } from '../core/index.js';
import { subscribeFeatureChanges, watchUserChanges } from '../store/changes.js';
import { isCluster, type RedisClient } from '../store/redis.js';
import type { LiveHub } from './live.js';
import type { ServingFeed } from './routes/context.js';

export interface LiveSubscription {
  ok(): boolean;
  /** Why `ok()` is false. */
  error(): string;
  stop(): Promise<void>;
}

export function startLiveSubscription(deps: {
  subscriber: RedisClient;
  hub: LiveHub;
  feed: ServingFeed;
  log: Logger;
}): LiveSubscription {
  const { subscriber, hub, feed, log } = deps;
  let subscribed = false;
  let lastError = 'not subscribed yet';
  let unsubscribe: (() => Promise<void>) | null = null;
  const stopping = new AbortController();
  const onCatalog = feed.itemsChanged?.bind(feed);
  let missedChanges = false;
  const forgetCatalog = (why: string): void => {
    if (!onCatalog) return;
    onCatalog();
    log.info({ why }, 'catalog changes may have been missed; cached catalog entries dropped');
  };
  const onChange = (userId: string): void => hub.featureChanged(userId);
  // A Redis Cluster: the feature signal is each user's sharded channel, subscribed while the
  // user has a socket here; the classic subscription below carries the catalog's only.
  // After a failover (ioredis re-subscribed on the new masters) each watched user's feed is
  // pushed again: a change published meanwhile was never heard.
  const refresh = (users: string[]): void => {
    if (users.length > 0) log.info({ users: users.length }, 'sharded change signal regained');
    for (const userId of users) onChange(userId);
  };
  const sharded = isCluster(subscriber) ? watchUserChanges(subscriber, onChange, refresh) : null;
  if (sharded) {
    const failed = (userId: string) => (err: Error) =>
      log.warn({ err: err.message, userId }, 'sharded change signal (un)subscribe failed');
    hub.watchUsers({
      added: (userId) => void sharded.add(userId).catch(failed(userId)),
      removed: (userId) => void sharded.remove(userId).catch(failed(userId)),
    });
  }
  retry(() => subscribeFeatureChanges(subscriber, sharded ? null : onChange, onCatalog), {
    attempts: Number.POSITIVE_INFINITY,
    initialDelayMs: 250,
    maxDelayMs: 5000,
    signal: stopping.signal,
    retriable: () => true,
    onRetry: (err) => {
      missedChanges = true;
      lastError = (err as Error).message;
      log.warn({ err: lastError }, 'cannot subscribe to feature changes; retrying');
    },
  }).then(
    (stop) => {
      unsubscribe = stop;
      subscribed = true;
      if (missedChanges) forgetCatalog('subscribed after failed attempts');
      // ioredis resubscribes by itself after a reconnect.
      subscriber.on('close', () => {
        subscribed = false;
        lastError = 'redis subscriber connection closed';
      });
      subscriber.on('ready', () => {
        if (!subscribed) forgetCatalog('subscriber reconnected');
        subscribed = true;
      });
    },
    () => undefined,
  );
  return {
    ok: () => subscribed,
    error: () => lastError,
    async stop() {
      stopping.abort(new Error('stopping'));
      await Promise.all([unsubscribe?.(), sharded?.stop()]);
    },
  };
}
