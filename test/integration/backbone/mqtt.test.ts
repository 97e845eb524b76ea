/**
 * The project's MQTT client against mosquitto_pub/mosquitto_sub, under the ACL the stack runs
 * with: a user may write only `recsys/events/<its username>`, the bridge account reads them all.
 * Payloads must cross byte for byte in both directions.
 */
import { spawn } from 'node:child_process';
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withTimeout } from '../../../core/retry.js';
import { connectMqtt, type MqttClient } from '../../../stream/mqtt.js';
import { addMqttUser, config, requireServices, run, uniq } from '../harness.js';

const HOST = new URL(config.mqtt.url).hostname;
const PORT = new URL(config.mqtt.url).port || '1883';

/** Connects with the project's client, bounded. */
function connectAs(username: string, password: string): Promise<MqttClient> {
  return withTimeout(
    connectMqtt({ url: config.mqtt.url, username, password, connectTimeoutMs: 3000 }),
    5000,
    () => new Error(`mqtt: no CONNACK for ${username} within 5 s`),
  );
}

function event(userId: string): string {
  return JSON.stringify({
    eventId: crypto.randomUUID(),
    userId,
    itemId: 'item-ü-7',
    type: 'click',
    ts: Date.now(),
    context: { page: 'home', position: 3, device: 'web' },
  });
}

describe('mqtt', () => {
  const user = uniq('test');
  const password = uniq('pw');
  let addUserError: unknown;

  before(async () => {
    // Runs before the guards; a missing broker makes the guard skip or fail, not this.
    // The tests rethrow its error after their guard.
    await addMqttUser(user, password).catch((err: unknown) => {
      addUserError = err;
    });
  });

  test(
    'mosquitto_pub → project client (as the bridge), identical bytes',
    { timeout: 60_000 },
    async (t) => {
      if (!(await requireServices(t, 'mosquitto'))) return;
      if (addUserError) throw addUserError;
      const topic = `${config.mqtt.topicPrefix}/${user}`;
      const payload = event(user);
      const bridge = await connectAs(config.mqtt.username, config.mqtt.password);
      try {
        const granted = await bridge.subscribeAsync(topic, { qos: 1 });
        assert.equal(granted[0]?.qos, 1, `subscription refused: ${JSON.stringify(granted)}`);
        const arrived = new Promise<{ topic: string; payload: Buffer; qos: number }>((resolve) => {
          bridge.on('message', (topicName, body, packet) => {
            if (topicName === topic) resolve({ topic: topicName, payload: body, qos: packet.qos });
          });
        });

        // The new account may not be loaded yet: retry mosquitto_pub until the broker accepts it.
        const deadline = Date.now() + 10_000;
        for (;;) {
          const pub = await run(
            'mosquitto_pub',
            [
              '-h',
              HOST,
              '-p',
              PORT,
              '-u',
              user,
              '-P',
              password,
              '-q',
              '1',
              '-t',
              topic,
              '-m',
              payload,
            ],
            { timeoutMs: 10_000 },
          );
          if (pub.code === 0) break;
          if (Date.now() > deadline) assert.fail(`mosquitto_pub: exit ${pub.code}: ${pub.stderr}`);
          await new Promise((r) => setTimeout(r, 200));
        }

        const got = await withTimeout(
          arrived,
          10_000,
          () => new Error('message did not arrive within 10 s'),
        );
        assert.equal(got.topic, topic);
        assert.equal(got.qos, 1);
        assert.ok(
          got.payload.equals(Buffer.from(payload)),
          `payload differs: ${got.payload.toString()}`,
        );
      } finally {
        await bridge.endAsync();
      }
    },
  );

  test(
    'project client (as the user) → mosquitto_sub (as the bridge), identical bytes',
    { timeout: 60_000 },
    async (t) => {
      if (!(await requireServices(t, 'mosquitto'))) return;
      if (addUserError) throw addUserError;
      const topic = `${config.mqtt.topicPrefix}/${user}`;
      const payload = event(user);
      const client = await connectAs(user, password);
      // -C 1: exit after one message; -W 10: give up after 10 s; -N: no newline after it.
      const sub = spawn(
        'mosquitto_sub',
        ['-h', HOST, '-p', PORT, '-u', config.mqtt.username, '-P', config.mqtt.password].concat([
          '-t',
          topic,
          '-q',
          '1',
          '-C',
          '1',
          '-W',
          '10',
          '-N',
        ]),
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      sub.stdout.on('data', (d: Buffer) => out.push(d));
      sub.stderr.on('data', (d: Buffer) => err.push(d));
      const exited = new Promise<number | null>((resolve, reject) => {
        sub.on('error', reject);
        sub.on('close', (code) => resolve(code));
      });
      let done = false;
      // mosquitto_sub subscribes some time after it starts; publish until it has one message.
      // A refused publish (MQTT 5 PUBACK with an error reason) rejects and fails the test.
      const publishing = (async (): Promise<never> => {
        while (!done) {
          await client.publishAsync(topic, payload, { qos: 1 });
          await new Promise((r) => setTimeout(r, 200));
        }
        return new Promise<never>(() => undefined);
      })();
      try {
        const code = await withTimeout(
          Promise.race([exited, publishing]),
          15_000,
          () => new Error('mosquitto_sub did not exit within 15 s'),
        );
        assert.equal(code, 0, `mosquitto_sub exit ${code}: ${Buffer.concat(err).toString()}`);
        assert.ok(
          Buffer.concat(out).equals(Buffer.from(payload)),
          `payload differs: ${Buffer.concat(out).toString()}`,
        );
      } finally {
        done = true;
        if (sub.exitCode === null && sub.signalCode === null) sub.kill('SIGKILL');
        await exited.catch(() => undefined);
        await client.endAsync();
      }
    },
  );
});
