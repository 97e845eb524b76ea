/**
 * The eventIds a user's applied events had, for a configurable window (the latest `cap` of them,
 * none older than `ageMs`), so an event a client or the bridge re-sent is recognised however
 * many events came between. It lives in `{u:<userId>}:e` ({@link userEventIdsKey}), beside the
 * user's features in the same cluster slot, and is read and written by the feature script
 * itself (`session-features.ts` includes {@link EVENT_IDS_LUA}): the check and the apply are one
 * atomic script, so a crash between them cannot apply an event twice.
 *
 * Layout: one binary string (one key per user, not a set or hash per user: a sorted set costs
 * about 100 bytes per member, a packed string 8).
 *   bytes 1-2    k, the number of time buckets (uint16, big-endian)
 *   k x 8 bytes  per bucket, oldest first: its number (receivedAt / bucketMs) and how many
 *                entries it holds (uint32 each)
 *   n x 8 bytes  the entries, oldest first, bucket by bucket: 6 bytes of MD5 of the lower-cased
 *                eventId ({@link eventIdHash}) and 2 bytes of the Kafka offset that applied it
 *                (mod 65536, the *tag*)
 * Age is the bridge's `receivedAt` (server time; a record keeps it on redelivery, so the window
 * does not depend on when or how fast a consumer reads). Buckets are `ageMs / AGE_BUCKETS` wide;
 * a bucket leaves once the user's newest bucket is more than AGE_BUCKETS past it, so every entry
 * stays at least `ageMs`. Past `cap` entries the oldest go. The key expires `ageMs` plus one
 * bucket after its last write.
 *
 * The tag tells a redelivery from a re-send: a record at or below the user's last applied offset
 * whose eventId is in the window is a redelivery only if the offset that applied the eventId is
 * its own; otherwise it was a duplicate the first time too, and stays one (the trending counts
 * count redeliveries, never duplicates, `stream/roles/features.ts`).
 *
 * Lookup is `string.find` over the packed entries (about 5 µs over 10,000 entries, measured in
 * Redis 7.0 Lua), or a Lua table built once when a call checks more than LOOKUP_TABLE_AT events
 * (building it for 10,000 entries took 2 ms, the cost of about 370 finds).
 *
 * @example
 *   decodeEventIds(await redis.getBuffer(userEventIdsKey('u42')));
 *   // { buckets: [{ bucket: 489_000, count: 3 }], entries: [{ hash, tag }, ...] }
 */
import { createHash } from 'node:crypto';

/** Time buckets per age window: the age bound is met to within 1/AGE_BUCKETS. */
export const AGE_BUCKETS = 12;
/** Events in one call from which a lookup table beats a `string.find` per event. */
export const LOOKUP_TABLE_AT = 256;
/** Bytes of one entry: 6 of eventId hash, 2 of offset tag. */
export const ENTRY_BYTES = 8;

/**
 * 6 bytes of MD5 over the lower-cased eventId. With 10,000 eventIds kept, a new event is taken
 * for a re-send with probability 10^4 / 2^48 (about 4e-11).
 */
export function eventIdHash(eventId: string): Buffer {
  return createHash('md5').update(eventId.toLowerCase()).digest().subarray(0, 6);
}

/**
 * Lua (Redis 7.0, with its `struct` library) defining `openEventIds(key, cap, ageMs, legacy)`,
 * which loads the window and returns
 *   find(hash) -> nil, or the tag of the offset that applied it;
 *   add(hash, offset, receivedAt) -> remembers an applied event;
 *   save() -> trims by age and count and writes the key (only when something was added).
 * `legacy` is the packed 6-byte hashes (newest first) that the feature hash kept before this
 * window existed: they are looked up, and moved into the window on the first write (tag 65535:
 * unknown, so their redeliveries count as duplicates).
 */
export const EVENT_IDS_LUA = `
local function openEventIds(key, cap, ageMs, legacy)
  local E, bucketMs = ${ENTRY_BYTES}, math.max(1, math.floor(ageMs / ${AGE_BUCKETS}))
  local heads, data = {}, ''
  local blob = redis.call('GET', key)
  if blob then
    local k = struct.unpack('>I2', blob, 1)
    for j = 0, k - 1 do
      local b, c = struct.unpack('>I4I4', blob, 3 + 8 * j)
      heads[#heads + 1] = {b, c}
    end
    data = string.sub(blob, 3 + 8 * k)
  elseif legacy and #legacy >= 6 then
    -- Oldest first, each with the unknown tag; filed under the first new event's bucket.
    local parts = {}
    for j = #legacy - 5, 1, -6 do parts[#parts + 1] = string.sub(legacy, j, j + 5) .. '\\255\\255' end
    data = table.concat(parts)
    heads[1] = {-1, #parts}
  end
  local added, addedTag, tbl = {}, {}, nil
  local self = {}
  -- Called with the number of events the script will check, before the first find.
  function self.prepare(events)
    if events < ${LOOKUP_TABLE_AT} or #data < ${LOOKUP_TABLE_AT} * E then return end
    tbl = {}
    for j = 1, #data, E do tbl[string.sub(data, j, j + 5)] = string.sub(data, j + 6, j + 7) end
  end
  function self.find(h)
    local t = addedTag[h]
    if t then return t end
    if tbl then return tbl[h] end
    local from = 1
    while true do
      local p = string.find(data, h, from, true)
      if not p then return nil end
      if (p - 1) % E == 0 then return string.sub(data, p + 6, p + 7) end
      from = p + 1
    end
  end
  function self.tag(offset)
    return struct.pack('>I2', offset % 65536)
  end
  function self.add(h, offset, receivedAt)
    local t = self.tag(offset)
    added[#added + 1] = {h .. t, math.floor(receivedAt / bucketMs)}
    addedTag[h] = t
  end
  function self.save()
    if #added == 0 then return end
    local parts = {}
    for _, a in ipairs(added) do
      local last = heads[#heads]
      -- Buckets only grow: an entry received earlier than the newest joins the newest.
      if last and (last[1] >= a[2] or last[1] == -1) then
        if last[1] == -1 then last[1] = a[2] end
        last[2] = last[2] + 1
      else
        heads[#heads + 1] = {a[2], 1}
      end
      parts[#parts + 1] = a[1]
    end
    local total, cut, first = 0, 0, 1
    for _, hd in ipairs(heads) do total = total + hd[2] end
    local newest = heads[#heads][1]
    -- Age: whole buckets that left the window.
    while first < #heads and heads[first][1] < newest - ${AGE_BUCKETS} do
      total = total - heads[first][2]
      cut = cut + heads[first][2]
      first = first + 1
    end
    -- Count: the oldest entries past the cap.
    while total > cap do
      local hd = heads[first]
      local drop = math.min(hd[2], total - cap)
      hd[2] = hd[2] - drop
      total = total - drop
      cut = cut + drop
      if hd[2] == 0 then first = first + 1 end
    end
    local out = {''}
    for j = first, #heads do out[#out + 1] = struct.pack('>I4I4', heads[j][1], heads[j][2]) end
    out[1] = struct.pack('>I2', #heads - first + 1)
    out[#out + 1] = string.sub(data .. table.concat(parts), cut * E + 1)
    redis.call('SET', key, table.concat(out), 'PX', ageMs + bucketMs)
  end
  return self
end
`;

/** One remembered event: its eventId hash and the tag of the offset that applied it. */
export interface EventIdEntry {
  hash: Buffer;
  tag: number;
}

/** The window as stored (tests and measurements). */
export interface EventIdWindow {
  buckets: { bucket: number; count: number }[];
  entries: EventIdEntry[];
}

/** Decodes the stored window; an absent key is an empty window. */
export function decodeEventIds(blob: Buffer | null): EventIdWindow {
  const out: EventIdWindow = { buckets: [], entries: [] };
  if (!blob || blob.length < 2) return out;
  const k = blob.readUInt16BE(0);
  for (let j = 0; j < k; j++) {
    out.buckets.push({ bucket: blob.readUInt32BE(2 + 8 * j), count: blob.readUInt32BE(6 + 8 * j) });
  }
  for (let p = 2 + 8 * k; p + ENTRY_BYTES <= blob.length; p += ENTRY_BYTES) {
    out.entries.push({ hash: blob.subarray(p, p + 6), tag: blob.readUInt16BE(p + 6) });
  }
  return out;
}
