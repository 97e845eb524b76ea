/**
 * `eval:replay` end to end on the backbone: a generated log in MovieLens u.data format (40
 * users, 60 items in 4 groups; each user rates 12 items of its group in the group's order and 3
 * others), history 80% through ingest, the batch, 100 replayed events over MQTT; then the
 * report's shape, its metrics against the ranks it recorded, and that the run left nothing
 * behind (Redis database, topics).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { config, requireServices, testKafka } from '../harness.js';
import { NTH_BUCKETS, rankMetrics } from '../../../bench/replay/metrics.js';
import type { ReplayReport } from '../../../bench/replay/report.js';
import { LOCK_KEY } from '../../../bench/replay/stack.js';

const DB = 4;
const K = 20;

/** 600 lines `user item rating ts`, with structure co-visitation can learn. */
function generateLog(): string {
  const lines: string[] = [];
  let seed = 42;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const t0 = 880_000_000;
  for (let step = 0; step < 15; step++) {
    for (let u = 1; u <= 40; u++) {
      const group = u % 4;
      // Steps 0..11: the group's items in the group's order, from a user-specific start.
      const item =
        step < 12
          ? group * 15 + ((u + step) % 15) + 1
          : ((group + 1 + rand(3)) % 4) * 15 + rand(15) + 1;
      const rating = step < 12 ? 4 + rand(2) : 1 + rand(3);
      lines.push(`${u}\t${item}\t${rating}\t${t0 + step * 3600 + u * 60}`);
    }
  }
  return lines.join('\n') + '\n';
}

function runReplay(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(process.cwd(), 'dist/bench/replay/main.js'), ...args],
      {
        env: { ...process.env, RECSYS_LOG_LEVEL: 'error' },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-20_000)));
    const timer = setTimeout(() => child.kill('SIGINT'), 300_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

describe('eval:replay end to end', () => {
  it('replays 100 events of a generated u.data log and reports consistent metrics', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis', 'mosquitto'))) return;
    const dir = await mkdtemp(join(tmpdir(), 'replay-it-'));
    try {
      const file = join(dir, 'u.data');
      await writeFile(file, generateLog());
      const res = await runReplay([
        ...['--file', file, '--history', '0.8', '--events', '100', '--k', String(K)],
        ...['--db', String(DB), '--concurrency', '8', '--out', dir, '--user-prefix', 'it-replay.'],
      ]);
      assert.equal(res.code, 0, res.stderr);
      // The newest history events went through the served feed, and the batch ran again on them.
      assert.match(res.stderr, /\[warm-up\] done/);
      assert.match(res.stderr, /\[batch on the logged feeds\] done/);
      const name = (await readdir(dir)).find((f) => /^replay-u-.*\.json$/.test(f));
      assert.ok(name, 'a JSON report');
      const report = JSON.parse(await readFile(join(dir, name), 'utf8')) as ReplayReport;
      const md = await readFile(join(dir, name.replace(/\.json$/, '.md')), 'utf8');
      assert.match(md, /\| system \| HR@20 \| MRR@20 \| NDCG@20 \|/);

      assert.equal(report.log.events, 600);
      assert.equal(report.log.users, 40);
      assert.equal(report.plan.history, 480);
      assert.equal(report.plan.replayed, 100);
      assert.equal(report.served.feedErrors, 0);
      assert.equal(report.served.applyTimeouts, 0);
      assert.equal(report.eventIds.length, 100);
      assert.deepEqual(Object.keys(report.systems), [
        'served',
        'popularity',
        'popularity_new',
        'covis',
        'covis_new',
      ]);
      for (const [system, s] of Object.entries(report.systems)) {
        const ranks = report.ranks[system] ?? [];
        assert.equal(ranks.length, 100, system);
        // The reported metrics are those of the recorded ranks.
        const m = rankMetrics(ranks, K);
        assert.equal(s.events, 100, system);
        assert.equal(s.hits, m.hits, system);
        for (const key of ['hr', 'mrr', 'ndcg'] as const) {
          assert.ok(Math.abs(s[key] - m[key]) < 1e-12, `${system} ${key}`);
        }
        // One relevant item: MRR <= NDCG <= HR.
        assert.ok(s.mrr <= s.ndcg + 1e-12 && s.ndcg <= s.hr + 1e-12, system);
        assert.equal(s.cold.events + s.warm.events, 100, system);
        assert.equal(s.cold.hits + s.warm.hits, s.hits, system);
        const nth = NTH_BUCKETS.map((b) => s.byNth[b.label]?.events ?? 0);
        assert.equal(
          nth.reduce((a, b) => a + b, 0),
          100,
          system,
        );
        assert.ok(s.coverage > 0 && s.coverage <= 1, `${system} coverage`);
        assert.ok(s.consumedShare >= 0 && s.consumedShare <= 1, `${system} consumed`);
      }
      const served = report.systems.served;
      assert.ok(served);
      assert.equal(
        Object.values(served.hitsBySource).reduce((a, b) => a + b, 0),
        served.hits,
        'every served hit has a source',
      );
      const slots = Object.values(served.slotsBySource).reduce((a, b) => a + b, 0);
      assert.ok(slots >= served.hits && slots <= 100 * K, `${slots} slots by source`);
      assert.equal(report.systems.popularity_new?.consumedShare, 0);
      // The log has structure: co-visitation finds some of it.
      assert.ok((report.systems.covis_new?.hr ?? 0) > 0.1, 'co-visitation learns the groups');
      for (const p of [report.served.latencyMs, report.served.freshnessMs]) {
        assert.ok(p.p50 !== undefined && p.p50 > 0 && (p.p99 ?? 0) >= p.p50);
      }
      t.diagnostic(
        `HR@20 served ${served.hr.toFixed(3)}, covis ${report.systems.covis?.hr.toFixed(3)}, popularity ${report.systems.popularity?.hr.toFixed(3)}; freshness p50 ${report.served.freshnessMs.p50?.toFixed(1)} ms`,
      );

      // Nothing left behind: the database is empty and the run's topics are gone.
      const redis = new Redis(`${config.redis.url}/${DB}`, { maxRetriesPerRequest: 2 });
      try {
        assert.equal(await redis.dbsize(), 0);
      } finally {
        redis.disconnect();
      }
      const admin = testKafka('replay-it').admin();
      await admin.connect();
      try {
        const id = String(report.options.stackId);
        assert.deepEqual(
          (await admin.listTopics()).filter((topic) => topic.startsWith(id)),
          [],
        );
      } finally {
        await admin.disconnect();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses a Redis database another run holds, and leaves that run's keys alone", async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis', 'mosquitto'))) return;
    const db = DB;
    const redis = new Redis(`${config.redis.url}/${db}`, { maxRetriesPerRequest: 2 });
    const dir = await mkdtemp(join(tmpdir(), 'replay-it-'));
    try {
      await redis.set(LOCK_KEY, 'replay-other', 'EX', 60);
      await redis.set('their-key', '1');
      const file = join(dir, 'u.data');
      await writeFile(file, generateLog());
      const res = await runReplay([
        ...['--file', file, '--events', '10', '--db', String(db), '--out', dir],
      ]);
      assert.notEqual(res.code, 0);
      assert.match(res.stderr, /Redis database 4 is in use by another run \(replay-other\)/);
      assert.equal(await redis.get('their-key'), '1');
      assert.equal(await redis.get(LOCK_KEY), 'replay-other');
      assert.deepEqual((await readdir(dir)).sort(), ['u.data'], 'no report');
    } finally {
      await redis.del(LOCK_KEY, 'their-key');
      redis.disconnect();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
