/**
 * Feeds that do not wait for Redis. A request's feed (`buildFeed`) falls back to the last
 * popular list the server read (or, before any batch, the last trending list), from memory,
 * when Redis fails it (a retriable error: a node failing over, a cut connection) or when it is
 * not built within `RECSYS_FEED_DEADLINE_MS` (a Redis Cluster slot without a master holds
 * commands until a replica takes over, some 10 s in `npm run chaos -- --profile cluster`); the
 * late build is then dropped unrecorded. With no list read yet, the error goes up (503) or the
 * build is awaited. Fallback feeds carry model version {@link FALLBACK_VERSION} and are counted
 * in `recsys_feed_fallbacks_total`.
 *
 * @example
 *   const feed = await feedOrFallback(ctx, 'u42', 20);
 *   feed.modelVersion; // a model, 'blend', or 'fallback'
 */
import { randomUUID } from 'node:crypto';
import { classifyError } from '../../core/index.js';
import {
  buildFeed,
  categoryName,
  servedRecord,
  type Feed,
  type FeedContext,
  type FeedItem,
} from './pipeline.js';

/** The version of a feed answered without Redis: the last popular or trending list. */
export const FALLBACK_VERSION = 'fallback';

/** A user's feed (recorded), or the fallback when Redis fails it or it is late. */
export async function feedOrFallback(
  ctx: FeedContext,
  userId: string,
  limit: number,
): Promise<Feed> {
  const t0 = performance.now();
  const attempt = { abandoned: false };
  const personal = buildFeed(ctx, userId, limit, true, attempt);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ctx.config.serving.feedDeadlineMs);
  });
  try {
    const first = await Promise.race([personal, late]);
    if (first !== null) return first;
  } catch (err) {
    if (classifyError(err) !== 'retriable') throw err;
    return fallbackOr(ctx, userId, limit, t0, () => Promise.reject(err));
  } finally {
    clearTimeout(timer);
  }
  // Past the deadline: the fallback now, or the build when there is nothing to fall back to.
  personal.catch(() => undefined);
  return fallbackOr(ctx, userId, limit, t0, () => personal, attempt);
}

/** The fallback feed, recorded, or `otherwise()` when there is none. */
function fallbackOr(
  ctx: FeedContext,
  userId: string,
  limit: number,
  t0: number,
  otherwise: () => Promise<Feed>,
  attempt?: { abandoned: boolean },
): Promise<Feed> {
  const feed = fallbackFeed(ctx, userId, limit, t0);
  if (feed === null) return otherwise();
  if (attempt) attempt.abandoned = true;
  ctx.metrics.fallbackFeeds.inc();
  servedRecord(ctx, feed);
  return Promise.resolve(feed);
}

/**
 * The first `limit` items of the fallback list (`FeedCaches.fallbackList`) that the item table
 * knows to be available, unpersonalised (the user's features, and so the consumed items, are
 * unknown); null before any list was read.
 */
export function fallbackFeed(
  ctx: FeedContext,
  userId: string,
  limit: number,
  t0: number,
): Feed | null {
  const last = ctx.caches.fallbackList();
  if (last === null) return null;
  const { list, table, source } = last;
  const items: FeedItem[] = [];
  for (let i = 0; i < list.ids.length && items.length < limit; i++) {
    const itemId = list.ids[i] as string;
    // Only items the table knows to be available (every feed reads the facts of its rows, and
    // popular and trending lists are sources of every feed).
    const k = table.find(itemId);
    if (k === undefined || table.known[k] !== 1 || table.available[k] !== 1) continue;
    items.push({
      itemId,
      score: list.scores[i] as number,
      source,
      categoryL1: categoryName(table, table.category[k] as number),
    });
  }
  return {
    requestId: randomUUID(),
    userId,
    ts: Date.now(),
    items,
    modelVersion: FALLBACK_VERSION,
    latencyMs: performance.now() - t0,
  };
}
