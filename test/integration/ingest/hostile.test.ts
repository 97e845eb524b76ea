/**
 * Oversized payloads are refused with a bound and nothing else is lost: a burst of large
 * payloads from one user (one Kafka partition) goes to the DLQ without wedging the bridge (their
 * DLQ records together would pass Kafka's 1 MB request limit if batched carelessly), and a
 * payload over the broker's packet bound never reaches the bridge at all.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { DlqRecord, UserEvent } from '../../../schemas/types.js';
import { requireServices, uniq } from '../harness.js';
import {
  addMqttUser,
  AvroReader,
  bridgeSetup,
  Cleanup,
  mosquittoPub,
  validEvent,
  waitForTopic,
} from './bridge-process.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

test(
  'a burst of oversized payloads goes to the DLQ and the stream keeps flowing',
  { timeout: 120_000 },
  async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
    const setup = await bridgeSetup();
    const user = uniq('uh');
    const password = uniq('pw');
    const bridge = cleanup.bridge(setup);
    await Promise.all([bridge.waitReady(), addMqttUser(user, password)]);
    const creds = { username: user, password, via: 's' as const };
    const reader = new AvroReader();

    // 12 payloads of 200 KiB, all at once: 2.4 MB of DLQ records for one partition. One
    // connection sends them (-l, a message per line): an account holds one connection at a
    // time, its client id being its username.
    const big = Array.from({ length: 12 }, (_, i) => Buffer.alloc(200 * 1024, 65 + i));
    const lines = Buffer.concat(big.flatMap((payload) => [payload, Buffer.from('\n')]));
    const burst = await mosquittoPub(lines, { ...creds, via: 'l' });
    assert.equal(burst.code, 0, burst.stderr);

    // Over the broker's max_packet_size (256 KiB): the broker drops the client, not the bridge.
    const huge = await mosquittoPub(Buffer.alloc(300 * 1024, 90), creds);
    t.diagnostic(`300 KiB publish: exit ${huge.code} ${huge.stderr.trim()}`);

    const after = validEvent(user);
    assert.equal((await mosquittoPub(JSON.stringify(after), { username: user, password })).code, 0);

    const events = await waitForTopic<UserEvent>(
      reader,
      setup.topics.events,
      user,
      (r) => r.some((x) => x.value.eventId === after.eventId),
      60_000,
    );
    assert.ok(
      events.some((x) => x.value.eventId === after.eventId),
      'the valid event after the burst arrived',
    );

    const dlq = await waitForTopic<DlqRecord>(
      reader,
      setup.topics.dlq,
      user,
      (r) => r.length >= big.length,
      60_000,
    );
    const tooLarge = dlq.filter((x) => x.value.reason === 'too_large');
    assert.equal(tooLarge.length, big.length, 'every 200 KiB payload is in the DLQ once');
    const originals = new Set(
      tooLarge.map((x) => Buffer.from(x.value.original).toString('base64')),
    );
    for (const payload of big)
      assert.ok(originals.has(payload.toString('base64')), 'original bytes kept');
    assert.ok(
      !dlq.some((x) => x.value.original.length > 256 * 1024),
      'nothing over the broker bound got through',
    );
    assert.ok(bridge.alive);
  },
);

test(
  'hostile HTTP bodies get a clear 4xx, never a crash or a 5xx',
  { timeout: 120_000 },
  async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
    // Nobody publishes under this prefix: this bridge sees only its own HTTP traffic.
    const setup = await bridgeSetup({
      RECSYS_MQTT_TOPIC_PREFIX: `recsys/events/none-${uniq('x')}`,
    });
    const bridge = cleanup.bridge(setup);
    await bridge.waitReady();
    const post = async (
      body: string,
    ): Promise<{ status: number; json: { error?: { code: string; reason?: string } } }> => {
      const res = await fetch(`${setup.baseUrl}/v1/events`, {
        method: 'POST',
        headers: setup.postHeaders,
        body,
      });
      return {
        status: res.status,
        json: (await res.json()) as { error?: { code: string; reason?: string } },
      };
    };
    const depth = 100_000;
    const cases: Array<[string, string, number, string]> = [
      ['deeply nested array as the batch', '['.repeat(depth) + ']'.repeat(depth), 413, 'too_large'],
      [
        'deeply nested array inside a batch',
        '[' + '['.repeat(depth) + ']'.repeat(depth) + ']',
        413,
        'too_large',
      ],
      [
        'deeply nested object as a field',
        '{"eventId":' + '{"a":'.repeat(depth / 2) + '1' + '}'.repeat(depth / 2) + '}',
        413,
        'too_large',
      ],
      ['a number', '42', 400, 'not_object'],
      [
        '__proto__ smuggling',
        JSON.stringify({ ...validEvent('u-x'), ['__proto__']: { admin: true } }),
        400,
        'unknown_field',
      ],
    ];
    for (const [name, body, status, reason] of cases) {
      const res = await post(body);
      assert.equal(res.status, status, `${name}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.error?.reason, reason, name);
    }
    const fine = await post(JSON.stringify(validEvent('u-after')));
    assert.equal(fine.status, 202);
    assert.ok(bridge.alive);
  },
);
