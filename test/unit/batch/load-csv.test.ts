import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { CsvColumnError, detectColumns, loadCsv, parseTimestamp } from '../../../batch/load-csv.js';
import { lakeGlob } from '../../../stream/lake-layout.js';

const TOPIC = 'recsys.events.v1';

async function readLake(dir: string): Promise<Array<Record<string, unknown>>> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  const r = await conn.runAndReadAll(
    `SELECT userId, itemId, type, epoch_ms(ts) AS ts, eventId, hour FROM read_parquet('${lakeGlob(dir, TOPIC)}', hive_partitioning = true) ORDER BY ts, itemId`,
  );
  const rows = r.getRowObjectsJS() as Array<Record<string, unknown>>;
  conn.closeSync();
  db.closeSync();
  return rows;
}

describe('CSV loader', () => {
  it('detects header aliases and honours given names', () => {
    assert.deepEqual(detectColumns(['visitorid', 'timestamp', 'event', 'itemid']), {
      user: 'visitorid',
      item: 'itemid',
      timestamp: 'timestamp',
      type: 'event',
    });
    assert.deepEqual(
      detectColumns(['A', 'B', 'When'], { user: 'a', item: 'B', timestamp: 'when' }),
      {
        user: 'A',
        item: 'B',
        timestamp: 'When',
      },
    );
    assert.throws(() => detectColumns(['user', 'item']), CsvColumnError);
    assert.throws(() => detectColumns(['user', 'item', 'ts'], { type: 'kind' }), CsvColumnError);
  });

  it('parses epoch seconds, epoch ms and ISO times', () => {
    assert.equal(parseTimestamp('1767225600'), 1767225600000);
    assert.equal(parseTimestamp('1767225600123'), 1767225600123);
    assert.equal(parseTimestamp('2026-01-01T00:00:00Z'), 1767225600000);
    assert.ok(Number.isNaN(parseTimestamp('yesterday')));
  });

  it('loads RetailRocket-style rows (ms, type synonyms) into the lake layout', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'csv-'));
    const file = join(dir, 'events.csv');
    await writeFile(
      file,
      'timestamp,visitorid,event,itemid,transactionid\n' +
        '1767225600000,257597,view,355908,\n' +
        '1767229200500,257597,addtocart,248676,\n' +
        '1767229300000,111016,transaction,248676,42\n' +
        'bad,1,view,2,\n',
    );
    const lake = join(dir, 'lake');
    const res = await loadCsv({ file, lakeDir: lake, topic: TOPIC });
    assert.equal(res.rows, 4);
    assert.equal(res.loaded, 3);
    assert.equal(res.skipped, 1);
    const rows = await readLake(lake);
    assert.deepEqual(
      rows.map((r) => [r.userId, r.itemId, r.type, Number(r.ts), r.hour]),
      [
        ['257597', '355908', 'view', 1767225600000, '00'],
        ['257597', '248676', 'add_to_cart', 1767229200500, '01'],
        ['111016', '248676', 'purchase', 1767229300000, '01'],
      ],
    );
    assert.match(
      String(rows[0]?.eventId),
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
    // A reload replaces its files: same rows, same ids.
    await loadCsv({ file, lakeDir: lake, topic: TOPIC });
    assert.deepEqual(await readLake(lake), rows);
  });

  it('loads MovieLens-style rows (seconds, custom names, ;) with categories into a catalog', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'csv-'));
    const file = join(dir, 'ratings.csv');
    await writeFile(
      file,
      'who;movie;rated_at;genre\n' +
        'u 1;m1;1767225600;Comedy\n' +
        'u2;m1;1767225660;Comedy\n' +
        'u2;m2;2026-01-02T10:00:00Z;Sci Fi\n',
    );
    const lake = join(dir, 'lake');
    const catalogPath = join(dir, 'catalog.jsonl');
    const res = await loadCsv({
      file,
      lakeDir: lake,
      topic: TOPIC,
      columns: { user: 'who', item: 'movie', timestamp: 'rated_at', category: 'genre' },
      catalogPath,
    });
    assert.equal(res.loaded, 3);
    assert.equal(res.items, 2);
    const rows = await readLake(lake);
    assert.deepEqual(
      rows.map((r) => [r.userId, r.itemId, r.type, Number(r.ts)]),
      [
        ['u_1', 'm1', 'view', 1767225600000],
        ['u2', 'm1', 'view', 1767225660000],
        ['u2', 'm2', 'view', Date.UTC(2026, 0, 2, 10)],
      ],
    );
    const catalog = (await readFile(catalogPath, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      catalog.map((c) => [c.itemId, c.categoryL1]),
      [
        ['m1', 'Comedy'],
        ['m2', 'Sci_Fi'],
      ],
    );
  });
});
