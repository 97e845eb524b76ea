/**
 * The catalog from outside: a CSV loaded with the CLI is what redis-cli reads; a JSON Lines file
 * published to the items topic reaches Redis through the catalog role, a tombstone deletes, and a
 * bad record in the topic goes to the DLQ; a bad file is refused with its line number. The
 * changes of one chunk apply in offset order (a delete then a re-add ends with the item).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { sleep } from '../../../core/retry.js';
import { ensureTopics } from '../../../stream/kafka.js';
import { startCatalog } from '../../../stream/roles/catalog.js';
import { config, log, requireServices, run, testKafka, uniq } from '../harness.js';
import { AvroReader, deleteTopics, readDecoded } from '../ingest/bridge-process.js';
import { isolatedEnv, testConfig } from '../stream/events.js';

const CATALOG_CLI = join(process.cwd(), 'dist', 'stream', 'catalog-cli.js');
const topics: string[] = [];
after(() => deleteTopics(topics).catch(() => undefined));

/** HGETALL through redis-cli (raw output: one field or value per line; nothing when absent). */
async function hgetall(key: string): Promise<string> {
  return (await run('redis-cli', ['-u', config.redis.url, 'HGETALL', key])).stdout;
}

describe('item catalog', () => {
  it('loads a CSV file with the CLI and refuses a bad one by line', async (t) => {
    if (!(await requireServices(t, 'redis'))) return;
    const p = uniq('csv');
    const dir = await mkdtemp(join(tmpdir(), 'catalog-'));
    const good = join(dir, 'items.csv');
    await writeFile(
      good,
      `itemId,categoryL1,categoryL2,price,isAvailable,createdAt\n${p}-1,shoes,running,89.5,true,2026-01-02T03:04:05Z\n${p}-2,books,,12,false,1767225600000\n`,
    );
    const res = await run('node', [CATALOG_CLI, 'load', good]);
    assert.equal(res.code, 0, res.stderr);
    const h = await hgetall(`item:${p}-1`);
    assert.deepEqual(h.trim().split('\n'), [
      'c1',
      'shoes',
      'av',
      '1',
      'ct',
      String(Date.parse('2026-01-02T03:04:05Z')),
      'c2',
      'running',
      'p',
      '89.5',
    ]);
    const av = await run('redis-cli', ['-u', config.redis.url, 'HGET', `item:${p}-2`, 'av']);
    assert.equal(av.stdout.trim(), '0', 'isAvailable=false stored');
    const bad = join(dir, 'bad.csv');
    await writeFile(bad, `itemId,categoryL1,price,createdAt\n${p}-3,toys,-1,1\n`);
    const refused = await run('node', [CATALOG_CLI, 'load', bad]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /bad\.csv:2: price/);
    assert.equal((await hgetall(`item:${p}-3`)).trim(), '');
  });

  it('applies the items topic: upserts, tombstones, and bad records to the DLQ', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    const p = uniq('topic');
    const env = isolatedEnv();
    topics.push(env.RECSYS_TOPIC_ITEMS as string, env.RECSYS_TOPIC_DLQ as string);
    const dir = await mkdtemp(join(tmpdir(), 'catalog-'));
    const file = join(dir, 'items.jsonl');
    await writeFile(
      file,
      [1, 2]
        .map((i) => JSON.stringify({ itemId: `${p}-${i}`, categoryL1: 'music', createdAt: 1 }))
        .join('\n') + '\n',
    );
    const published = await run('node', [CATALOG_CLI, 'publish', file], {
      env: { ...process.env, ...env },
    });
    assert.equal(published.code, 0, published.stderr);
    const kafka = testKafka('catalog');
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic: env.RECSYS_TOPIC_ITEMS as string,
      messages: [
        { key: `${p}-2`, value: null },
        { key: `${p}-9`, value: '{"itemId": "no category"}' },
      ],
    });
    await producer.disconnect();

    const role = startCatalog({ config: testConfig(env), log, metrics: new Registry() });
    try {
      await role.ready;
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && !(await hgetall(`item:${p}-1`)).includes('music'))
        await sleep(200);
      assert.ok((await hgetall(`item:${p}-1`)).includes('music'));
      const dlq = await readDecoded<{ reason: string; message: string }>(
        new AvroReader(),
        env.RECSYS_TOPIC_DLQ as string,
      );
      assert.equal(dlq.length, 1);
      assert.equal(dlq[0]?.value.reason, 'bad_catalog_record');
      assert.match(dlq[0]?.value.message ?? '', /itemId/);
      assert.equal((await hgetall(`item:${p}-2`)).trim(), '', 'tombstone deleted the item');
    } finally {
      await role.stop();
    }
  });

  it('applies one chunk in offset order: delete then re-add keeps the item', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis'))) return;
    const p = uniq('order');
    const env = isolatedEnv();
    topics.push(env.RECSYS_TOPIC_ITEMS as string, env.RECSYS_TOPIC_DLQ as string);
    const item = (id: string, categoryL1: string): string =>
      JSON.stringify({ itemId: id, categoryL1, createdAt: 1 });
    const kafka = testKafka('catalog');
    await ensureTopics(kafka, testConfig(env).kafka, log);
    const producer = kafka.producer();
    await producer.connect();
    // One partition, one produce call before the role starts: the role's first fetch holds all
    // of it in one chunk (a chunk is up to RECSYS_CONSUMER_CHUNK_SIZE records).
    await producer
      .send({
        topic: env.RECSYS_TOPIC_ITEMS as string,
        messages: [
          { partition: 0, key: `${p}-a`, value: item(`${p}-a`, 'first') },
          { partition: 0, key: `${p}-a`, value: null },
          { partition: 0, key: `${p}-a`, value: item(`${p}-a`, 'readded') },
          { partition: 0, key: `${p}-b`, value: item(`${p}-b`, 'kept') },
          { partition: 0, key: `${p}-b`, value: null },
          { partition: 0, key: `${p}-c`, value: item(`${p}-c`, 'done') },
        ],
      })
      .finally(() => producer.disconnect());

    const role = startCatalog({ config: testConfig(env), log, metrics: new Registry() });
    try {
      await role.ready;
      // c is the chunk's last record: once it is there, the whole chunk was applied.
      const deadline = Date.now() + 30_000;
      const applied = async (): Promise<boolean> =>
        (await hgetall(`item:${p}-c`)).includes('done') &&
        (await hgetall(`item:${p}-a`)).includes('readded');
      while (Date.now() < deadline && !(await applied())) await sleep(200);
      const a = (await hgetall(`item:${p}-a`)).trim().split('\n');
      assert.equal(a[a.indexOf('c1') + 1], 'readded', 'the re-add after the delete wins');
      assert.equal((await hgetall(`item:${p}-b`)).trim(), '', 'the delete after the add wins');
    } finally {
      await role.stop();
    }
  });
});
