/**
 * The indexer against the real services: Avro records produced to its (unique) topics end up in
 * its (unique-namespace) data streams exactly once, found by ECS queries; duplicates and a whole
 * redelivery by a new consumer group change nothing; a document Elasticsearch refuses and a
 * record that is not Avro land in the DLQ with the exact bytes (read back with kcat); a broken
 * record in the DLQ topic itself is not dead-lettered again.
 *
 * The indexer runs in this process (`startIndexer` with its own config, as `stream/main.ts`
 * would build it). Data streams cannot be deleted on the integ-test Elasticsearch, so `after`
 * empties and closes them (see `dropDataStream`).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import type { DlqRecord, UserEvent } from '../../../schemas/types.js';
import { startIndexer } from '../../../stream/roles/indexer.js';
import type { StreamRole } from '../../../core/index.js';
import { requireServices } from '../harness.js';
import { AvroReader, readTopic } from '../ingest/bridge-process.js';
import {
  count,
  docsMetric,
  IndexerFixture,
  makeEvents,
  makeFeeds,
  quiet,
  waitFor,
} from './support.js';

/** Distinct events of the first wave (and of the live wave). */
const N = Number(process.env.RECSYS_TEST_INDEXER_EVENTS ?? 2000);
/** Events written a second time (same eventId, same bytes). */
const D = Math.min(300, N);
/** Served feeds. */
const S = 150;
describe('indexer: Kafka → Elasticsearch', () => {
  const fx = new IndexerFixture();
  const { id, config, es, streams, topics } = fx;
  const metrics1 = new Registry();
  let indexer: StreamRole | null = null;
  /** Every distinct event written, and the bytes Kafka holds for each eventId. */
  const events: UserEvent[] = [];
  const encoded = new Map<string, Buffer>();
  const garbage = Buffer.from(`not avro at all ${id}`);
  const garbageKey = `u-bad-${id}`;
  const dlqGarbage = Buffer.from([0, 0, 0, 0, 0, 1, 2, 3]);
  let oversized: UserEvent;
  let startError: Error | null = new Error('not started');

  const sendEvents = async (batch: UserEvent[]): Promise<void> => {
    const values = await fx.sendEvents(batch);
    batch.forEach((e, i) => encoded.set(e.eventId, values[i] as Buffer));
  };

  before(async () => {
    // A failure here is reported by each test, after its service guard (which may skip).
    try {
      await fx.setup();
      // Wave 1, all in Kafka before the indexer starts: N events, D of them twice, S feeds,
      // an event Elasticsearch must refuse (a keyword past Lucene's 32 KiB term limit), a
      // record that is not Avro, and a broken record in the DLQ topic itself.
      events.push(...makeEvents(id, N));
      await sendEvents(events);
      await sendEvents(events.slice(0, D));
      oversized = { ...(makeEvents(id, 1, N)[0] as UserEvent), itemId: 'x'.repeat(40_000) };
      await sendEvents([oversized]);
      await fx.send(topics.events, [{ key: garbageKey, value: garbage }]);
      await fx.send(topics.dlq, [{ key: garbageKey, value: dlqGarbage }]);
      await fx.sendFeeds(makeFeeds(id, S));
      startError = null;
    } catch (err) {
      startError = err as Error;
    }
  });

  after(async () => {
    await indexer?.stop().catch(() => undefined);
    await fx.cleanup();
  });

  test(
    'indexes every distinct event once; duplicates are counted, not indexed',
    { timeout: 120_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka', 'registry', 'elasticsearch'))) return;
      assert.ifError(startError);
      indexer = startIndexer({ config, log: quiet, metrics: metrics1 });
      await indexer.ready;
      const t0 = performance.now();
      const indexed = await waitFor(
        () => count(es, streams.events),
        (n) => n >= N,
        60_000,
      );
      const ms = performance.now() - t0;
      assert.equal(indexed, N, 'distinct events in the data stream');
      // Everything consumed: the duplicates met their originals, the refused one is counted.
      const dups = await waitFor(
        () => docsMetric(metrics1, 'events', 'duplicate'),
        (n) => n >= D,
        30_000,
      );
      assert.equal(dups, D, 'duplicates counted');
      assert.equal(await docsMetric(metrics1, 'events', 'created'), N);
      const served = await waitFor(
        () => count(es, streams.served),
        (n) => n >= S,
        30_000,
      );
      assert.equal(served, S);
      assert.equal(await count(es, streams.events), N, 'no duplicate slipped in late');
      t.diagnostic(
        `first wave: indexer ready → ${N} distinct events searchable (of ${N + D} records, ${D} duplicates): ${Math.round(ms)} ms`,
      );
    },
  );

  test(
    'documents are ECS: user.id and event.action queries work',
    { timeout: 60_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka', 'registry', 'elasticsearch'))) return;
      assert.ifError(startError);
      const user = `u7-${id}`;
      const mine = events.filter((e) => e.userId === user);
      assert.ok(mine.length > 0);
      assert.equal(await count(es, streams.events, { term: { 'user.id': user } }), mine.length);

      const res = await es.search({
        index: streams.events,
        size: 0,
        aggs: { types: { terms: { field: 'event.action', size: 10 } } },
      });
      const buckets = (
        res.aggregations?.types as { buckets: Array<{ key: string; doc_count: number }> }
      ).buckets;
      const got = Object.fromEntries(buckets.map((b) => [b.key, b.doc_count]));
      const want: Record<string, number> = {};
      for (const e of events) want[e.type] = (want[e.type] ?? 0) + 1;
      assert.deepEqual(got, want);

      // One document field by field, found by its eventId (the _id).
      const e = events.find((x) => x.context !== null && x.sessionId !== null) as UserEvent;
      const hit = await es.search<Record<string, unknown>>({
        index: streams.events,
        query: { term: { 'event.id': e.eventId } },
      });
      assert.equal(hit.hits.hits.length, 1);
      assert.equal(hit.hits.hits[0]?._id, e.eventId);
      const doc = hit.hits.hits[0]?._source as Record<string, Record<string, unknown>>;
      assert.equal(doc['@timestamp'], e.ts);
      assert.deepEqual(doc.user, { id: e.userId });
      assert.equal(doc.event?.action, e.type);
      assert.equal(doc.event?.created, e.receivedAt);
      assert.equal(doc.recsys?.item_id, e.itemId);
      assert.equal(doc.recsys?.session_id, e.sessionId);
      assert.equal(doc.recsys?.position, e.context?.position);
      assert.deepEqual(doc.user_agent, { device: { name: e.context?.device } });

      // Date math on @timestamp and a served-feed latency aggregation in base units.
      const recent = await count(es, streams.events, {
        range: { '@timestamp': { gte: 'now-1d' } },
      });
      assert.equal(recent, N);
      const latency = await es.search({
        index: streams.served,
        size: 0,
        aggs: { max: { max: { field: 'event.duration' } } },
      });
      assert.equal((latency.aggregations?.max as { value: number }).value, 50 * 1e6, 'ns');
    },
  );

  test(
    'refused and undecodable records land in the DLQ with their exact bytes, once',
    { timeout: 60_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka', 'registry', 'elasticsearch'))) return;
      assert.ifError(startError);
      const dlqDocs = await waitFor(
        () => count(es, streams.dlq),
        (n) => n >= 2,
        30_000,
      );
      assert.equal(dlqDocs, 2, 'the two dead letters are indexed; the broken DLQ record is not');

      const reader = new AvroReader();
      const raw = await readTopic(topics.dlq);
      // Ours, plus the broken record the test wrote: nothing was dead-lettered twice.
      assert.equal(raw.length, 3, `DLQ topic holds ${raw.length} records`);
      const letters = await Promise.all(
        raw
          .filter((r) => !r.value?.equals(dlqGarbage))
          .map(async (r) => ({
            key: r.key?.toString(),
            value: await reader.decode<DlqRecord>(r.value as Buffer),
          })),
      );
      const refused = letters.find((l) => l.value.reason === 'es_rejected');
      assert.ok(
        refused,
        `no es_rejected dead letter in ${JSON.stringify(letters.map((l) => l.value.reason))}`,
      );
      assert.ok(
        refused.value.original.equals(encoded.get(oversized.eventId) as Buffer),
        'original = the Kafka value bytes',
      );
      assert.equal(refused.value.field, 'itemId');
      assert.match(refused.value.message, /document_parsing_exception|illegal_argument_exception/);
      assert.match(
        refused.value.message,
        new RegExp(`${topics.events.replaceAll('.', '\\.')}\\[\\d\\]@\\d+`),
      );
      assert.equal(refused.value.userId, oversized.userId);
      assert.equal(refused.value.source, oversized.source);
      assert.equal(refused.value.receivedAt, oversized.receivedAt);
      assert.equal(refused.key, oversized.userId);
      assert.equal(await docsMetric(metrics1, 'events', 'rejected'), 1);
      assert.equal(await count(es, streams.events, { term: { 'event.id': oversized.eventId } }), 0);

      const undecodable = letters.find((l) => l.value.reason === 'undecodable');
      assert.ok(undecodable, 'no undecodable dead letter');
      assert.ok(undecodable.value.original.equals(garbage), 'original = the bytes written');
      assert.equal(undecodable.value.userId, garbageKey);
      assert.equal(undecodable.key, garbageKey);

      // The DLQ data stream: reasons as error.code, the original kept (base64) for reading.
      const res = await es.search<{ recsys: { dlq: { original: string } } }>({
        index: streams.dlq,
        query: { term: { 'error.code': 'undecodable' } },
      });
      assert.equal(res.hits.hits.length, 1);
      const kept = Buffer.from(res.hits.hits[0]?._source?.recsys.dlq.original ?? '', 'base64');
      assert.ok(kept.equals(garbage));
      assert.equal(await count(es, streams.dlq, { term: { 'error.code': 'es_rejected' } }), 1);
    },
  );

  test('a live wave is indexed as it arrives', { timeout: 120_000 }, async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'elasticsearch'))) return;
    assert.ifError(startError);
    const wave = makeEvents(id, N, N + 1);
    const t0 = performance.now();
    await sendEvents(wave);
    const tProduced = performance.now();
    const total = await waitFor(
      () => count(es, streams.events),
      (n) => n >= 2 * N,
      60_000,
      50,
    );
    const ms = performance.now() - t0;
    assert.equal(total, 2 * N);
    events.push(...wave);
    const bulks = metrics1.getSingleMetric('recsys_indexer_bulk_seconds');
    const sums = ((await bulks?.get())?.values ?? []) as Array<{
      metricName?: string;
      value: number;
    }>;
    const bulkCount = sums.find((v) => v.metricName === 'recsys_indexer_bulk_seconds_count')?.value;
    const bulkSum = sums.find((v) => v.metricName === 'recsys_indexer_bulk_seconds_sum')?.value;
    t.diagnostic(
      `live wave: ${N} events produced in ${Math.round(tProduced - t0)} ms, all searchable after ${Math.round(ms)} ms ` +
        `(${Math.round((N / ms) * 1000)} events/s end to end); bulk requests so far: ${bulkCount} taking ${bulkSum?.toFixed(2)} s in all`,
    );
  });

  test('readiness names Elasticsearch, Kafka and the consumer', { timeout: 30_000 }, async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'elasticsearch'))) return;
    assert.ifError(startError);
    assert.ok(indexer, 'indexer not started');
    const report = await indexer.readiness();
    assert.deepEqual(Object.keys(report.checks).sort(), ['elasticsearch', 'indexer', 'kafka']);
    assert.equal(report.ok, true, JSON.stringify(report));
  });

  test(
    'a full redelivery to a new consumer group changes nothing',
    { timeout: 120_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka', 'registry', 'elasticsearch'))) return;
      assert.ifError(startError);
      assert.ok(indexer, 'indexer not started');
      await indexer.stop();
      const dlqBefore = await readTopic(topics.dlq);
      const metrics2 = new Registry();
      indexer = startIndexer({
        config: fx.configFor('g2'),
        log: quiet,
        metrics: metrics2,
      });
      await indexer.ready;
      const total = events.length;
      // Replayed from the beginning: every event record (with the D duplicates) meets its
      // document, and the two records dead-lettered before are dead-lettered again.
      const dups = await waitFor(
        () => docsMetric(metrics2, 'events', 'duplicate'),
        (n) => n >= total + D,
        60_000,
      );
      assert.equal(dups, total + D);
      assert.equal(await docsMetric(metrics2, 'events', 'created'), 0);
      const servedDups = await waitFor(
        () => docsMetric(metrics2, 'served', 'duplicate'),
        (n) => n >= S,
        30_000,
      );
      assert.equal(servedDups, S);
      assert.equal(await docsMetric(metrics2, 'served', 'created'), 0);
      // Its own two dead letters, byte for byte the first ones, meet their documents too.
      const dlqDups = await waitFor(
        () => docsMetric(metrics2, 'dlq', 'duplicate'),
        (n) => n >= 4,
        30_000,
      );
      assert.equal(dlqDups, 4);

      assert.equal(await count(es, streams.events), total);
      assert.equal(await count(es, streams.served), S);
      assert.equal(await count(es, streams.dlq), 2);
      // The DLQ topic got the two dead letters again (at-least-once), byte for byte.
      const dlqAfter = await readTopic(topics.dlq);
      const letters = (rs: typeof dlqAfter) =>
        rs
          .filter((r) => !r.value?.equals(dlqGarbage))
          .map((r) => (r.value as Buffer).toString('hex'))
          .sort();
      const before = letters(dlqBefore);
      assert.equal(before.length, 2);
      assert.deepEqual(letters(dlqAfter), [...before, ...before].sort());
    },
  );
});
