import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RecsysError } from '../../../core/errors.js';
import { loadConfig, type IngestConfig } from '../../../core/config.js';
import {
  EventRejectedError,
  parseEventBytes,
  requireUserIdFromTopic,
  userIdFromTopic,
  validateEvent,
  type RejectReason,
  type ValidationContext,
  type ValidationLimits,
} from '../../../schemas/validate.js';

const NOW = 1_700_000_000_000;
const limits: ValidationLimits = {
  maxEventBytes: 16_384,
  maxPastMs: 604_800_000,
  maxFutureMs: 300_000,
};
const ctx: ValidationContext = { now: NOW, source: 'mqtt' };
const EVENT_ID = '3f2504e0-4f89-41d3-9a0c-0305e82c3301';

function event(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    eventId: EVENT_ID,
    userId: 'u-1',
    itemId: 'item:42',
    type: 'click',
    ts: NOW - 1000,
    ...overrides,
  };
}

function without(field: string): Record<string, unknown> {
  const e = event();
  delete e[field];
  return e;
}

function rejects(
  fn: () => unknown,
  reason: RejectReason,
  field: string | null,
): EventRejectedError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(
    caught instanceof EventRejectedError,
    `expected EventRejectedError, got ${String(caught)}`,
  );
  assert.equal(caught.reason, reason, caught.message);
  assert.equal(caught.field, field, caught.message);
  assert.equal(caught.code, 'RECSYS_EVENT_REJECTED');
  assert.equal(caught.retriable, false);
  assert.ok(caught instanceof RecsysError);
  if (field !== null) assert.ok(caught.message.startsWith(`field "${field}": `), caught.message);
  return caught;
}

const rejectsEvent = (raw: unknown, reason: RejectReason, field: string | null, c = ctx) =>
  rejects(() => validateEvent(raw, limits, c), reason, field);

const bytes = (s: string) => Buffer.from(s, 'utf8');

describe('validateEvent: happy path and normalisation', () => {
  it('accepts a minimal event and fills every optional field with null', () => {
    assert.deepEqual(validateEvent(event(), limits, ctx), {
      eventId: EVENT_ID,
      userId: 'u-1',
      sessionId: null,
      itemId: 'item:42',
      type: 'click',
      ts: NOW - 1000,
      context: null,
      value: null,
      receivedAt: NOW,
      source: 'mqtt',
    });
  });

  it('keeps every optional field when given', () => {
    const raw = event({
      sessionId: 's_1.a@b',
      context: { page: 'home', position: 3, device: 'ios' },
      value: 19.99,
      type: 'purchase',
    });
    assert.deepEqual(validateEvent(raw, limits, { now: NOW, source: 'http' }), {
      eventId: EVENT_ID,
      userId: 'u-1',
      sessionId: 's_1.a@b',
      itemId: 'item:42',
      type: 'purchase',
      ts: NOW - 1000,
      context: { page: 'home', position: 3, device: 'ios' },
      value: 19.99,
      receivedAt: NOW,
      source: 'http',
    });
  });

  it('normalises explicit nulls and partial context', () => {
    const e = validateEvent(
      event({ sessionId: null, value: null, context: { position: 0 } }),
      limits,
      ctx,
    );
    assert.equal(e.sessionId, null);
    assert.equal(e.value, null);
    assert.deepEqual(e.context, { page: null, position: 0, device: null });
    assert.equal(validateEvent(event({ context: null }), limits, ctx).context, null);
  });

  it('keeps the eventId exactly as sent, in either case, and accepts any UUID version', () => {
    const upper = EVENT_ID.toUpperCase();
    assert.notEqual(upper, EVENT_ID);
    assert.equal(validateEvent(event({ eventId: upper }), limits, ctx).eventId, upper);
    const v7 = '018f3c1a-7b2e-7c3d-8e4f-0123456789ab';
    assert.equal(validateEvent(event({ eventId: v7 }), limits, ctx).eventId, v7);
  });

  it('accepts every event type and both ends of the ts window', () => {
    for (const type of ['view', 'click', 'add_to_cart', 'like', 'purchase']) {
      assert.equal(validateEvent(event({ type }), limits, ctx).type, type);
    }
    validateEvent(event({ ts: NOW - limits.maxPastMs }), limits, ctx);
    validateEvent(event({ ts: NOW + limits.maxFutureMs }), limits, ctx);
  });

  it('accepts ids at the 128-character bound and a null-prototype object', () => {
    const id = 'a'.repeat(128);
    assert.equal(validateEvent(event({ userId: id, itemId: id }), limits, ctx).userId, id);
    const bare = Object.assign(Object.create(null) as object, event());
    assert.equal(validateEvent(bare, limits, ctx).userId, 'u-1');
  });

  it('accepts a topic userId equal to the payload userId', () => {
    assert.equal(validateEvent(event(), limits, { ...ctx, topicUserId: 'u-1' }).userId, 'u-1');
  });

  it('takes IngestConfig as its limits', () => {
    const ingest: IngestConfig = {
      ...loadConfig({ RECSYS_ENV: 'development' }).ingest,
      ...limits,
    };
    assert.equal(validateEvent(event(), ingest, ctx).userId, 'u-1');
  });
});

describe('validateEvent: reject reasons', () => {
  it('not_object for non-objects', () => {
    for (const raw of [null, 42, 'x', true, [event()], new Date(), undefined]) {
      rejectsEvent(raw, 'not_object', null);
    }
  });

  it('missing_field for each required field, absent or null', () => {
    for (const field of ['eventId', 'userId', 'itemId', 'type', 'ts']) {
      rejectsEvent(without(field), 'missing_field', field);
      rejectsEvent(event({ [field]: null }), 'missing_field', field);
    }
  });

  it('unknown_field names the top-level or context field', () => {
    const err = rejectsEvent(event({ userID: 'u-1' }), 'unknown_field', 'userID');
    assert.match(err.message, /^field "userID": /);
    rejectsEvent(
      event({ context: { page: 'home', referrer: 'x' } }),
      'unknown_field',
      'context.referrer',
    );
    rejectsEvent(event({ __proto__x: 1 }), 'unknown_field', '__proto__x');
    rejectsEvent(
      JSON.parse(`{"__proto__": {"a": 1}, "eventId": "${EVENT_ID}"}`),
      'unknown_field',
      '__proto__',
    );
  });

  it('unknown_field truncates a huge field name', () => {
    const err = rejectsEvent(
      event({ ['k'.repeat(5000)]: 1 }),
      'unknown_field',
      `${'k'.repeat(64)}...`,
    );
    assert.ok(err.message.length < 200);
  });

  it('bad_type for wrong JSON types', () => {
    const cases: Array<[string, unknown]> = [
      ['eventId', 12],
      ['userId', 7],
      ['itemId', ['a']],
      ['type', 1],
      ['ts', '1700000000000'],
      ['sessionId', 5],
      ['context', 'home'],
      ['context', [1]],
      ['value', '9.99'],
    ];
    for (const [field, bad] of cases) rejectsEvent(event({ [field]: bad }), 'bad_type', field);
    rejectsEvent(event({ context: { page: 1 } }), 'bad_type', 'context.page');
    rejectsEvent(event({ context: { position: '3' } }), 'bad_type', 'context.position');
    rejectsEvent(event({ context: { device: false } }), 'bad_type', 'context.device');
  });

  it('bad_value for wrong formats and ranges', () => {
    const cases: Array<[string, unknown]> = [
      ['eventId', 'not-a-uuid'],
      ['eventId', '3f2504e04f8941d39a0c0305e82c3301'],
      ['eventId', `{${EVENT_ID}}`],
      ['userId', ''],
      ['userId', 'a/b'],
      ['userId', 'a b'],
      ['userId', 'u+#'],
      ['userId', '{u:1}'],
      ['userId', 'a'.repeat(129)],
      ['itemId', ''],
      ['itemId', 'é'],
      ['sessionId', ''],
      ['sessionId', 's\n1'],
      ['type', 'share'],
      ['type', 'VIEW'],
      ['ts', 1.5],
      ['ts', 2 ** 60],
      ['value', Number.NaN],
      ['value', Number.POSITIVE_INFINITY],
    ];
    for (const [field, bad] of cases) rejectsEvent(event({ [field]: bad }), 'bad_value', field);
    rejectsEvent(event({ context: { page: 'p'.repeat(257) } }), 'bad_value', 'context.page');
    rejectsEvent(event({ context: { device: 'd'.repeat(65) } }), 'bad_value', 'context.device');
    for (const position of [-1, 10_001, 1.5]) {
      rejectsEvent(event({ context: { position } }), 'bad_value', 'context.position');
    }
  });

  it('ts_out_of_window outside [now - maxPastMs, now + maxFutureMs]', () => {
    const past = rejectsEvent(event({ ts: NOW - limits.maxPastMs - 1 }), 'ts_out_of_window', 'ts');
    assert.match(past.message, /604800001 ms before/);
    const future = rejectsEvent(
      event({ ts: NOW + limits.maxFutureMs + 1 }),
      'ts_out_of_window',
      'ts',
    );
    assert.match(future.message, /300001 ms after/);
    rejectsEvent(event({ ts: 0 }), 'ts_out_of_window', 'ts');
    rejectsEvent(event({ ts: Math.floor(NOW / 1000) }), 'ts_out_of_window', 'ts');
  });

  it('the ts message names the field and the expected shape', () => {
    const err = rejectsEvent(event({ ts: 1.5 }), 'bad_value', 'ts');
    assert.equal(err.message, 'field "ts": expected an integer epoch-ms timestamp');
  });

  it('user_mismatch when the topic userId differs from the payload', () => {
    rejectsEvent(event(), 'user_mismatch', 'userId', { ...ctx, topicUserId: 'u-2' });
    // An invalid payload userId is reported as such, not as a mismatch.
    rejectsEvent(event({ userId: 'a/b' }), 'bad_value', 'userId', { ...ctx, topicUserId: 'u-2' });
  });

  it('checks in a fixed order: unknown fields before missing ones', () => {
    rejectsEvent({ userID: 'u-1' }, 'unknown_field', 'userID');
    rejectsEvent({}, 'missing_field', 'eventId');
  });
});

describe('parseEventBytes', () => {
  it('parses and validates a UTF-8 JSON payload', () => {
    const e = parseEventBytes(bytes(JSON.stringify(event())), limits, ctx);
    assert.equal(e.eventId, EVENT_ID);
    assert.equal(e.receivedAt, NOW);
    assert.equal(e.source, 'mqtt');
  });

  it('accepts a plain Uint8Array and a Buffer view into a larger allocation', () => {
    const json = JSON.stringify(event());
    assert.equal(parseEventBytes(new TextEncoder().encode(json), limits, ctx).userId, 'u-1');
    const slab = Buffer.from(`xxxx${json}yyyy`);
    assert.equal(parseEventBytes(slab.subarray(4, 4 + json.length), limits, ctx).userId, 'u-1');
  });

  it('too_large before any parsing: 1 MiB of invalid JSON is too_large, not bad_json', () => {
    const huge = Buffer.alloc(1 << 20, 0x7b); // '{{{{...'
    const err = rejects(() => parseEventBytes(huge, limits, ctx), 'too_large', null);
    assert.match(err.message, /1048576 bytes; the limit is 16384/);
    const justOver = Buffer.alloc(limits.maxEventBytes + 1, 0xff); // not even UTF-8
    rejects(() => parseEventBytes(justOver, limits, ctx), 'too_large', null);
  });

  it('accepts a payload exactly at the size limit', () => {
    const json = JSON.stringify(event());
    const padded = json.slice(0, -1) + ' '.repeat(limits.maxEventBytes - json.length) + '}';
    assert.equal(Buffer.byteLength(padded), limits.maxEventBytes);
    assert.equal(parseEventBytes(bytes(padded), limits, ctx).userId, 'u-1');
  });

  it('bad_json for invalid UTF-8, empty and malformed payloads', () => {
    const err = rejects(
      () => parseEventBytes(Buffer.from([0x7b, 0xff, 0x7d]), limits, ctx),
      'bad_json',
      null,
    );
    assert.match(err.message, /UTF-8/);
    rejects(() => parseEventBytes(bytes(''), limits, ctx), 'bad_json', null);
    rejects(() => parseEventBytes(bytes('{"eventId":'), limits, ctx), 'bad_json', null);
    rejects(() => parseEventBytes(bytes("{'a':1}"), limits, ctx), 'bad_json', null);
  });

  it('not_object for valid JSON that is not an object', () => {
    rejects(() => parseEventBytes(bytes('[1,2]'), limits, ctx), 'not_object', null);
    rejects(() => parseEventBytes(bytes('null'), limits, ctx), 'not_object', null);
    rejects(() => parseEventBytes(bytes('"x"'), limits, ctx), 'not_object', null);
  });

  it('passes the topic userId through to user_mismatch', () => {
    const payload = bytes(JSON.stringify(event()));
    rejects(
      () => parseEventBytes(payload, limits, { ...ctx, topicUserId: 'other' }),
      'user_mismatch',
      'userId',
    );
  });
});

describe('userIdFromTopic', () => {
  const prefix = 'recsys/events';

  it('returns the single valid segment after the prefix', () => {
    assert.equal(userIdFromTopic('recsys/events/u-1', prefix), 'u-1');
    assert.equal(userIdFromTopic('recsys/events/a.b:c@d_e', prefix), 'a.b:c@d_e');
    assert.equal(userIdFromTopic(`recsys/events/${'x'.repeat(128)}`, prefix), 'x'.repeat(128));
  });

  it('returns null for anything else', () => {
    for (const topic of [
      'recsys/events',
      'recsys/events/',
      'recsys/events/u-1/extra',
      'recsys/events//u-1',
      'recsys/eventsX/u-1',
      'recsys/eventsu-1',
      'other/events/u-1',
      'recsys/events/+',
      'recsys/events/#',
      'recsys/events/a b',
      `recsys/events/${'x'.repeat(129)}`,
      '',
    ]) {
      assert.equal(userIdFromTopic(topic, prefix), null, topic);
    }
  });

  it('requireUserIdFromTopic rejects with bad_topic', () => {
    assert.equal(requireUserIdFromTopic('recsys/events/u-1', prefix), 'u-1');
    const err = rejects(
      () => requireUserIdFromTopic('recsys/events/a/b', prefix),
      'bad_topic',
      null,
    );
    assert.match(err.message, /"recsys\/events\/a\/b"/);
  });
});
