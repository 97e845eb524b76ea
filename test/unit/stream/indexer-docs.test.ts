import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import avro from 'avsc';
import { ConfigError } from '../../../core/errors.js';
import { readSchema, type SchemaName } from '../../../schemas/subjects.js';
import type { DlqRecord, ServedFeed, UserEvent } from '../../../schemas/types.js';
import {
  checkNamespace,
  dataStreamName,
  DLQ_ORIGINAL_KEEP_BYTES,
  dlqDocument,
  eventDocument,
  INDEX_TEMPLATES,
  PAYLOAD_FIELDS,
  servedDocument,
  STREAMS,
} from '../../../stream/indexer-docs.js';
import { mappedFields, unmappedIn } from './mapped-fields.js';

const ctx = { namespace: 'default', now: 1_700_000_000_500 };

/** Values as the consumer hands them: decoded by avsc (records are class instances). */
function viaAvro<T>(name: SchemaName, value: T): T {
  const type = avro.Type.forSchema(readSchema(name) as avro.Schema);
  return type.fromBuffer(type.toBuffer(value)) as T;
}

const fullEvent: UserEvent = {
  eventId: '6f1c2a4e-8d3b-4c1a-9e2f-0a1b2c3d4e5f',
  userId: 'alice',
  sessionId: 'sess-1',
  itemId: 'sku-1',
  type: 'purchase',
  ts: 1_700_000_000_000,
  context: { page: 'home', position: 3, device: 'ios' },
  value: 19.99,
  receivedAt: 1_700_000_000_100,
  source: 'mqtt',
};
const bareEvent: UserEvent = {
  ...fullEvent,
  sessionId: null,
  context: null,
  value: null,
  type: 'view',
  source: 'http',
};
const feed: ServedFeed = {
  requestId: 'req-1',
  userId: 'alice',
  ts: 1_700_000_000_200,
  items: [
    { itemId: 'sku-1', score: 0.9, source: 'batch' },
    { itemId: 'sku-2', score: 0.5, source: 'trending' },
  ],
  modelVersion: 'v7',
  latencyMs: 12.5,
};
const dead: DlqRecord = {
  reason: 'bad_json',
  message: 'Unexpected token',
  field: null,
  source: 'mqtt',
  topic: 'recsys/events/alice',
  userId: 'alice',
  receivedAt: 1_700_000_000_300,
  original: Buffer.from('{"oops'),
};
const at = { topic: 'recsys.events.dlq.v1', partition: 2, offset: '41', digest: 'abc' };

describe('indexer documents', () => {
  it('map to fields the templates define, with values those fields take', () => {
    const docs = [
      ['events', eventDocument(viaAvro('UserEvent', fullEvent), ctx).doc],
      ['events', eventDocument(viaAvro('UserEvent', bareEvent), ctx).doc],
      ['served', servedDocument(viaAvro('ServedFeed', feed), ctx).doc],
      ['served', servedDocument(viaAvro('ServedFeed', { ...feed, items: [] }), ctx).doc],
      ['dlq', dlqDocument(viaAvro('DlqRecord', dead), at, ctx).doc],
      [
        'dlq',
        dlqDocument(viaAvro('DlqRecord', { ...dead, field: 'ts', topic: null }), at, ctx).doc,
      ],
    ] as const;
    for (const [stream, doc] of docs) {
      assert.deepEqual(unmappedIn(doc, INDEX_TEMPLATES[stream]), [], stream);
    }
  });

  it('the check above catches a field the template lacks or a value of the wrong kind', () => {
    const doc = eventDocument(fullEvent, ctx).doc;
    const planted = { ...doc, recsys: { ...(doc.recsys as object), colour: 'red', position: '3' } };
    assert.deepEqual(unmappedIn(planted, INDEX_TEMPLATES.events), [
      'recsys.position: string in a integer field',
      'recsys.colour: not mapped',
    ]);
  });

  it('an event document: ECS fields from the event, _id = eventId', () => {
    const { id, doc } = eventDocument(viaAvro('UserEvent', fullEvent), ctx);
    assert.equal(id, fullEvent.eventId);
    assert.deepEqual(JSON.parse(JSON.stringify(doc)), {
      '@timestamp': fullEvent.ts,
      data_stream: { type: 'logs', dataset: 'recsys.events', namespace: 'default' },
      event: {
        id: fullEvent.eventId,
        kind: 'event',
        action: 'purchase',
        dataset: 'recsys.events',
        created: fullEvent.receivedAt,
        ingested: ctx.now,
      },
      user: { id: 'alice' },
      user_agent: { device: { name: 'ios' } },
      recsys: {
        item_id: 'sku-1',
        source: 'mqtt',
        session_id: 'sess-1',
        page: 'home',
        position: 3,
        value: 19.99,
      },
    });
    // Absent optional fields are left out, not written as null.
    const bare = eventDocument(viaAvro('UserEvent', bareEvent), ctx).doc;
    assert.equal(bare.user_agent, undefined);
    assert.deepEqual(bare.recsys, { item_id: 'sku-1', source: 'http' });
  });

  it('a served document: latency as ECS event.duration in nanoseconds, _id = requestId', () => {
    const { id, doc } = servedDocument(viaAvro('ServedFeed', feed), ctx);
    assert.equal(id, 'req-1');
    const event = doc.event as Record<string, unknown>;
    assert.equal(event.duration, 12_500_000);
    assert.equal(event.action, 'feed_served');
    assert.deepEqual(doc.recsys, {
      model_version: 'v7',
      items_count: 2,
      items: [
        { item_id: 'sku-1', score: 0.9, source: 'batch' },
        { item_id: 'sku-2', score: 0.5, source: 'trending' },
      ],
    });
    const nan = servedDocument({ ...feed, latencyMs: Number.NaN }, ctx).doc;
    assert.equal((nan.event as Record<string, unknown>).duration, undefined);
  });

  it('a dead-letter document keeps a bounded prefix of the original and clips long strings', () => {
    const original = Buffer.alloc(DLQ_ORIGINAL_KEEP_BYTES + 10, 7);
    const { id, doc } = dlqDocument(
      { ...dead, original, userId: 'u'.repeat(40_000), message: 'm'.repeat(5000) },
      at,
      ctx,
    );
    assert.equal(id, 'abc');
    const dlq = (doc.recsys as { dlq: Record<string, unknown> }).dlq;
    assert.equal(
      Buffer.from(dlq.original as string, 'base64').length,
      DLQ_ORIGINAL_KEEP_BYTES,
      'original kept up to the limit',
    );
    assert.equal(dlq.original_bytes, original.length);
    assert.equal(dlq.original_truncated, true);
    assert.ok(((doc.user as { id: string }).id.length as number) < 2000);
    assert.ok((doc.error as { message: string }).message.length < 2000);
    assert.deepEqual((doc.recsys as { kafka: unknown }).kafka, {
      topic: at.topic,
      partition: 2,
      offset: 41,
    });
    const small = dlqDocument(dead, at, ctx).doc;
    const smallDlq = (small.recsys as { dlq: Record<string, unknown> }).dlq;
    assert.equal(Buffer.from(smallDlq.original as string, 'base64').toString(), '{"oops');
    assert.equal(smallDlq.original_truncated, false);
  });

  it('PAYLOAD_FIELDS name mapped document fields and fields of the Avro payload', () => {
    const avroPaths = (name: SchemaName): Set<string> => {
      const paths = new Set<string>();
      const walk = (schema: unknown, prefix: string): void => {
        if (Array.isArray(schema)) return schema.forEach((s) => walk(s, prefix));
        if (!schema || typeof schema !== 'object') return;
        const s = schema as { type?: unknown; fields?: unknown; items?: unknown };
        if (s.type === 'array') return walk(s.items, prefix);
        if (Array.isArray(s.fields)) {
          for (const f of s.fields as Array<{ name: string; type: unknown }>) {
            const path = prefix ? `${prefix}.${f.name}` : f.name;
            paths.add(path);
            walk(f.type, path);
          }
        } else if (typeof s.type === 'object') walk(s.type, prefix);
      };
      walk(readSchema(name), '');
      return paths;
    };
    const schemaOf = { events: 'UserEvent', served: 'ServedFeed' } as const;
    for (const stream of ['events', 'served'] as const) {
      const mapped = mappedFields(INDEX_TEMPLATES[stream]);
      const payload = avroPaths(schemaOf[stream]);
      for (const [docField, payloadField] of Object.entries(PAYLOAD_FIELDS[stream])) {
        assert.ok(mapped.has(docField), `${stream}: ${docField} is not mapped`);
        assert.ok(payload.has(payloadField), `${stream}: ${payloadField} is not in the schema`);
      }
    }
  });
});

describe('index templates', () => {
  it('claim exactly their data streams, above the built-in logs template, strictly mapped', () => {
    for (const stream of STREAMS) {
      const t = INDEX_TEMPLATES[stream];
      const name = dataStreamName(stream, 'default');
      assert.equal(name, `logs-recsys.${stream}-default`);
      const matches = (pattern: string, s: string): boolean =>
        new RegExp(`^${pattern.replaceAll('.', '\\.').replaceAll('*', '.*')}$`).test(s);
      for (const other of STREAMS) {
        const hit = t.index_patterns.some((p) => matches(p, dataStreamName(other, 'default')));
        assert.equal(hit, other === stream, `${t.name} vs ${other}`);
      }
      assert.deepEqual(t.data_stream, {});
      assert.ok((t.priority ?? 0) > 100);
      assert.equal(t.template.mappings.dynamic, 'strict');
      assert.equal(mappedFields(t).get('@timestamp'), 'date');
    }
  });

  it('namespaces follow the data stream naming rules', () => {
    for (const ok of ['default', 'prod_eu', 't1a2b3']) checkNamespace(ok);
    for (const bad of ['', 'Prod', 'a-b', 'a b', 'a*', '.hidden', 'x'.repeat(101)]) {
      assert.throws(() => checkNamespace(bad), ConfigError, JSON.stringify(bad));
    }
  });
});
