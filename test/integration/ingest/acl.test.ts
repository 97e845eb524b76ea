/**
 * The broker is the first gate: a user may publish only to its own topic (PUBACK 0x87 otherwise),
 * a wrong password and an anonymous client are refused at CONNECT, and nothing they tried to
 * send reaches Kafka, neither the events topic nor the DLQ.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep } from '../../../core/retry.js';
import { requireServices, uniq } from '../harness.js';
import {
  addMqttUser,
  bridgeSetup,
  Cleanup,
  MQTT_HOST,
  MQTT_PORT,
  mosquittoPub,
  readTopic,
  validEvent,
  run,
} from './bridge-process.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

test(
  'MQTT ACL and authentication keep foreign input out of Kafka',
  { timeout: 120_000 },
  async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
    const setup = await bridgeSetup();
    const bridge = cleanup.bridge(setup);
    const a = { user: uniq('ua'), password: uniq('pw') };
    const b = { user: uniq('ub'), password: uniq('pw') };
    // One account at a time: mosquitto_passwd rewrites the whole file.
    const accounts = (async () => {
      await addMqttUser(a.user, a.password);
      await addMqttUser(b.user, b.password);
    })();
    await Promise.all([bridge.waitReady(), accounts]);

    // A publishes an otherwise valid event of B's on B's topic: the broker refuses it.
    const forged = validEvent(b.user);
    const refused = await mosquittoPub(JSON.stringify(forged), {
      username: a.user,
      password: a.password,
      topic: `recsys/events/${b.user}`,
      debug: true,
    });
    const puback = /received PUBACK \(Mid: ?1, RC: ?(\d+)\)/.exec(refused.stdout + refused.stderr);
    assert.ok(puback, `no PUBACK in mosquitto_pub -d output:\n${refused.stdout}${refused.stderr}`);
    assert.equal(Number(puback[1]), 135, 'PUBACK reason code is not 0x87 (not authorized)');

    // B's own account with a wrong password, and no account at all: refused at CONNECT.
    const wrongPassword = validEvent(b.user);
    const wrong = await mosquittoPub(JSON.stringify(wrongPassword), {
      username: b.user,
      password: `${b.password}-wrong`,
    });
    assert.notEqual(wrong.code, 0, 'a wrong password was accepted');
    const anonymousEvent = validEvent(b.user);
    const anonymous = await run(
      'mosquitto_pub',
      ['-h', MQTT_HOST, '-p', MQTT_PORT, '-V', 'mqttv5', '-q', '1'].concat([
        '-t',
        `recsys/events/${b.user}`,
        '-m',
        JSON.stringify(anonymousEvent),
      ]),
      { timeoutMs: 20_000 },
    );
    assert.notEqual(anonymous.code, 0, 'an anonymous client was accepted');

    // B's own valid event goes through; once it is in Kafka, anything published before it would
    // be there too.
    const sentinel = validEvent(b.user);
    const ok = await mosquittoPub(JSON.stringify(sentinel), {
      username: b.user,
      password: b.password,
    });
    assert.equal(ok.code, 0, `mosquitto_pub as ${b.user}: ${ok.stderr}`);
    const contains = (records: Awaited<ReturnType<typeof readTopic>>, id: string): boolean =>
      records.some((r) => r.value?.includes(id) ?? false);
    const deadline = Date.now() + 30_000;
    let events = await readTopic(setup.topics.events);
    while (!contains(events, sentinel.eventId) && Date.now() < deadline) {
      await sleep(500);
      events = await readTopic(setup.topics.events);
    }
    assert.ok(
      contains(events, sentinel.eventId),
      `B's valid event did not arrive:\n${bridge.output}`,
    );
    const dlq = await readTopic(setup.topics.dlq);

    // The raw bytes of every record are searched: an Avro string and a DLQ original both carry
    // the eventId verbatim (the sentinel above shows the search finds what is there).
    for (const [name, e] of [
      ['A on B topic', forged],
      ['wrong password', wrongPassword],
      ['anonymous', anonymousEvent],
    ] as const) {
      assert.ok(!contains(events, e.eventId), `${name}: eventId reached the events topic`);
      assert.ok(!contains(dlq, e.eventId), `${name}: eventId reached the DLQ`);
    }
    assert.ok(bridge.alive, 'bridge exited');
  },
);
