import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import avro from 'avsc';
import { readSchema, subjectsFor, type SchemaName } from '../../../schemas/subjects.js';
import {
  EVENT_SOURCES,
  EVENT_TYPES,
  type DlqRecord,
  type ServedFeed,
  type UserEvent,
} from '../../../schemas/types.js';
import { validateEvent } from '../../../schemas/validate.js';

const NOW = 1_700_000_000_000;
const limits = { maxEventBytes: 16_384, maxPastMs: 604_800_000, maxFutureMs: 300_000 };

const typeOf = (name: SchemaName) => avro.Type.forSchema(readSchema(name));

/**
 * Encodes and decodes `value`. avsc decodes records into instances of generated classes
 * (`UserEvent {...}`), which strict deep-equality tells apart from literals, so the result is
 * copied into plain objects (Buffers kept) before it is compared.
 */
function roundTrip<T>(type: avro.Type, value: T): T {
  assert.ok(type.isValid(value), `not valid for ${String(type.name)}: ${JSON.stringify(value)}`);
  return plain(type.fromBuffer(type.toBuffer(value))) as T;
}

function plain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(plain);
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value)) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
}

/** Symbols of the enum at `fieldName` (possibly inside a union) of a record type. */
function enumSymbols(record: avro.Type, fieldName: string): string[] {
  const field = (record as avro.types.RecordType).field(fieldName);
  assert.ok(field, `no field ${fieldName}`);
  const type = field.type;
  assert.ok(type instanceof avro.types.EnumType, `${fieldName} is not an enum`);
  return type.symbols;
}

describe('avro schemas', () => {
  it('every .avsc parses, in namespace recsys, with a doc on every field', () => {
    for (const name of ['UserEvent', 'ServedFeed', 'DlqRecord'] as const) {
      const type = typeOf(name);
      assert.equal(type.name, `recsys.${name}`);
      const visit = (schema: unknown): void => {
        if (Array.isArray(schema)) return schema.forEach(visit);
        if (typeof schema !== 'object' || schema === null) return;
        const s = schema as {
          type?: unknown;
          fields?: Array<{ name: string; doc?: unknown; type: unknown }>;
          items?: unknown;
        };
        if (s.type === 'record') {
          for (const f of s.fields ?? []) {
            assert.equal(typeof f.doc, 'string', `${name}.${f.name} has no doc`);
            visit(f.type);
          }
        }
        if (s.type === 'array') visit(s.items);
      };
      visit(readSchema(name));
    }
  });

  it('EventType and EventSource symbols equal the TypeScript constants', () => {
    const userEvent = typeOf('UserEvent');
    assert.deepEqual(enumSymbols(userEvent, 'type'), [...EVENT_TYPES]);
    assert.deepEqual(enumSymbols(userEvent, 'source'), [...EVENT_SOURCES]);
  });

  it('field names equal the TypeScript types (checked against full sample values)', () => {
    const fields = (name: SchemaName) =>
      (typeOf(name) as avro.types.RecordType).fields.map((f) => f.name);
    const event: Record<keyof UserEvent, true> = {
      eventId: true,
      userId: true,
      sessionId: true,
      itemId: true,
      type: true,
      ts: true,
      context: true,
      value: true,
      receivedAt: true,
      source: true,
    };
    assert.deepEqual(fields('UserEvent'), Object.keys(event));
    const feed: Record<keyof ServedFeed, true> = {
      requestId: true,
      userId: true,
      ts: true,
      items: true,
      modelVersion: true,
      latencyMs: true,
      candidates: true,
    };
    assert.deepEqual(fields('ServedFeed'), Object.keys(feed));
    const dlq: Record<keyof DlqRecord, true> = {
      reason: true,
      message: true,
      field: true,
      source: true,
      topic: true,
      userId: true,
      receivedAt: true,
      original: true,
    };
    assert.deepEqual(fields('DlqRecord'), Object.keys(dlq));
  });

  it('a validated minimal event round-trips', () => {
    const event = validateEvent(
      {
        eventId: '3f2504e0-4f89-41d3-9a0c-0305e82c3301',
        userId: 'u-1',
        itemId: 'i-1',
        type: 'view',
        ts: NOW,
      },
      limits,
      { now: NOW, source: 'mqtt' },
    );
    assert.deepEqual(roundTrip(typeOf('UserEvent'), event), event);
  });

  it('a validated full event round-trips', () => {
    const event: UserEvent = validateEvent(
      {
        eventId: '3F2504E0-4F89-41D3-9A0C-0305E82C3301',
        userId: 'u-1',
        sessionId: 's-9',
        itemId: 'i-1',
        type: 'add_to_cart',
        ts: NOW - 5,
        context: { page: 'pdp', position: 7, device: 'android' },
        value: 12.5,
      },
      limits,
      { now: NOW, source: 'http' },
    );
    const decoded = roundTrip(typeOf('UserEvent'), event);
    assert.deepEqual(decoded, event);
    // Unions decode to plain values (no {string: ...} wrapping), so consumers see the TS shape.
    assert.equal(decoded.sessionId, 's-9');
    assert.equal(decoded.context?.position, 7);
  });

  it('a served feed round-trips', () => {
    const feed: ServedFeed = {
      requestId: 'req-1',
      userId: 'u-1',
      ts: NOW,
      items: [
        { itemId: 'i-1', score: 0.93, source: 'batch' },
        { itemId: 'i-2', score: -1.25, source: 'realtime' },
        { itemId: 'i-3', score: 0, source: 'trending' },
      ],
      modelVersion: 'reranker-7',
      latencyMs: 3.25,
      candidates: null,
    };
    assert.deepEqual(roundTrip(typeOf('ServedFeed'), feed), feed);
    const empty: ServedFeed = { ...feed, items: [] };
    assert.deepEqual(roundTrip(typeOf('ServedFeed'), empty), empty);
    const features = Buffer.from(new Float32Array([1.5, -2, 0, 7]).buffer);
    const logged: ServedFeed = {
      ...feed,
      candidates: { featureNames: ['f1', 'f2'], itemIds: ['i-1', 'i-9'], features },
    };
    assert.deepEqual(roundTrip(typeOf('ServedFeed'), logged), logged);
  });

  it('a served feed of the schema before logged candidates reads with candidates null', () => {
    const now = typeOf('ServedFeed');
    const fields = (readSchema('ServedFeed') as { fields: { name: string }[] }).fields;
    const before = avro.Type.forSchema({
      ...readSchema('ServedFeed'),
      fields: fields.filter((f) => f.name !== 'candidates'),
    } as avro.Schema);
    const old = {
      requestId: 'r',
      userId: 'u',
      ts: NOW,
      items: [],
      modelVersion: 'v',
      latencyMs: 1,
    };
    const read = now.createResolver(before);
    assert.deepEqual(
      { ...now.fromBuffer(before.toBuffer(old), read) },
      { ...old, candidates: null },
    );
  });

  it('a DLQ record round-trips with its original bytes intact', () => {
    const dlq: DlqRecord = {
      reason: 'bad_json',
      message: 'payload is not valid UTF-8',
      field: null,
      source: 'mqtt',
      topic: 'recsys/events/u-1',
      userId: 'u-1',
      receivedAt: NOW,
      original: Buffer.from([0x7b, 0xff, 0x00, 0x7d]),
    };
    const decoded = roundTrip(typeOf('DlqRecord'), dlq);
    assert.deepEqual(decoded, dlq);
    assert.ok(Buffer.isBuffer(decoded.original));
    const http: DlqRecord = {
      ...dlq,
      source: 'http',
      topic: null,
      userId: null,
      field: 'ts',
      original: Buffer.alloc(0),
    };
    assert.deepEqual(roundTrip(typeOf('DlqRecord'), http), http);
  });

  it('an event without receivedAt or with an unknown type is not encodable', () => {
    const type = typeOf('UserEvent');
    const base = {
      eventId: '3f2504e0-4f89-41d3-9a0c-0305e82c3301',
      userId: 'u',
      sessionId: null,
      itemId: 'i',
      type: 'view',
      ts: NOW,
      context: null,
      value: null,
      receivedAt: NOW,
      source: 'mqtt',
    };
    assert.ok(type.isValid(base));
    assert.equal(type.isValid({ ...base, receivedAt: undefined }), false);
    assert.equal(type.isValid({ ...base, type: 'share' }), false);
  });
});

describe('subjectsFor', () => {
  it('names each topic value subject (TopicNameStrategy) with its parsed schema', () => {
    const subjects = subjectsFor({
      events: 'recsys.events.v1',
      dlq: 'recsys.events.dlq.v1',
      served: 'recsys.served.v1',
    });
    assert.deepEqual(
      subjects.map(({ subject, name }) => ({ subject, name })),
      [
        { subject: 'recsys.events.v1-value', name: 'UserEvent' },
        { subject: 'recsys.events.dlq.v1-value', name: 'DlqRecord' },
        { subject: 'recsys.served.v1-value', name: 'ServedFeed' },
      ],
    );
    for (const { schema, name } of subjects) {
      assert.equal(schema.name, name);
      assert.equal(schema.namespace, 'recsys');
      assert.equal(avro.Type.forSchema(schema).name, `recsys.${name}`);
    }
  });

  it('reads each file once and returns the same frozen object', () => {
    assert.equal(readSchema('UserEvent'), readSchema('UserEvent'));
    assert.ok(Object.isFrozen(readSchema('UserEvent')));
  });
});
