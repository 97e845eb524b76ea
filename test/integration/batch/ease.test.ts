/**
 * The EASE step (`batch/ease.ts` running `batch/python/ease.py` in the project's Python
 * environment, created on first use) against the closed form worked out here: a tiny
 * interaction table whose weights B = -P / diag(P) (P = (X^T X + lambda I)^-1) are computed in
 * the test by Gauss-Jordan, and the most-interacted-items bound.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { buildEase } from '../../../batch/ease.js';
import { loadConfig } from '../../../core/config.js';
import { log } from '../harness.js';

const config = loadConfig({ ...process.env, RECSYS_ENV: 'development' });
let dir = '';

/** Writes (userId, itemId) rows (a repeated pair too: X is binary) as the ETL's Parquet. */
async function interactions(path: string, pairs: [string, string][]): Promise<void> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const values = pairs.map(([u, i]) => `('${u}', '${i}', 1.0)`).join(', ');
  await conn.run(
    `COPY (SELECT * FROM (VALUES ${values}) t(userId, itemId, weight)) TO '${path}' (FORMAT parquet)`,
  );
  conn.closeSync();
  db.closeSync();
}

async function readEase(path: string): Promise<[string, string, number, number][]> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const r = await conn.runAndReadAll(
    `SELECT itemId, neighbourId, score, rank FROM read_parquet('${path}') ORDER BY itemId, rank`,
  );
  const rows = r.getRowsJS().map(([a, b, s, k]) => [String(a), String(b), Number(s), Number(k)]);
  conn.closeSync();
  db.closeSync();
  return rows as [string, string, number, number][];
}

/** The inverse of a small dense matrix (Gauss-Jordan with partial pivoting). */
function inverse(m: number[][]): number[][] {
  const n = m.length;
  const a = m.map((row, i) => [...row, ...row.map((_, j) => (i === j ? 1 : 0))]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[p]![c]!)) p = r;
    [a[c], a[p]] = [a[p]!, a[c]!];
    const d = a[c]![c]!;
    a[c] = a[c]!.map((v) => v / d);
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r]![c]!;
      a[r] = a[r]!.map((v, j) => v - f * a[c]![j]!);
    }
  }
  return a.map((row) => row.slice(n));
}

describe('EASE weights', () => {
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'recsys-ease-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the closed form: per item its positive weights, best first', async () => {
    const pairs: [string, string][] = [
      ['u1', 'a'],
      ['u1', 'b'],
      ['u1', 'b'], // a repeat: X stays binary
      ['u2', 'a'],
      ['u2', 'b'],
      ['u2', 'c'],
      ['u3', 'b'],
      ['u3', 'c'],
      ['u4', 'a'],
      ['u5', 'c'],
      ['u5', 'd'],
    ];
    const path = join(dir, 'inter.parquet');
    await interactions(path, pairs);
    const lam = 1;
    const out = join(dir, 'ease.parquet');
    const cfg = {
      batch: { ...config.batch, easeItems: 10, easeLambda: lam, neighboursPerItem: 2 },
    };
    const res = await buildEase(cfg, log, { paths: { trainInteractions: path } } as never, out);

    const items = ['a', 'b', 'c', 'd'];
    const users = ['u1', 'u2', 'u3', 'u4', 'u5'];
    const has = new Set(pairs.map(([u, i]) => `${u} ${i}`));
    const G = items.map((i) =>
      items.map(
        (j) =>
          users.filter((u) => has.has(`${u} ${i}`) && has.has(`${u} ${j}`)).length +
          (i === j ? lam : 0),
      ),
    );
    const P = inverse(G);
    const B = (h: number, j: number): number => (h === j ? 0 : -P[h]![j]! / P[j]![j]!);
    const want: [string, string, number, number][] = [];
    items.forEach((h, hi) => {
      const top = items
        .map((j, ji) => [j, B(hi, ji)] as const)
        .filter(([, w]) => w > 0)
        .sort((x, y) => y[1] - x[1])
        .slice(0, 2);
      top.forEach(([j, w], r) => want.push([h, j, w, r + 1]));
    });
    const got = await readEase(out);
    assert.equal(res.items, 4);
    assert.equal(res.pairs, want.length);
    assert.deepEqual(
      got.map(([h, j, , r]) => [h, j, r]),
      want.map(([h, j, , r]) => [h, j, r]),
    );
    got.forEach(([h, j, w], k) => assert.ok(Math.abs(w - want[k]![2]) < 1e-9, `${h} -> ${j}`));
    // b is bought with a by two users and with c by two: both are among its weights.
    assert.deepEqual(
      new Set(got.filter(([h]) => h === 'b').map(([, j]) => j)),
      new Set(['a', 'c']),
    );
  });

  it('fits only the most interacted items, and none at 0', async () => {
    const path = join(dir, 'inter2.parquet');
    await interactions(path, [
      ['u1', 'x'],
      ['u1', 'y'],
      ['u2', 'x'],
      ['u2', 'y'],
      ['u3', 'x'],
      ['u3', 'z'],
    ]);
    const out = join(dir, 'ease2.parquet');
    const two = { batch: { ...config.batch, easeItems: 2, easeLambda: 1 } };
    const res = await buildEase(two, log, { paths: { trainInteractions: path } } as never, out);
    assert.equal(res.items, 2);
    const got = await readEase(out);
    assert.ok(got.length > 0);
    assert.ok(
      got.every(([h, j]) => h !== 'z' && j !== 'z'),
      'z is the least interacted',
    );
    const none = { batch: { ...config.batch, easeItems: 0 } };
    const empty = await buildEase(none, log, { paths: { trainInteractions: path } } as never, out);
    assert.deepEqual([empty.items, empty.pairs, (await readEase(out)).length], [0, 0, 0]);
  });
});
