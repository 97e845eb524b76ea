/**
 * Every Redis key, field and channel name the stack uses, built in this one module and used only
 * by the stores beside it (`serving/`, `batch/` and `stream/` go through the stores).
 *
 * Layout:
 * - `{u:<userId>}:f` hash: one user's session features, one key per user so a Lua script
 *   updates them atomically and Redis Cluster keeps them in one slot (hash tag). One hash rather
 *   than a hash, a list and a set per user: each extra key costs about 70 bytes of overhead,
 *   more than a small user's features (see {@link USER_FIELDS}).
 * - `{u:<userId>}:e` string: the user's recent eventIds (re-send detection), packed; its own key
 *   because it grows to 80 KB for a user with 10,000 events a day, which would make every
 *   feature read copy it.
 * - `item:<itemId>` hash: the catalog entry (see {@link ITEM_FIELDS}).
 * - `{trend}:...` (or `{trend:<shard>}:...`): trending counts; one hash tag per shard so one
 *   script updates a shard's part of a whole chunk.
 * - `{new}:...`: the newest catalog items, overall and per category ({@link newItemsKey}).
 * - channel {@link FEATURE_CHANNEL}: a user's features changed (message = userId); on a Redis
 *   Cluster the sharded channel {@link userChangeChannel} of the user instead.
 * - channel {@link CATALOG_CHANNEL}: catalog entries changed (message = itemIds, space-separated).
 * - batch output ({@link BATCH}), impressions and live-socket leases, below.
 *
 * @example
 *   userFeaturesKey('u42'); // '{u:u42}:f'
 *   BATCH.candidates('u42', 7); // '{u:u42}:cand:v7'
 */

/** Hash of one user's features. */
export function userFeaturesKey(userId: string): string {
  return `{u:${userId}}:f`;
}

/**
 * One user's eventId window (`store/event-ids.ts`): a packed string, beside the features in the
 * same slot so the feature script checks and updates both atomically.
 */
export function userEventIdsKey(userId: string): string {
  return `{u:${userId}}:e`;
}

/** Fields of the user hash. Short names: they are stored once per user. */
export const USER_FIELDS = {
  /** Events applied in all. */
  total: 'n',
  /** The client's session id; absent while the session is derived (its id is then `a<start>`). */
  sessionId: 'sid',
  /** Current session start, epoch ms. */
  sessionStart: 'ss',
  /** Latest event time seen, epoch ms (last activity); also the reference time of `a:*`. */
  lastTs: 'sl',
  /** Events in the current session. */
  sessionLength: 'sn',
  /** Prefix of category affinities: `a:<categoryL1>`, each its value at `sl`. */
  affinityPrefix: 'a:',
  /** Recent distinct items, newest first, space-separated. */
  recent: 'r',
  /** Recently purchased distinct items, newest first, space-separated. */
  purchased: 'b',
  /** Consumed distinct items (events of the consumed types), newest first, space-separated. */
  consumed: 'c',
  /** Last applied Kafka record, `<partition>:<offset>` (exact redelivery detection). */
  offset: 'o',
  /**
   * Before the eventId window had its own key (`userEventIdsKey`): the latest applied eventIds
   * as packed 6-byte hashes, newest first. Read once to move them there, then deleted.
   */
  dedup: 'd',
} as const;

/** Per-type count fields of the user hash (one letter each: they are stored per user). */
export const COUNT_FIELDS = {
  view: 'cv',
  click: 'cc',
  add_to_cart: 'ca',
  like: 'cl',
  purchase: 'cp',
} as const;

/** Catalog entry of one item. */
export function itemKey(itemId: string): string {
  return `item:${itemId}`;
}

export const ITEM_FIELDS = {
  categoryL1: 'c1',
  categoryL2: 'c2',
  price: 'p',
  isAvailable: 'av',
  createdAt: 'ct',
} as const;

/**
 * Sorted set of the newest available catalog items (score = createdAt), overall (`category`
 * null) or in one category: the pool the feed explores new items from (`store/new-items.ts`).
 */
export function newItemsKey(category: string | null): string {
  return category === null ? '{new}:all' : `{new}:c:${category}`;
}

/** Published after a user's features changed; the message is the userId. */
export const FEATURE_CHANNEL = 'recsys:features:changed';

/**
 * One user's change signal as sharded pub/sub (SPUBLISH/SSUBSCRIBE), used on a Redis Cluster: it
 * carries the user's hash tag, so the feature script publishes it from the user's slot and only
 * the node of that slot carries it to the servers holding the user's sockets. The message is
 * the userId.
 */
export function userChangeChannel(userId: string): string {
  return `{u:${userId}}:chg`;
}

/**
 * Published after catalog entries were written or deleted; the message is their itemIds,
 * space-separated. Readers that cache entries (the feed server) drop them at once.
 */
export const CATALOG_CHANNEL = 'recsys:catalog:changed';

/**
 * Trending keys for one window (seconds) and optionally one category, in one shard. The builders
 * also take Lua expressions in place of numbers, names and the tag, so the trending scripts build
 * the same names.
 *
 * Shards: with one shard every trending key carries the hash tag `{trend}` (one slot); with N
 * shards an item's counts live under `{trend:<s>}`, s = {@link trendShard} of the item, so N slots
 * (spread over the nodes of a Redis Cluster) share the writes, and a read merges the N top lists
 * (`store/trending.ts`). A script touches one shard's keys only.
 */
export const TRENDING = {
  /** The hash tag of shard `shard` of `shards`. */
  tag: (shard: number, shards: number): string => (shards === 1 ? '{trend}' : `{trend:${shard}}`),
  /** Running counts of the whole window: a sorted set item -> count. */
  window: (windowSec: number | string, category: string | null, tag = '{trend}'): string =>
    category === null ? `${tag}:w${windowSec}` : `${tag}:w${windowSec}:c:${category}`,
  /**
   * Counts of one time bucket (members `<category> <item>`, or `<item>` when the category is
   * unknown), subtracted from the windows when the bucket leaves them.
   */
  bucket: (windowSec: number | string, bucket: number | string, tag = '{trend}'): string =>
    `${tag}:w${windowSec}:b${bucket}`,
  /** Sorted set of the live bucket numbers of a window (score = bucket number). */
  buckets: (windowSec: number | string, tag = '{trend}'): string => `${tag}:w${windowSec}:idx`,
  /** Hash: `h:<windowSec>` oldest live bucket, `o:<topic>:<partition>` last applied offset. */
  meta: (tag = '{trend}'): string => `${tag}:meta`,
} as const;

/**
 * The trending shard of an item, of `shards`: FNV-1a (32-bit) of its id's UTF-16 code units, so
 * every process (writers and readers) puts an item in the same shard.
 */
export function trendShard(itemId: string, shards: number): number {
  if (shards === 1) return 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < itemId.length; i++) h = Math.imul(h ^ itemId.charCodeAt(i), 0x01000193);
  return (h >>> 0) % shards;
}

// ------------------------------------------------------------------------------ batch output
// Written by `batch/publish.ts`, read by serving through its reader functions. Every batch
// writes under a new version; `BATCH.current` names the live one, so readers never see half a
// batch. Values are compact strings (`<id>,<score>[,<source>]` entries joined by spaces): a
// 200-entry sorted set costs several times the memory of the same list as one string.

export const BATCH = {
  /**
   * String: the live version. It and `versions` share the hash tag `{batch}`, so the switch
   * (one MULTI over both) stays in one slot of a Redis Cluster.
   */
  current: '{batch}:current',
  /** Sorted set: published versions still kept (score = version number). */
  versions: '{batch}:versions',
  /** Counter the next version number comes from. */
  sequence: '{batch}:seq',
  /**
   * The names these had before the `{batch}` tag: read (never written) so a store upgraded in
   * place keeps its live batch and its version numbers until the next publish.
   */
  legacy: { current: 'batch:current', sequence: 'batch:seq' },
  /** Hash: what a version holds (counts, creation time). */
  meta: (version: number | string): string => `batch:v${version}:meta`,
  /** One user's home-feed candidates; the hash tag keeps it in the user's slot. */
  candidates: (userId: string, version: number | string): string =>
    `{u:${userId}}:cand:v${version}`,
  /** One item's co-visitation neighbours. */
  neighbours: (itemId: string, version: number | string): string => `nb:v${version}:${itemId}`,
  /** One item's EASE weights towards other items (`batch/ease.ts`). */
  ease: (itemId: string, version: number | string): string => `ease:v${version}:${itemId}`,
  /** Popular items overall (category null) or of one category. */
  popular: (category: string | null, version: number | string): string =>
    category === null ? `pop:v${version}` : `pop:v${version}:c:${category}`,
  /**
   * The train popularity of every item of one category with statistics, `id,popularity ...`
   * best first: the rank feature's value for any candidate (the `popular` lists stop at the top).
   */
  itemPopularity: (category: string, version: number | string): string =>
    `ipop:v${version}:c:${category}`,
  /** The version a batch output key belongs to, or null for any other key. */
  versionOf: (key: string): number | null => {
    const m =
      /^(?:\{u:[^}]*\}:cand:v(\d+)|nb:v(\d+):.*|pop:v(\d+)(?::c:.*)?|batch:v(\d+):meta|ipop:v(\d+):c:.*|ease:v(\d+):.*)$/s.exec(
        key,
      );
    if (!m) return null;
    return Number(m[1] ?? m[2] ?? m[3] ?? m[4] ?? m[5] ?? m[6]);
  },
} as const;

// ------------------------------------------------------------------------------ online neighbours
// Written by the features role from each applied event, read by the feed service beside the
// batch neighbours. One hash per item (neighbour id -> decayed co-visitation weight); a hash
// because HINCRBYFLOAT costs a fraction of ZINCRBY on a small sorted set (`bench/README.md`).

/** Hash of one item's online co-visitation neighbours (`nbh:`; the sorted sets were `nbo:`). */
export function onlineNeighboursKey(itemId: string): string {
  return `nbh:${itemId}`;
}

// ------------------------------------------------------------------------------ impressions
// Written by the impressions role (`stream/roles/impressions.ts`) from the served log, read by the
// feed service (impression fatigue). One hash per user in the user's slot.

/** Hash of one user's impression counts: itemId -> times shown without an interaction since. */
export function userImpressionsKey(userId: string): string {
  return `{u:${userId}}:imp`;
}

/**
 * Field of the impressions hash holding the last applied served-log record,
 * `<partition>:<offset>` (exact redelivery detection). `~` is not allowed in item ids.
 */
export const IMPRESSIONS_OFFSET_FIELD = '~o';

// ------------------------------------------------------------------------------ attribution
// Written and read by the attribution role (`stream/roles/attribution.ts`): the user's last few
// served feeds, so an event can be attributed to the feed that showed its item.

/** List of one user's last served feeds, newest received first (`store/attribution.ts`). */
export function userServedFeedsKey(userId: string): string {
  return `{u:${userId}}:sf`;
}

// ------------------------------------------------------------------------------ live sockets
// Written and read by the serving processes (`store/socket-leases.ts`): which live sockets a
// user holds, so the per-user cap holds across workers and hosts.

/** Sorted set of one user's live-socket leases: socket id -> expiry (Redis clock, epoch ms). */
export function userSocketLeasesKey(userId: string): string {
  return `{u:${userId}}:ws`;
}
