/**
 * The MQTT bridge end to end, with real clients on both sides: mosquitto_pub publishes JSON
 * events, the ingest process (a child with its own topics) writes them, kcat reads the topics'
 * raw bytes and the test decodes the Confluent-framed Avro with the writer schema the registry
 * serves. Valid events arrive field for field keyed by userId; each kind of bad input lands in
 * the DLQ with its reason, field and the exact bytes sent, and the bridge keeps running.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { DlqRecord, UserEvent } from '../../../schemas/types.js';
import { requireServices, uniq } from '../harness.js';
import {
  addMqttUser,
  AvroReader,
  bridgeSetup,
  Cleanup,
  expectedFields,
  metricValue,
  mosquittoPub,
  readDecoded,
  validEvent,
  waitForTopic,
  type BridgeProcess,
  type BridgeSetup,
  type EventJson,
  sentFields,
} from './bridge-process.js';

const DAY_MS = 24 * 3600 * 1000;

describe('ingest: MQTT → Kafka', () => {
  const cleanup = new Cleanup();
  const reader = new AvroReader();
  const user = uniq('u');
  const password = uniq('pw');
  let setup: BridgeSetup;
  let bridge: BridgeProcess;
  let startError: Error | null = new Error('not started');

  before(async () => {
    // A failure here is reported by each test, after its service guard (which may skip).
    try {
      setup = await bridgeSetup();
      bridge = cleanup.bridge(setup);
      await Promise.all([bridge.waitReady(), addMqttUser(user, password)]);
      startError = null;
    } catch (err) {
      startError = err as Error;
    }
  });
  after(() => cleanup.run());

  const publish = async (payload: string | Buffer): Promise<void> => {
    const res = await mosquittoPub(payload, { username: user, password });
    assert.equal(res.code, 0, `mosquitto_pub: exit ${res.code}: ${res.stderr}`);
  };

  test('valid events arrive field for field, keyed by userId', { timeout: 90_000 }, async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
    assert.ifError(startError);
    const now = Date.now();
    const sent: EventJson[] = [
      // Every optional field set.
      validEvent(user, {
        type: 'purchase',
        ts: now - 60_000,
        sessionId: 'sess-1',
        context: { page: 'home', position: 3, device: 'ios' },
        value: 19.99,
      }),
      // None of them.
      validEvent(user, { type: 'click' }),
      // Some, some explicitly null; an upper-case UUID is kept exactly as sent.
      validEvent(user, {
        eventId: crypto.randomUUID().toUpperCase(),
        type: 'add_to_cart',
        sessionId: null,
        context: { page: 'pdp' },
        value: null,
      }),
      validEvent(user, { type: 'like', context: null, value: 0, sessionId: 'a.b:c@d_e-f' }),
      validEvent(user, { type: 'view', context: { position: 0, device: 'web' }, value: -2.5 }),
    ];
    const t0 = Date.now();
    for (const e of sent) await publish(JSON.stringify(e));

    const ids = new Set(sent.map((e) => e.eventId));
    const records = await waitForTopic<UserEvent>(
      reader,
      setup.topics.events,
      user,
      (rs) => [...ids].every((id) => rs.some((r) => r.value.eventId === id)),
      30_000,
    );
    for (const e of sent) {
      const got = records.filter((r) => r.value.eventId === e.eventId);
      assert.ok(got.length > 0, `event ${e.eventId} not in ${setup.topics.events}`);
      for (const r of got) {
        assert.equal(r.key, e.userId, 'Kafka key is the userId');
        assert.deepEqual(sentFields(r.value), expectedFields(e));
        assert.equal(r.value.source, 'mqtt');
        assert.ok(
          r.value.receivedAt >= t0 - 1000 && r.value.receivedAt <= Date.now(),
          `receivedAt ${r.value.receivedAt} is not the bridge's clock at receipt`,
        );
      }
    }
  });

  test(
    'bad input goes to the DLQ with reason, field and the exact bytes',
    { timeout: 90_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
      assert.ifError(startError);
      const now = Date.now();
      const base = (): EventJson => validEvent(user);
      const withoutItem = base() as Partial<EventJson>;
      delete withoutItem.itemId;
      const big = validEvent(user, { context: { page: 'x'.repeat(17 * 1024) } });
      const bad: Array<{ name: string; reason: string; field: string | null; payload: Buffer }> = [
        {
          name: 'not JSON',
          reason: 'bad_json',
          field: null,
          payload: Buffer.from(`{"eventId":"${crypto.randomUUID()}","userId":"${user}", oops`),
        },
        {
          name: 'missing itemId',
          reason: 'missing_field',
          field: 'itemId',
          payload: Buffer.from(JSON.stringify(withoutItem)),
        },
        {
          name: 'ts 30 days old',
          reason: 'ts_out_of_window',
          field: 'ts',
          payload: Buffer.from(JSON.stringify({ ...base(), ts: now - 30 * DAY_MS })),
        },
        {
          name: 'unknown field',
          reason: 'unknown_field',
          field: 'color',
          payload: Buffer.from(JSON.stringify({ ...base(), color: 'red' })),
        },
        {
          name: 'userId of someone else',
          reason: 'user_mismatch',
          field: 'userId',
          payload: Buffer.from(JSON.stringify({ ...base(), userId: uniq('other') })),
        },
        {
          name: 'over 16 KiB',
          reason: 'too_large',
          field: null,
          payload: Buffer.from(JSON.stringify(big)),
        },
      ];
      assert.ok(
        (bad.at(-1)?.payload.length ?? 0) > 16 * 1024,
        'the too_large payload is not too large',
      );
      for (const b of bad) await publish(b.payload);

      const dlq = await waitForTopic<DlqRecord>(
        reader,
        setup.topics.dlq,
        user,
        (rs) => bad.every((b) => rs.some((r) => r.value.original.equals(b.payload))),
        30_000,
      );
      for (const b of bad) {
        const r = dlq.find((x) => x.value.original.equals(b.payload));
        assert.ok(r, `${b.name}: no DLQ record holds the bytes sent`);
        assert.equal(r.value.reason, b.reason, `${b.name}: reason`);
        assert.equal(r.value.field, b.field, `${b.name}: field`);
        assert.equal(r.value.source, 'mqtt', `${b.name}: source`);
        assert.equal(r.value.topic, `recsys/events/${user}`, `${b.name}: topic`);
        assert.equal(r.value.userId, user, `${b.name}: userId (from the topic)`);
        assert.equal(r.key, user, `${b.name}: DLQ key`);
        assert.ok(r.value.message.length > 0, `${b.name}: message`);
      }

      // The bridge kept running: one more valid event arrives, and the process is still alive.
      const afterwards = validEvent(user, { type: 'click' });
      await publish(JSON.stringify(afterwards));
      const events = await waitForTopic<UserEvent>(
        reader,
        setup.topics.events,
        user,
        (rs) => rs.some((r) => r.value.eventId === afterwards.eventId),
        30_000,
      );
      const got = events.find((r) => r.value.eventId === afterwards.eventId);
      assert.ok(
        got,
        `valid event after the bad ones did not arrive; bridge output:\n${bridge.output}`,
      );
      assert.deepEqual(sentFields(got.value), expectedFields(afterwards));
      assert.ok(bridge.alive, 'bridge process exited');

      // None of the rejected payloads reached the events topic (under any key).
      const all = await readDecoded<UserEvent>(reader, setup.topics.events);
      for (const b of bad) {
        const leaked = all.find((r) => b.payload.includes(Buffer.from(r.value.eventId)));
        assert.equal(leaked, undefined, `${b.name}: rejected event is in the events topic`);
      }
    },
  );

  test('/metrics counts accepted events and DLQ reasons', { timeout: 30_000 }, async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
    assert.ifError(startError);
    const res = await fetch(`${setup.baseUrl}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok(
      metricValue(text, 'recsys_ingest_dlq_total', { reason: 'too_large', source: 'mqtt' }) >= 1,
      'recsys_ingest_dlq_total{reason="too_large",source="mqtt"} < 1',
    );
    for (const reason of [
      'bad_json',
      'missing_field',
      'ts_out_of_window',
      'unknown_field',
      'user_mismatch',
    ]) {
      assert.ok(
        metricValue(text, 'recsys_ingest_dlq_total', { reason, source: 'mqtt' }) >= 1,
        reason,
      );
    }
    const accepted = metricValue(text, 'recsys_ingest_events_total', {
      source: 'mqtt',
      outcome: 'accepted',
    });
    const rejected = metricValue(text, 'recsys_ingest_events_total', {
      source: 'mqtt',
      outcome: 'rejected',
    });
    assert.ok(accepted >= 6, `accepted mqtt events: ${accepted}, expected at least 6`);
    assert.ok(rejected >= 6, `rejected mqtt events: ${rejected}, expected at least 6`);
    // Accepted events by type, the clicks side of the online CTR (deploy/prometheus).
    const byType = ['view', 'click', 'add_to_cart', 'like', 'purchase'].reduce(
      (sum, type) => sum + metricValue(text, 'recsys_ingest_events_by_type_total', { type }),
      0,
    );
    assert.equal(byType, accepted, 'events by type add up to the accepted events');
  });
});
