/**
 * The project's MQTT client against mosquitto_pub/mosquitto_sub, under the ACL the stack runs
 * with: a user may write only `recsys/events/<its username>`, the bridge account reads them all.
 * Payloads must cross byte for byte in both directions, from the device listener to the bridge
 * listener. Each listener takes only its own accounts.
 */
import { spawn } from 'node:child_process';
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withTimeout } from '../../../core/retry.js';
import { connectMqtt, type MqttClient } from '../../../stream/mqtt.js';
import { addMqttUser, config, requireServices, run, uniq } from '../harness.js';

const HOST = new URL(config.mqtt.url).hostname;
const PORT = new URL(config.mqtt.url).port || '1883';
const BRIDGE_HOST = new URL(config.mqtt.bridgeUrl).hostname;
const BRIDGE_PORT = new URL(config.mqtt.bridgeUrl).port || '1884';

/** Connects with the project's client, bounded (the bridge account to its own listener). */
function connectAs(username: string, password: string): Promise<MqttClient> {
  const url = username === config.mqtt.username ? config.mqtt.bridgeUrl : config.mqtt.url;
  return withTimeout(
    connectMqtt({ url, username, password, connectTimeoutMs: 3000 }),
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
        ['-h', BRIDGE_HOST, '-p', BRIDGE_PORT, '-u', config.mqtt.username, '-P'].concat([
          config.mqtt.password,
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

  test(
    'each listener refuses the other side: the bridge account on the device listener, a device on the bridge listener',
    { timeout: 60_000 },
    async (t) => {
      if (!(await requireServices(t, 'mosquitto'))) return;
      if (addUserError) throw addUserError;
      const attempt = (host: string, port: string, username: string, pw: string) =>
        run(
          'mosquitto_sub',
          ['-h', host, '-p', port, '-V', 'mqttv5', '-u', username, '-P', pw].concat([
            '-t',
            `${config.mqtt.topicPrefix}/${user}`,
            '-W',
            '2',
          ]),
          { timeoutMs: 15_000 },
        );
      // Control: each account on its own listener connects (and waits out -W: exit 27).
      for (const [host, port, name, pw] of [
        [HOST, PORT, user, password],
        [BRIDGE_HOST, BRIDGE_PORT, config.mqtt.username, config.mqtt.password],
      ] as const) {
        const ok = await attempt(host, port, name, pw);
        assert.doesNotMatch(ok.stderr, /not authori[sz]ed|bad user name or password/i, name);
        assert.equal(ok.code, 27, `${name}: exit ${ok.code}: ${ok.stderr}`);
      }
      const bridgeOnDevices = await attempt(HOST, PORT, config.mqtt.username, config.mqtt.password);
      assert.notEqual(bridgeOnDevices.code, 27, 'the bridge account connected to the devices');
      assert.match(bridgeOnDevices.stderr, /not authori[sz]ed|bad user name or password/i);
      const deviceOnBridge = await attempt(BRIDGE_HOST, BRIDGE_PORT, user, password);
      assert.notEqual(deviceOnBridge.code, 27, 'a device connected to the bridge listener');
      assert.match(deviceOnBridge.stderr, /not authori[sz]ed|bad user name or password/i);
    },
  );
});
