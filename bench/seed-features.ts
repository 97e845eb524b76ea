/**
 * Gives bench users live session features, so a feed request does the work an active user's
 * does (neighbours of recent items, trending and popular lists of their top categories), not
 * the cheaper new-user path.
 *
 * Each user's last `perUser` events in the lake are applied through the stream's own
 * `SessionFeatureStore`, shifted in time so each user's newest event happened `agoMs` before now (a
 * live session, affinities barely decayed). The feature-change signal goes to a channel of the
 * bench's own, so no server reacts to the seeding.
 *
 * @example
 *   const applied = await seedFeatures(config, redis, ['u0', 'u1'], 20);
 */
import type { Config } from '../core/index.js';
import { openBatchDb, sqlString } from '../batch/duck.js';
import type { EventType } from '../schemas/index.js';
import { CatalogStore } from '../store/catalog.js';
import { SessionFeatureStore, type FeatureEvent } from '../store/session-features.js';
import { lakeGlob } from '../stream/lake-layout.js';
import type { RedisClient } from '../store/redis.js';

export async function seedFeatures(
  config: Readonly<Config>,
  redis: RedisClient,
  users: readonly string[],
  perUser: number,
  agoMs = 60_000,
): Promise<number> {
  const db = await openBatchDb();
  let rows: Record<string, unknown>[];
  try {
    const list = users.map(sqlString).join(', ');
    const read = await db.conn.runAndReadAll(`
      SELECT eventId, userId, itemId, type, sessionId, epoch_ms(ts) AS ts FROM (
        SELECT *, row_number() OVER (PARTITION BY userId ORDER BY ts DESC, eventId) AS k
        FROM read_parquet(${sqlString(lakeGlob(config.lake.dir, config.kafka.topics.events))},
          hive_partitioning = true)
        WHERE userId IN (${list}))
      WHERE k <= ${perUser}
      ORDER BY userId, ts, eventId`);
    rows = read.getRowObjects() as Record<string, unknown>[];
  } finally {
    db.close();
  }
  if (rows.length === 0) return 0;

  // Per user: their newest event moves to `agoMs` ago (every bench user is active right now).
  const newest = new Map<string, number>();
  for (const r of rows) {
    const u = String(r.userId);
    newest.set(u, Math.max(newest.get(u) ?? 0, Number(r.ts)));
  }
  const now = Date.now();
  const catalog = new CatalogStore(redis, { cacheTtlMs: 60_000, cacheSize: 1_000_000 });
  const items = await catalog.get(rows.map((r) => String(r.itemId)));
  const events: FeatureEvent[] = rows.map((r, i) => ({
    userId: String(r.userId),
    eventId: String(r.eventId),
    itemId: String(r.itemId),
    type: String(r.type) as EventType,
    ts: Number(r.ts) + now - agoMs - (newest.get(String(r.userId)) as number),
    sessionId: r.sessionId === null ? null : String(r.sessionId),
    category: items.get(String(r.itemId))?.categoryL1 ?? null,
    partition: 0,
    offset: String(i),
  }));
  const store = new SessionFeatureStore(redis, {
    ...config.features,
    channel: 'bench:seed:changed',
    // Also on a Redis Cluster, whose default would be the users' own (sharded) channels.
    changeSignal: 'channel',
  });
  for (let i = 0; i < events.length; i += 2000) await store.apply(events.slice(i, i + 2000));
  return events.length;
}
