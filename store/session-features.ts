/**
 * Per-user session features in Redis, updated by one Lua script per user and chunk, so every
 * update is atomic and a replayed event changes nothing.
 *
 * For each event, in Kafka order, the script:
 *   1. skips it as *duplicate* when its eventId is in the user's eventId window
 *      (`store/event-ids.ts`: the latest `dedupWindow` applied eventIds, none older than
 *      `dedupAgeMs`) and was applied by another record: a client or the bridge re-sent it;
 *   2. skips it as *redelivered* when the user's last applied record (`o`) is on the same
 *      partition at this offset or later: exact for Kafka redelivery whatever its age;
 *   3. otherwise applies it and adds its eventId to the window: total and per-type counts;
 *      session id, start, last activity and length (a new derived session after `sessionGapMs`
 *      of inactivity when the client sends no sessionId); category affinities with exponential
 *      decay; the recent (and purchased) distinct items, newest first, capped.
 * If anything was applied it refreshes the key's TTL and publishes the userId on
 * {@link FEATURE_CHANNEL} (on a Redis Cluster: SPUBLISHes it on the user's own channel). Nothing
 * is written for skipped events, so one pass and two passes leave the same bytes.
 *
 * Affinity decay: a user's affinity to category c at time T is
 *   sum over applied events e in c of weight(type_e) * 2^(-(T - ts_e) / halfLife).
 * The hash stores the values at the reference time `sl` (the latest event time). A newer event
 * multiplies every stored value by 2^(-(ts - sl) / halfLife), moves `sl` to ts, then adds its
 * weight; an older event adds its weight decayed to `sl`. The result does not depend on the
 * order events arrive in. Values are kept to 5 significant digits. Readers decay to "now" the
 * same way ({@link readFeatures}).
 *
 * @example
 *   const store = new SessionFeatureStore(redis, config.features);
 *   const statuses = await store.apply(events); // APPLIED, REDELIVERED or DUPLICATE per event
 *   const features = await readFeatures(redis, 'u42', Date.now(), config.features.halfLifeMs);
 */
import { isCluster, openPipeline, type RedisClient } from './redis.js';
import { DependencyUnavailableError } from '../core/index.js';
import { EVENT_TYPES, type EventType } from '../schemas/index.js';
import { EVENT_IDS_LUA, eventIdHash } from './event-ids.js';
import { COUNT_FIELDS, FEATURE_CHANNEL, USER_FIELDS, userFeaturesKey } from './keys.js';
import { userChangeChannel, userEventIdsKey } from './keys.js';

export { eventIdHash };

/** Weight of each event type in the category affinities (a purchase says more than a view). */
export const TYPE_WEIGHTS: Readonly<Record<EventType, number>> = {
  view: 1,
  click: 2,
  like: 3,
  add_to_cart: 4,
  purchase: 5,
};

export interface FeatureOptions {
  halfLifeMs: number;
  sessionGapMs: number;
  recentItems: number;
  maxCategories: number;
  /** eventIds remembered per user at most; 0 turns re-send detection off. */
  dedupWindow: number;
  /** How long an eventId is remembered at least, ms (by the bridge's receivedAt). @default 1 day */
  dedupAgeMs?: number;
  ttlSec: number;
  /** Channel the change signal goes to. @default FEATURE_CHANNEL (the batch uses its own) */
  channel?: string;
  /**
   * `sharded`: the change signal is SPUBLISHed on the user's own channel (`userChangeChannel`),
   * which the node of the user's slot alone carries, instead of PUBLISHed on `channel`, which a
   * Redis Cluster copies to every node. @default sharded on a Redis Cluster, else channel
   */
  changeSignal?: 'channel' | 'sharded';
  /**
   * Event types that consume an item: the item joins the user's consumed list, and serving
   * never shows it to the user again. @default DEFAULT_CONSUMED_TYPES
   */
  consumedTypes?: readonly string[];
  /** Consumed items kept per user (newest first). @default 500 */
  consumedItems?: number;
}

/** Purchases: shops see repeat views and carts; a domain without repeats names all types. */
export const DEFAULT_CONSUMED_TYPES: readonly string[] = ['purchase'];

/** One event as the feature store needs it. */
export interface FeatureEvent {
  userId: string;
  eventId: string;
  itemId: string;
  type: EventType;
  ts: number;
  sessionId: string | null;
  /** The item's categoryL1, or null for an item not in the catalog (counts, no affinity). */
  category: string | null;
  partition: number;
  offset: string;
  /** When the bridge accepted it, epoch ms: the age of its eventId in the window. @default ts */
  receivedAt?: number;
}

export const APPLIED = 0;
export const REDELIVERED = 1;
export const DUPLICATE = 2;
/** What the script did with one event. */
export type ApplyStatus = typeof APPLIED | typeof REDELIVERED | typeof DUPLICATE;

const ARGS_PER_EVENT = 9;
const FIXED_ARGS = 12;

// Lua 5.1 inside Redis: numbers are doubles; integers are formatted with %d (tostring would
// write 1.7e+12 for an epoch-ms), fractions with 6 significant digits.
const SCRIPT = `
local key = KEYS[1]
local channel, user = ARGV[1], ARGV[2]
local halfLife, gap = tonumber(ARGV[3]), tonumber(ARGV[4])
local recentCap, maxCats = tonumber(ARGV[5]), tonumber(ARGV[6])
local dedupCap, ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local consumedCap, consumes = tonumber(ARGV[9]), {}
for t in string.gmatch(ARGV[10], '%S+') do consumes[t] = true end
local dedupAge = tonumber(ARGV[11])
local sharded = ARGV[12] == '1'
local W = {${EVENT_TYPES.map((t) => `${t}=${TYPE_WEIGHTS[t]}`).join(', ')}}
local C = {${EVENT_TYPES.map((t) => `${t}='${COUNT_FIELDS[t]}'`).join(', ')}}

local h, changed, removed = {}, {}, {}
local flat = redis.call('HGETALL', key)
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
${EVENT_IDS_LUA}
local ids = nil
if dedupCap > 0 then
  ids = openEventIds(KEYS[2], dedupCap, dedupAge, h['${USER_FIELDS.dedup}'])
  ids.prepare((#ARGV - ${FIXED_ARGS}) / ${ARGS_PER_EVENT})
end
-- The recent items before this call, returned last (online co-visitation pairs with them).
local prior = h['${USER_FIELDS.recent}'] or ''

local function fmt(v)
  if v == math.floor(v) and math.abs(v) < 9007199254740992 then return string.format('%d', v) end
  return string.format('%.5g', v)
end
local function set(f, v)
  if type(v) == 'number' then v = fmt(v) end
  h[f] = v; changed[f] = true; removed[f] = nil
end
local function del(f)
  h[f] = nil; changed[f] = nil; removed[f] = true
end
local function push(f, item, cap)
  local list = {item}
  for it in string.gmatch(h[f] or '', '%S+') do
    if #list >= cap then break end
    if it ~= item then list[#list + 1] = it end
  end
  set(f, table.concat(list, ' '))
end

local results, applied = {}, 0
for i = ${FIXED_ARGS + 1}, #ARGV, ${ARGS_PER_EVENT} do
  local part, off, idh, item = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local typ, ts, sid, cat = ARGV[i + 4], tonumber(ARGV[i + 5]), ARGV[i + 6], ARGV[i + 7]
  local received = tonumber(ARGV[i + 8])
  local status = 0
  local redelivered = false
  local o = h['${USER_FIELDS.offset}']
  if o then
    local sep = string.find(o, ':', 1, true)
    if string.sub(o, 1, sep - 1) == part and off <= tonumber(string.sub(o, sep + 1)) then
      redelivered = true
    end
  end
  if ids then
    local tag = ids.find(idh)
    -- Seen: a redelivery of the record that applied it, or else a re-send (see event-ids.ts).
    if tag then
      if redelivered and tag == ids.tag(off) then status = 1 else status = 2 end
    end
  end
  if status == 0 and redelivered then status = 1 end
  if status == 0 then
    applied = applied + 1
    set('${USER_FIELDS.offset}', part .. ':' .. fmt(off))
    if ids then ids.add(idh, off, received) end
    set('${USER_FIELDS.total}', (tonumber(h['${USER_FIELDS.total}']) or 0) + 1)
    local cf = C[typ]
    set(cf, (tonumber(h[cf]) or 0) + 1)

    -- Session: the client's id wins; without one, a gap of inactivity starts a new session
    -- whose id is derived from its start (not stored: 'a' .. start).
    local last, cur = tonumber(h['${USER_FIELDS.lastTs}']), h['${USER_FIELDS.sessionId}']
    local fresh
    if sid ~= '' then
      fresh = sid ~= cur
    else
      fresh = last == nil or ts - last > gap
    end
    if fresh then
      if sid ~= '' then set('${USER_FIELDS.sessionId}', sid) elseif cur then del('${USER_FIELDS.sessionId}') end
      set('${USER_FIELDS.sessionStart}', ts); set('${USER_FIELDS.sessionLength}', 1)
    else
      set('${USER_FIELDS.sessionLength}', tonumber(h['${USER_FIELDS.sessionLength}']) + 1)
      if ts < tonumber(h['${USER_FIELDS.sessionStart}']) then set('${USER_FIELDS.sessionStart}', ts) end
    end

    -- Affinities are kept at the reference time sl (see the module comment): a newer event
    -- first decays them all to its time.
    if last ~= nil and ts > last then
      local f = math.pow(2, -(ts - last) / halfLife)
      for field, v in pairs(h) do
        if string.sub(field, 1, ${USER_FIELDS.affinityPrefix.length}) == '${USER_FIELDS.affinityPrefix}' then
          h[field] = fmt(tonumber(v) * f); changed[field] = true
        end
      end
    end
    if last == nil or ts > last then set('${USER_FIELDS.lastTs}', ts) end
    if cat ~= '' then
      local af = '${USER_FIELDS.affinityPrefix}' .. cat
      local add = W[typ]
      if last ~= nil and ts < last then add = add * math.pow(2, -(last - ts) / halfLife) end
      set(af, (tonumber(h[af]) or 0) + add)
      -- Keep the strongest maxCats categories; the one just touched always stays.
      local n, weakest, weakestV = 0, nil, nil
      for field, v in pairs(h) do
        if string.sub(field, 1, ${USER_FIELDS.affinityPrefix.length}) == '${USER_FIELDS.affinityPrefix}' then
          n = n + 1
          local x = tonumber(v)
          if field ~= af and (weakestV == nil or x < weakestV or (x == weakestV and field < weakest)) then
            weakest, weakestV = field, x
          end
        end
      end
      if n > maxCats and weakest then del(weakest) end
    end

    push('${USER_FIELDS.recent}', item, recentCap)
    if typ == 'purchase' then push('${USER_FIELDS.purchased}', item, recentCap) end
    if consumes[typ] and consumedCap > 0 then push('${USER_FIELDS.consumed}', item, consumedCap) end
  end
  results[#results + 1] = status
end

if applied > 0 then
  -- Fields in sorted order: new fields land in the hash in the same order however the events
  -- were chunked, so equal histories give equal bytes.
  local names, args = {}, {}
  for f in pairs(changed) do names[#names + 1] = f end
  table.sort(names)
  for _, f in ipairs(names) do args[#args + 1] = f; args[#args + 1] = h[f] end
  redis.call('HSET', key, unpack(args))
  -- The eventIds moved to their own key (event-ids.ts); the hash's old field goes.
  if h['${USER_FIELDS.dedup}'] then del('${USER_FIELDS.dedup}') end
  if ids then ids.save() end
  local gone = {}
  for f in pairs(removed) do gone[#gone + 1] = f end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  redis.call('EXPIRE', key, ttl)
  -- Sharded: the channel is the user's own, in the user's slot (a script may touch no other).
  if sharded then redis.call('SPUBLISH', channel, user) else redis.call('PUBLISH', channel, user) end
end
results[#results + 1] = prior
return results
`;

type ScriptRedis = RedisClient & {
  recsysApplyFeatures(
    key: string,
    idsKey: string,
    ...args: (string | Buffer | number)[]
  ): Promise<number[]>;
};

/** Applies events to users' features; see the module comment. */
export class SessionFeatureStore {
  readonly #redis: ScriptRedis;
  readonly #fixed: (string | number)[];
  readonly #channel: string;
  readonly #sharded: boolean;

  constructor(redis: RedisClient, options: FeatureOptions) {
    // defineCommand sends EVALSHA and falls back to EVAL once after a script cache flush.
    if (!('recsysApplyFeatures' in redis)) {
      redis.defineCommand('recsysApplyFeatures', { numberOfKeys: 2, lua: SCRIPT });
    }
    this.#redis = redis as ScriptRedis;
    this.#channel = options.channel ?? FEATURE_CHANNEL;
    this.#sharded =
      (options.changeSignal ?? (isCluster(redis) ? 'sharded' : 'channel')) === 'sharded';
    this.#fixed = [
      options.halfLifeMs,
      options.sessionGapMs,
      options.recentItems,
      options.maxCategories,
      options.dedupWindow,
      options.ttlSec,
      options.consumedItems ?? 500,
      (options.consumedTypes ?? DEFAULT_CONSUMED_TYPES).join(' '),
      options.dedupAgeMs ?? 86_400_000,
      this.#sharded ? '1' : '0',
    ];
  }

  /** {@link applyEach}, rejecting when any user's script failed. */
  async apply(events: readonly FeatureEvent[], prior?: Map<string, string[]>) {
    const { statuses, failed } = await this.applyEach(events, prior);
    for (const err of failed.values()) throw err;
    return statuses as ApplyStatus[];
  }

  /**
   * Applies `events` (any users, each user's events in Kafka order) with one script call per
   * user, pipelined in one round trip; each event's status, in input order. A user whose script
   * failed (a Lua error, WRONGTYPE on its key) does not fail the others: each of its events is
   * in `failed` (index -> error) instead (retried, its applied events come back redelivered).
   * Rejects when the round trip failed. With `priorRecent`, each user's recent items before the
   * call (newest first) are put there.
   */
  async applyEach(
    events: readonly FeatureEvent[],
    priorRecent?: Map<string, string[]>,
  ): Promise<{ statuses: (ApplyStatus | undefined)[]; failed: Map<number, Error> }> {
    const byUser = new Map<string, number[]>();
    events.forEach((e, i) => {
      const list = byUser.get(e.userId);
      if (list) list.push(i);
      else byUser.set(e.userId, [i]);
    });
    const pipeline = openPipeline(this.#redis) as unknown as {
      recsysApplyFeatures(key: string, idsKey: string, ...args: (string | Buffer | number)[]): void;
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    const order: number[][] = [];
    for (const [userId, indexes] of byUser) {
      const channel = this.#sharded ? userChangeChannel(userId) : this.#channel;
      const args: (string | Buffer | number)[] = [channel, userId, ...this.#fixed];
      for (const i of indexes) {
        const e = events[i] as FeatureEvent;
        args.push(
          String(e.partition),
          e.offset,
          eventIdHash(e.eventId),
          e.itemId,
          e.type,
          e.ts,
          e.sessionId ?? '',
          e.category ?? '',
          e.receivedAt ?? e.ts,
        );
      }
      pipeline.recsysApplyFeatures(userFeaturesKey(userId), userEventIdsKey(userId), ...args);
      order.push(indexes);
    }
    const replies = await pipeline.exec();
    if (!replies) throw new DependencyUnavailableError('redis', 'pipeline aborted');
    const statuses = new Array<ApplyStatus | undefined>(events.length);
    const failed = new Map<number, Error>();
    replies.forEach(([err, reply], u) => {
      const indexes = order[u] as number[];
      if (err) {
        for (const i of indexes) failed.set(i, err);
        return;
      }
      const values = reply as (number | string)[];
      for (let k = 0; k < indexes.length; k++) {
        statuses[indexes[k] as number] = values[k] as ApplyStatus;
      }
      if (priorRecent) {
        const prior = values[values.length - 1] as string;
        const userId = events[indexes[0] as number]?.userId as string;
        priorRecent.set(userId, prior ? prior.split(' ') : []);
      }
    });
    return { statuses, failed };
  }

  /** Removes users' features and eventId windows (scratch users of the batch). */
  async remove(userIds: readonly string[]): Promise<void> {
    if (userIds.length === 0) return;
    // One UNLINK per user: a user's two keys share a slot, different users' need not.
    const pipeline = openPipeline(this.#redis);
    for (const u of userIds) pipeline.unlink(userFeaturesKey(u), userEventIdsKey(u));
    for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err;
  }
}

/** A user's features as readers (serving, tests) see them, affinities decayed to `now`. */
export interface SessionFeatures {
  total: number;
  counts: Record<EventType, number>;
  session: { id: string; start: number; last: number; length: number } | null;
  /** Category -> decayed affinity at `now`, strongest first. */
  affinities: [string, number][];
  recent: string[];
  purchased: string[];
  /** Items of the consumed types, newest first (serving never shows them again). */
  consumed: string[];
}

/** Reads one user's features; null when the user has none (new, or expired). */
export async function readFeatures(
  redis: RedisClient,
  userId: string,
  now: number,
  halfLifeMs: number,
): Promise<SessionFeatures | null> {
  const h = await redis.hgetall(userFeaturesKey(userId));
  return parseFeatures(h, now, halfLifeMs);
}

/** Turns the raw hash into {@link SessionFeatures}; exported for readers that pipeline HGETALLs. */
export function parseFeatures(
  h: Record<string, string>,
  now: number,
  halfLifeMs: number,
): SessionFeatures | null {
  if (!h[USER_FIELDS.total]) return null;
  const counts = Object.fromEntries(
    EVENT_TYPES.map((t) => [t, Number(h[COUNT_FIELDS[t]] ?? 0)]),
  ) as Record<EventType, number>;
  const at = Number(h[USER_FIELDS.lastTs] ?? now);
  const decay = 2 ** (-Math.max(0, now - at) / halfLifeMs);
  const affinities: [string, number][] = [];
  for (const [field, value] of Object.entries(h)) {
    if (field.startsWith(USER_FIELDS.affinityPrefix)) {
      affinities.push([field.slice(USER_FIELDS.affinityPrefix.length), Number(value) * decay]);
    }
  }
  affinities.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const split = (v: string | undefined): string[] => (v ? v.split(' ') : []);
  const start = h[USER_FIELDS.sessionStart];
  const sessionId = h[USER_FIELDS.sessionId] ?? (start === undefined ? undefined : `a${start}`);
  return {
    total: Number(h[USER_FIELDS.total]),
    counts,
    session: sessionId
      ? {
          id: sessionId,
          start: Number(h[USER_FIELDS.sessionStart]),
          last: Number(h[USER_FIELDS.lastTs]),
          length: Number(h[USER_FIELDS.sessionLength]),
        }
      : null,
    affinities,
    recent: split(h[USER_FIELDS.recent]),
    purchased: split(h[USER_FIELDS.purchased]),
    consumed: split(h[USER_FIELDS.consumed]),
  };
}
