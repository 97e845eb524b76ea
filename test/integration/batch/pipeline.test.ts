/**
 * The batch half end to end against the real Redis: synthetic events with planted complements
 * go to a temp lake, the ETL and candidate SQL run in DuckDB, co-visitation must find the planted
 * pairs, and publishing switches versions atomically, keeps one for rollback, expires older ones,
 * and redis-cli sees the pointer. Redis database 9, so the stack's own batch keys are untouched.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { Redis } from 'ioredis';
import { buildCandidates, type CandidateResult } from '../../../batch/candidates.js';
import { buildEase } from '../../../batch/ease.js';
import { blendMeta, blendWeightsOf, DEFAULT_BLEND } from '../../../serving/blend.js';
import { runEtl, type EtlResult } from '../../../batch/etl.js';
import { generate, type GenerateResult } from '../../../batch/generate.js';
import { publishCandidates } from '../../../batch/publish.js';
import { CandidateStore, decodeScored } from '../../../store/candidates.js';
import { loadConfig } from '../../../core/config.js';
import { BATCH, itemKey } from '../../../store/keys.js';
import { config as baseConfig, log, requireServices, run } from '../harness.js';

const DB = 9;
const redisUrl = `${baseConfig.redis.url}/${DB}`;
let dir = '';
let config = baseConfig;
let redis: Redis | null = null;
let gen: GenerateResult;
let etl: EtlResult;
let cands: CandidateResult;

async function clearBatchKeys(r: Redis): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'COUNT', 5000);
    cursor = next;
    const mine = keys.filter(
      (k) => BATCH.versionOf(k) !== null || k.startsWith('batch:') || k.startsWith('item:'),
    );
    if (mine.length > 0) await r.unlink(...mine);
  } while (cursor !== '0');
}

async function itemStatsOf(
  path: string,
): Promise<Map<string, { category: string; popularity: number }>> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const r = await conn.runAndReadAll(
    `SELECT itemId, categoryL1, popularity FROM read_parquet('${path}') WHERE categoryL1 IS NOT NULL`,
  );
  const out = new Map<string, { category: string; popularity: number }>();
  for (const [id, category, popularity] of r.getRowsJS()) {
    out.set(String(id), { category: String(category), popularity: Number(popularity) });
  }
  conn.closeSync();
  db.closeSync();
  return out;
}

async function neighboursOf(path: string): Promise<Map<string, string[]>> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const r = await conn.runAndReadAll(
    `SELECT itemId, list(neighbourId ORDER BY rank) FROM read_parquet('${path}') GROUP BY itemId`,
  );
  const out = new Map<string, string[]>();
  for (const [id, list] of r.getRowsJS()) out.set(String(id), (list as string[]).map(String));
  conn.closeSync();
  db.closeSync();
  return out;
}

describe('batch pipeline', () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'batch-'));
    config = loadConfig({
      ...process.env,
      RECSYS_LAKE_DIR: join(dir, 'lake'),
      RECSYS_BATCH_DIR: join(dir, 'batch'),
      RECSYS_REDIS_URL: redisUrl,
    });
  });
  after(async () => {
    if (redis) {
      await clearBatchKeys(redis).catch(() => undefined);
      redis.disconnect();
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('generates, runs the ETL and finds the planted pairs by co-visitation', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
    await clearBatchKeys(redis);
    gen = await generate({
      seed: 11,
      events: 50_000,
      users: 1_000,
      items: 800,
      lakeDir: config.lake.dir,
      topic: config.kafka.topics.events,
      catalogPath: join(config.batch.dir, 'catalog.jsonl'),
      redis,
      log,
    });
    assert.equal(gen.events, 50_000);
    assert.equal(await redis.hget(itemKey('i0'), 'c1'), 'c00');
    // A second copy of the same events (as a replayed lake file would hold) must not count twice.
    await generate({
      seed: 11,
      events: 50_000,
      users: 1_000,
      items: 800,
      lakeDir: join(config.lake.dir, 'copy'),
      topic: config.kafka.topics.events,
      catalogPath: join(dir, 'unused.jsonl'),
    });
    await run('bash', [
      '-c',
      `cd '${join(config.lake.dir, 'copy', `topic=${config.kafka.topics.events}`)}' && for f in */*/*.parquet; do cp "$f" "${join(config.lake.dir, `topic=${config.kafka.topics.events}`)}/\${f%.parquet}-copy.parquet"; done`,
    ]);
    await rm(join(config.lake.dir, 'copy'), { recursive: true });

    etl = await runEtl(config, log);
    assert.equal(etl.counts.raw, 100_000);
    assert.equal(etl.counts.events, 50_000);
    assert.equal(etl.counts.duplicates, 50_000);
    assert.ok(etl.counts.validEvents > 2_000 && etl.counts.validEvents < 10_000);
    assert.ok(etl.counts.sessions > 1_000);

    cands = await buildCandidates(config, log, etl);
    const nb = await neighboursOf(cands.paths.neighbours);
    let found = 0;
    for (const { itemId, complementId } of gen.plantedPairs) {
      if ((nb.get(itemId) ?? []).slice(0, 3).includes(complementId)) found++;
    }
    assert.ok(
      found >= gen.plantedPairs.length * 0.9,
      `${found}/${gen.plantedPairs.length} pairs in top 3`,
    );
    const first = gen.plantedPairs[0]!;
    assert.ok(nb.get(first.itemId)!.slice(0, 3).includes(first.complementId));
    // Another planted pair's complement is no neighbour of this item.
    const other = gen.plantedPairs[1]!.complementId;
    assert.ok(!nb.get(first.itemId)!.slice(0, 3).includes(other));
    assert.ok(cands.counts.users > 900);

    // EASE over the same interactions finds the planted complements too.
    const ease = await buildEase(config, log, etl, join(cands.dir, 'ease.parquet'));
    cands = { ...cands, paths: { ...cands.paths, ease: ease.path } };
    const weights = await neighboursOf(ease.path);
    let easeFound = 0;
    for (const { itemId, complementId } of gen.plantedPairs) {
      if ((weights.get(itemId) ?? []).slice(0, 3).includes(complementId)) easeFound++;
    }
    assert.ok(easeFound >= gen.plantedPairs.length * 0.8, `EASE: ${easeFound} pairs in top 3`);
  });

  it('publishes versions atomically, reads them back, rolls back and expires old ones', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    assert.ok(redis && cands, 'the first test ran');
    const r = redis;
    const v1 = await publishCandidates(config, r, log, cands);
    assert.equal(await new CandidateStore(r).currentVersion(), v1.version);
    assert.ok(v1.keys.users > 900 && v1.keys.items > 700);
    assert.ok(v1.keys.ease > 700, `${v1.keys.ease} EASE lists`);
    const easeList = await new CandidateStore(r).ease(gen.plantedPairs[0]!.itemId, v1.version);
    assert.ok(easeList.ids.slice(0, 3).includes(gen.plantedPairs[0]!.complementId));

    const user = (await new CandidateStore(r).readCandidates('u1')).items;
    assert.ok(user.length > 0 && user.length <= config.batch.candidatesPerUser);
    assert.ok(user.every((c) => c.source === 'covisit' || c.source === 'category'));
    assert.ok(user[0]!.score >= user[user.length - 1]!.score);
    const pair = gen.plantedPairs[0]!;
    const nb = await new CandidateStore(r).readNeighbours([pair.itemId, 'no-such-item']);
    assert.equal(nb.has('no-such-item'), false);
    assert.ok(
      nb
        .get(pair.itemId)!
        .slice(0, 3)
        .some((n) => n.itemId === pair.complementId),
    );
    assert.equal(nb.get(pair.itemId)![0]!.score, 1);
    const pop = await new CandidateStore(r).readPopular(null, 10);
    assert.equal(pop.length, 10);
    const popCat = await new CandidateStore(r).readPopular('c00', 5);
    assert.equal(popCat.length, 5);
    // Every item with statistics has its popularity published in its category's list, with the
    // value the ETL computed (to 4 decimals).
    const stats = await itemStatsOf(etl.paths.itemStats);
    let published = 0;
    for (const cat of new Set([...stats.values()].map((s) => s.category))) {
      const list = decodeScored(await r.get(BATCH.itemPopularity(cat, v1.version)));
      published += list.ids.length;
      list.ids.forEach((id, i) => {
        const want = stats.get(id);
        assert.equal(want?.category, cat, id);
        assert.ok(Math.abs((list.scores[i] as number) - want!.popularity) <= 5e-5, id);
      });
    }
    assert.equal(published, stats.size);
    assert.equal(v1.keys.itemPopularity, new Set([...stats.values()].map((s) => s.category)).size);
    assert.equal((await new CandidateStore(r).readCandidates('nobody')).items.length, 0);

    // The blend's weights ride in the version's meta, where serving reads them.
    const weights = { ease: 0.35, covisDamping: 0.2 };
    const v2 = await publishCandidates(config, r, log, cands, { meta: blendMeta(weights) });
    assert.equal(v2.previous, v1.version);
    assert.equal(await new CandidateStore(r).currentVersion(), v2.version);
    const cli = await run('redis-cli', ['-u', redisUrl, 'GET', BATCH.current]);
    assert.equal(cli.stdout.trim(), String(v2.version));
    const metaCli = await run('redis-cli', [
      '-u',
      redisUrl,
      'HGET',
      BATCH.meta(v2.version),
      'blend_ease',
    ]);
    assert.equal(metaCli.stdout.trim(), '0.35');
    assert.deepEqual(blendWeightsOf(await new CandidateStore(r).meta(v2.version)), weights);
    assert.deepEqual(blendWeightsOf(await new CandidateStore(r).meta(v1.version)), DEFAULT_BLEND);
    // The previous version is kept whole (no TTL) for rollback.
    assert.deepEqual(await r.zrange(BATCH.versions, 0, -1), [
      String(v1.version),
      String(v2.version),
    ]);
    assert.equal(await r.ttl(BATCH.candidates('u1', v1.version)), -1);

    const back = await new CandidateStore(r).rollback(log);
    assert.deepEqual(back, { from: v2.version, to: v1.version });
    assert.equal(await new CandidateStore(r).currentVersion(), v1.version);
    assert.ok((await r.ttl(BATCH.candidates('u1', v2.version))) > 0, 'rolled-back version expires');
    assert.equal((await new CandidateStore(r).readCandidates('u1')).version, v1.version);

    const v3 = await publishCandidates(config, r, log, cands);
    const v4 = await publishCandidates(config, r, log, cands, { retireGraceSec: 0 });
    assert.equal(await new CandidateStore(r).currentVersion(), v4.version);
    assert.deepEqual(await r.zrange(BATCH.versions, 0, -1), [
      String(v3.version),
      String(v4.version),
    ]);
    assert.ok(v4.retired.includes(v1.version));
    assert.equal(await r.exists(BATCH.candidates('u1', v1.version)), 0, 'oldest version deleted');
    assert.equal(await r.exists(BATCH.meta(v1.version)), 0);
    assert.equal(await r.ttl(BATCH.candidates('u1', v3.version)), -1);
    const cli2 = await run('redis-cli', ['-u', redisUrl, 'GET', BATCH.current]);
    assert.equal(cli2.stdout.trim(), String(v4.version));
  });
});
