/**
 * Change notifications in Redis pub/sub: the features role publishes a userId on
 * `FEATURE_CHANNEL` when it applied events of that user, and `CatalogStore` publishes changed
 * itemIds (space-separated) on `CATALOG_CHANNEL`. Messages are not stored: a subscriber that was
 * disconnected must assume it missed some.
 *
 * @example
 *   const stop = await subscribeFeatureChanges(subscriber, (userId) => hub.featureChanged(userId));
 *   await stop();
 */
import type { Redis } from 'ioredis';
import { CATALOG_CHANNEL, FEATURE_CHANNEL } from './keys.js';

/**
 * Subscribes `subscriber` (a connection of its own: in subscriber mode it can run nothing else)
 * to FEATURE_CHANNEL, and to CATALOG_CHANNEL when `onCatalogChange` is given, once; forwards each
 * userId, and each message's itemIds. Returns an unsubscribe function.
 */
export async function subscribeFeatureChanges(
  subscriber: Redis,
  onChange: (userId: string) => void,
  onCatalogChange?: (itemIds: string[]) => void,
): Promise<() => Promise<void>> {
  const channels = onCatalogChange ? [FEATURE_CHANNEL, CATALOG_CHANNEL] : [FEATURE_CHANNEL];
  const listener = (channel: string, message: string): void => {
    if (!message) return;
    if (channel === FEATURE_CHANNEL) onChange(message);
    else if (channel === CATALOG_CHANNEL) onCatalogChange?.(message.split(' '));
  };
  subscriber.on('message', listener);
  await subscriber.subscribe(...channels);
  return async () => {
    subscriber.off('message', listener);
    await subscriber.unsubscribe(...channels).catch(() => undefined);
  };
}
