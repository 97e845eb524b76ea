/**
 * Change notifications in Redis pub/sub: the features role publishes a userId on
 * `FEATURE_CHANNEL` when it applied events of that user, and `CatalogStore` publishes changed
 * itemIds (space-separated) on `CATALOG_CHANNEL`. On a Redis Cluster the feature signal is
 * sharded pub/sub per user instead ({@link watchUserChanges}); the catalog's stays classic pub/sub,
 * which the cluster bus copies to every node (rare and small). Messages are not stored: a
 * subscriber that was disconnected must assume it missed some.
 *
 * @example
 *   const stop = await subscribeFeatureChanges(subscriber, (userId) => hub.featureChanged(userId));
 *   await stop();
 */
import type { RedisClient } from './redis.js';
import { CATALOG_CHANNEL, FEATURE_CHANNEL, userChangeChannel } from './keys.js';

/**
 * Subscribes `subscriber` (a connection of its own: in subscriber mode it can run nothing else)
 * to FEATURE_CHANNEL when `onChange` is given (null on a Redis Cluster: {@link watchUserChanges}),
 * and to CATALOG_CHANNEL when `onCatalogChange` is given, once; forwards each
 * userId, and each message's itemIds. Returns an unsubscribe function.
 */
export async function subscribeFeatureChanges(
  subscriber: RedisClient,
  onChange: ((userId: string) => void) | null,
  onCatalogChange?: (itemIds: string[]) => void,
): Promise<() => Promise<void>> {
  const channels = [
    ...(onChange ? [FEATURE_CHANNEL] : []),
    ...(onCatalogChange ? [CATALOG_CHANNEL] : []),
  ];
  if (channels.length === 0) return async () => undefined;
  const listener = (channel: string, message: string): void => {
    if (!message) return;
    if (channel === FEATURE_CHANNEL) onChange?.(message);
    else if (channel === CATALOG_CHANNEL) onCatalogChange?.(message.split(' '));
  };
  subscriber.on('message', listener);
  await subscriber.subscribe(...channels);
  return async () => {
    subscriber.off('message', listener);
    await subscriber.unsubscribe(...channels).catch(() => undefined);
  };
}

/** How long re-subscriptions must pause before a gap is reported, ms. */
const GAP_QUIET_MS = 500;

/** The users whose change signal a server listens to; see {@link watchUserChanges}. */
export interface UserChangeWatch {
  /** Starts listening to `userId`'s changes (SSUBSCRIBE of its channel). */
  add(userId: string): Promise<void>;
  /** Stops listening to `userId`'s changes. */
  remove(userId: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The sharded change signal of a Redis Cluster (`userChangeChannel`): a server SSUBSCRIBEs the
 * channel of each user it holds a live socket of, and ioredis keeps one subscriber connection
 * per master, so each user's signal comes from the node of the user's slot only, and a server
 * hears only its own users. ioredis re-subscribes after a reconnect or a slot move (failover);
 * `onGap` then gets the watched users, whose signals may have been lost meanwhile.
 *
 * @example
 *   const watch = watchUserChanges(cluster, (userId) => hub.featureChanged(userId));
 *   await watch.add('u42');
 */
export function watchUserChanges(
  subscriber: RedisClient,
  onChange: (userId: string) => void,
  onGap?: (users: string[]) => void,
): UserChangeWatch {
  const listener = (channel: string, message: string): void => {
    // The message is the userId; its channel says the same (a stray message is ignored).
    if (message && channel === userChangeChannel(message)) onChange(message);
  };
  const watched = new Set<string>();
  // ioredis re-subscribes every channel once the slots moved (a failover) or a subscriber
  // connection came back, then says `subscribersReady`: signals published since it lost a
  // subscriber connection (`-subscriber`, `-node`) are gone. While a master is down it retries
  // and says so again and again (27 and 47 times in two failovers of test/integration/cluster/):
  // one gap is reported once that quiets for GAP_QUIET_MS. The first subscription is no gap.
  let lost = false;
  let gapTimer: NodeJS.Timeout | null = null;
  const dropped = (): void => {
    lost = true;
  };
  const regained = (): void => {
    if (!onGap || !lost) return;
    if (gapTimer) clearTimeout(gapTimer);
    gapTimer = setTimeout(() => {
      gapTimer = null;
      lost = false;
      onGap([...watched]);
    }, GAP_QUIET_MS);
    gapTimer.unref();
  };
  subscriber.on('-subscriber', dropped);
  subscriber.on('-node', dropped);
  subscriber.on('smessage', listener);
  subscriber.on('subscribersReady', regained);
  return {
    async add(userId) {
      watched.add(userId);
      await subscriber.ssubscribe(userChangeChannel(userId));
    },
    async remove(userId) {
      watched.delete(userId);
      await subscriber.sunsubscribe(userChangeChannel(userId));
    },
    async stop() {
      subscriber.off('smessage', listener);
      subscriber.off('subscribersReady', regained);
      subscriber.off('-subscriber', dropped);
      subscriber.off('-node', dropped);
      if (gapTimer) clearTimeout(gapTimer);
      const users = [...watched];
      watched.clear();
      await Promise.all(
        users.map((u) => subscriber.sunsubscribe(userChangeChannel(u)).catch(() => undefined)),
      );
    },
  };
}
