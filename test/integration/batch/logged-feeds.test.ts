/**
 * Training rows from the served log against the real Kafka and schema registry: feeds written by
 * the feed server's own served-log writer, some carrying their candidates and features, events as
 * the ETL writes them (`events.parquet`); `readLoggedFeeds` labels each logged feed with the
 * user's events up to the next feed, drops feeds nothing followed, and splits by time. The topic
 * is also read with kcat, to show the records are plain Confluent-framed Avro on the wire.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DuckDBInstance } from '@duckdb/node-api';
import { Registry } from 'prom-client';
import { readLoggedFeeds } from '../../../batch/logged-feeds.js';
import type { ServedFeed } from '../../../schemas/types.js';
import { logCandidates } from '../../../serving/feed/feature-log.js';
import { FEATURE_COUNT } from '../../../serving/rank-features.js';
import { startServedLog } from '../../../serving/served-log.js';
import { deleteTopics } from '../ingest/bridge-process.js';
import { kcatKafka, log, requireServices, run } from '../harness.js';
import { isolatedEnv, testConfig } from '../stream/events.js';

describe('logged feeds', () => {
  const env = isolatedEnv();
  const cfg = testConfig(env);
  let dir = '';
  let ran = false;

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    if (ran) await deleteTopics(Object.values(cfg.kafka.topics)).catch(() => undefined);
  });

  test('are labelled with what followed them, up to the next feed, and split by time', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry'))) return;
    ran = true;
    dir = await mkdtemp(join(tmpdir(), 'logged-feeds-'));
    const T = Date.now() - 60_000;
    // Row r of a feed's matrix holds r + the feed's tag in every column.
    const rows = (ids: string[], tag: number) => {
      const m = new Float32Array(ids.length * FEATURE_COUNT);
      ids.forEach((_, r) => m.fill(tag + r, r * FEATURE_COUNT, (r + 1) * FEATURE_COUNT));
      return logCandidates(m, ids.length, ids);
    };
    const feed = (
      requestId: string,
      userId: string,
      ts: number,
      logged: ServedFeed['candidates'],
    ) => ({
      requestId,
      userId,
      ts,
      items: [{ itemId: 'a', score: 1, source: 'batch' }],
      modelVersion: 'blend',
      latencyMs: 1,
      candidates: logged,
    });
    const odd = { ...rows(['a'], 0), featureNames: ['something_else'] };
    odd.features = Buffer.alloc(4);
    const served = startServedLog({ config: cfg, log, metrics: new Registry() });
    const f1 = feed('f1', 'u1', T, rows(['a', 'b', 'c'], 100));
    served.write(f1);
    served.write(f1); // the served log is at least once: a copy is one feed
    served.write(feed('f2', 'u1', T + 1000, null)); // not logged: ends f1's window
    served.write(feed('f3', 'u1', T + 2000, rows(['a', 'd'], 200)));
    served.write(feed('f4', 'u2', T + 500, rows(['a'], 300))); // nothing follows
    served.write(feed('f5', 'u3', T + 100, odd)); // other features
    await served.flush();
    await served.close();

    const events = join(dir, 'events.parquet');
    const db = await DuckDBInstance.create(':memory:');
    const conn = await db.connect();
    const ev = [
      ['e1', 'u1', 'b', 'purchase', T + 500],
      ['e2', 'u1', 'c', 'view', T + 600],
      ['e3', 'u1', 'a', 'view', T + 1500], // after f2: nobody's label (f2 was not logged)
      ['e4', 'u1', 'd', 'add_to_cart', T + 2500],
      ['e5', 'u3', 'a', 'view', T + 200],
    ];
    const values = ev.map((e) => `('${e[0]}', '${e[1]}', '${e[2]}', '${e[3]}', ${e[4]})`).join(',');
    await conn.run(
      `COPY (SELECT * FROM (VALUES ${values}) v(eventId, userId, itemId, type, received_ms))
       TO '${events}' (FORMAT parquet)`,
    );
    conn.closeSync();
    db.closeSync();

    const got = await readLoggedFeeds(cfg, log, events, { windowMs: 60_000, evalShare: 0.5 });
    assert.deepEqual(got.counts, { served: 5, logged: 4, labelled: 2, otherFeatures: 1 });
    assert.deepEqual(
      got.train.map((g) => g.key),
      ['f1'],
    );
    assert.deepEqual(
      got.eval.map((g) => g.key),
      ['f3'],
    );
    const [first] = got.train;
    assert.deepEqual(first?.ids, ['a', 'b', 'c']);
    assert.deepEqual([...(first?.labels ?? [])], [0, 3, 1]);
    assert.equal(first?.features[2 * FEATURE_COUNT + 4], 102, 'row 2 is c as served');
    assert.deepEqual([...(got.eval[0]?.labels ?? [])], [0, 2]);

    // Past the bound the newest stay; the lookback is by Kafka's timestamps (written just now).
    const capped = await readLoggedFeeds(cfg, log, events, {
      windowMs: 60_000,
      evalShare: 0,
      maxGroups: 1,
    });
    assert.deepEqual(
      capped.train.map((g) => g.key),
      ['f3'],
    );
    await new Promise((r) => setTimeout(r, 50));
    const none = await readLoggedFeeds(cfg, log, events, { windowMs: 60_000, lookbackMs: 10 });
    assert.equal(none.counts.served, 0);

    // kcat, not our client, reads the records: each user's, a logged one larger than its rows.
    const res = await run('kcat', [
      ...kcatKafka,
      ...['-C', '-t', cfg.kafka.topics.served, '-o', 'beginning', '-e', '-q'],
      ...['-f', '%k %S\\n'],
    ]);
    assert.equal(res.code, 0, res.stderr);
    // At least once: a produce retried after a leader change (a new topic) writes a batch again.
    const lines = res.stdout.trim().split('\n');
    assert.ok(lines.length >= 6, `${lines.length} records`);
    assert.deepEqual(new Set(lines.map((l) => l.split(' ')[0])), new Set(['u1', 'u2', 'u3']));
    assert.ok(
      lines.some((l) => l.startsWith('u1 ') && Number(l.split(' ')[1]) > 3 * FEATURE_COUNT * 4),
    );
  });
});
