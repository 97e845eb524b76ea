/**
 * What reranker training reads from the ETL and the candidate build (step 1 of `rerank.ts`):
 * the selected users with their train events and validation interactions (empty for users with
 * history only), the items' catalog facts and train popularity, the popular and trending lists
 * before the cut-off, and the selected users' batch candidates and the neighbours of their
 * recent items (of the cut-off and of the history queries).
 */
import type { EventType } from '../schemas/index.js';
import type { RankItem } from '../serving/rank-features.js';
import type { ScoredList } from '../serving/scored-list.js';
import type { CandidateResult } from './candidates.js';
import { openBatchDb, sqlString } from './duck.js';
import type { EtlResult } from './etl.js';

export interface UserData {
  id: string;
  events: {
    eventId: string;
    itemId: string;
    type: EventType;
    ts: number;
    category: string | null;
  }[];
  relevant: Map<string, EventType[]>;
}

export interface TrainingInputs {
  users: Map<string, UserData>;
  items: Map<string, RankItem>;
  popular: (readonly [string, number])[];
  trending: (readonly [string, number])[];
  batchCands: Map<string, [string, number, string][]>;
  neighbours: Map<string, ScoredList>;
  /** EASE weights of the same items (`batch/ease.ts`; empty when it did not run). */
  ease: Map<string, ScoredList>;
}

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : Number(v ?? 0));

export async function loadTrainingInputs(
  etl: Pick<EtlResult, 'paths' | 'cutoffTs'>,
  cands: Pick<CandidateResult, 'paths'>,
  opts: {
    maxUsers: number;
    recentK: number;
    /** Recent items the profile features sum over (`RECSYS_FEATURES_RECENT_ITEMS`). */
    profileK: number;
    popularK: number;
    historyLabels: number;
  },
): Promise<TrainingInputs> {
  const { maxUsers, recentK, profileK, popularK, historyLabels } = opts;
  const cutoff = etl.cutoffTs;
  const db = await openBatchDb();
  const q = async (sql: string): Promise<unknown[][]> =>
    (await db.conn.runAndReadAll(sql)).getRowsJS() as unknown[][];
  const p = etl.paths;
  try {
    // 1. Users with something to predict after the cut-off and something to start from, and
    //    (history queries) users with enough train events to hold their last ones out.
    const userRows = await q(`
      WITH v AS (SELECT DISTINCT userId FROM read_parquet(${sqlString(p.validInteractions)})),
           t AS (SELECT DISTINCT userId FROM read_parquet(${sqlString(p.trainInteractions)})),
           h AS (SELECT userId FROM read_parquet(${sqlString(p.events)}) WHERE split = 'train'
                 GROUP BY userId HAVING count(*) > ${historyLabels + 1})
      (SELECT v.userId FROM v JOIN t USING (userId) ORDER BY hash(v.userId) LIMIT ${maxUsers})
      UNION
      (SELECT userId FROM h ORDER BY hash(userId) LIMIT ${maxUsers})`);
    const users = new Map<string, UserData>();
    for (const [u] of userRows)
      users.set(String(u), { id: String(u), events: [], relevant: new Map() });
    await db.conn.run(
      `CREATE TEMP TABLE sel AS SELECT unnest(${sqlString(JSON.stringify([...users.keys()]))}::JSON::VARCHAR[]) AS userId`,
    );

    // Train events (the state at the cut-off) and validation interactions (the labels).
    for (const [u, eventId, itemId, type, ts, cat, split] of await q(`
        SELECT e.userId, e.eventId, e.itemId, e.type, e.ts_ms, e.categoryL1, e.split
        FROM read_parquet(${sqlString(p.events)}) e JOIN sel USING (userId)
        ORDER BY e.userId, e.ts_ms, e.eventId`)) {
      const user = users.get(String(u)) as UserData;
      if (split === 'train') {
        user.events.push({
          eventId: String(eventId),
          itemId: String(itemId),
          type: type as EventType,
          ts: num(ts),
          category: cat === 'unknown' || cat === null ? null : String(cat),
        });
      } else {
        const list = user.relevant.get(String(itemId)) ?? [];
        list.push(type as EventType);
        user.relevant.set(String(itemId), list);
      }
    }

    // Items: catalog facts and train popularity.
    const items = new Map<string, RankItem>();
    for (const [itemId, c1, price, createdAt, pop] of await q(`
        SELECT i.itemId, i.categoryL1, i.price, i.createdAt, coalesce(s.popularity, 0)
        FROM read_parquet(${sqlString(p.items)}) i
        LEFT JOIN read_parquet(${sqlString(p.itemStats)}) s USING (itemId)`)) {
      items.set(String(itemId), {
        categoryL1: String(c1),
        price: price === null ? null : num(price),
        createdAt: num(createdAt),
        popularity: num(pop),
      });
    }
    const popular = (
      await q(`
        SELECT itemId, popularity FROM read_parquet(${sqlString(p.itemStats)})
        ORDER BY popularity DESC, itemId LIMIT ${popularK}`)
    ).map(([i, s]) => [String(i), num(s)] as const);
    const trending = (
      await q(`
        SELECT itemId, count(*) AS n FROM read_parquet(${sqlString(p.events)})
        WHERE split = 'train' AND ts_ms >= ${cutoff - 86_400_000}
        GROUP BY itemId ORDER BY n DESC, itemId LIMIT ${popularK}`)
    ).map(([i, s]) => [String(i), num(s)] as const);

    // Batch candidates and item neighbours of the selected users.
    const batchCands = new Map<string, [string, number, string][]>();
    for (const [u, itemId, score, source] of await q(`
        SELECT c.userId, c.itemId, c.score, c.source FROM read_parquet(${sqlString(cands.paths.users)}) c
        JOIN sel USING (userId) ORDER BY c.userId, c.rank`)) {
      const list = batchCands.get(String(u)) ?? [];
      list.push([String(itemId), num(score), String(source)]);
      batchCands.set(String(u), list);
    }
    const recentItems = new Set<string>();
    // The items recent at the cut-off and at each history query (a few events earlier).
    const span = 2 * Math.max(recentK, profileK) + historyLabels;
    for (const user of users.values()) {
      for (const e of user.events.slice(-span)) recentItems.add(e.itemId);
    }
    await db.conn.run(
      `CREATE TEMP TABLE recent AS SELECT unnest(${sqlString(JSON.stringify([...recentItems]))}::JSON::VARCHAR[]) AS itemId`,
    );
    // Each recent item's list (neighbours, EASE weights), best first.
    const listsOf = async (path: string): Promise<Map<string, ScoredList>> => {
      const out = new Map<string, ScoredList>();
      for (const [itemId, ids, scores] of await q(`
          SELECT l.itemId, list(l.neighbourId ORDER BY l.rank), list(l.score ORDER BY l.rank)
          FROM read_parquet(${sqlString(path)}) l JOIN recent USING (itemId)
          GROUP BY l.itemId`)) {
        out.set(String(itemId), {
          ids: (ids as unknown[]).map(String),
          scores: (scores as unknown[]).map(num),
        });
      }
      return out;
    };
    const neighbours = await listsOf(cands.paths.neighbours);
    const ease = cands.paths.ease === undefined ? new Map() : await listsOf(cands.paths.ease);
    return { users, items, popular, trending, batchCands, neighbours, ease };
  } finally {
    db.close();
  }
}
