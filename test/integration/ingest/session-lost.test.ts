/**
 * The client-id takeover of issue 16 item 3 is impossible. An attacker with an ordinary device
 * account connects with the bridge's client id, as mosquitto_sub and as mosquitto_pub, with
 * clean start 1 (which discarded the bridge's session: events acknowledged to their publisher
 * never reached Kafka) and with clean start 0 and a session expiry (where the attacker and the
 * bridge kicked each other off, 11 reconnects in 12 s). Now the device listener makes every
 * client id the client's username, and the bridge has a listener of its own that takes no device
 * account. While each attack runs a device publishes events at QoS 1: every event acknowledged to
 * its publisher (the victim's and the attacker's own) reaches Kafka, and the bridge never loses
 * its connection or its session (recsys_ingest_mqtt_reconnects_total and
 * recsys_ingest_mqtt_sessions_lost_total stay 0, read with curl). The control at the end shows
 * those counters do move: the bridge account itself, on the bridge listener, with the bridge's
 * client id and a clean start, does take the session, and it is counted.
 */
import { spawn } from 'node:child_process';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep } from '../../../core/retry.js';
import { config, requireServices, uniq } from '../harness.js';
import {
  addMqttUser,
  AvroReader,
  BRIDGE_PORT,
  bridgeSetup,
  Cleanup,
  MQTT_HOST,
  MQTT_PORT,
  mosquittoPub,
  run,
  validEvent,
  waitForTopic,
  type EventJson,
} from './bridge-process.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

const BRIDGE_HOST = new URL(config.mqtt.bridgeUrl).hostname;
/** How long each attacker holds its connection, seconds. */
const HOLD_S = 4;

/** One metric's value from the bridge's /metrics, fetched with curl. */
async function metric(baseUrl: string, name: string): Promise<number> {
  const res = await run('curl', ['-sf', `${baseUrl}/metrics`], { timeoutMs: 10_000 });
  assert.equal(res.code, 0, `curl /metrics: ${res.stderr}`);
  // `name 1` or `name{role="ingest"} 1`.
  const line = res.stdout
    .split('\n')
    .find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  assert.ok(line, `${name} is not exported`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

interface Attack {
  name: string;
  tool: 'mosquitto_sub' | 'mosquitto_pub';
  /** Clean start 0 with a session expiry (-c -x), or clean start 1. */
  persistent: boolean;
}

const ATTACKS: Attack[] = [
  { name: 'mosquitto_sub, clean start 1', tool: 'mosquitto_sub', persistent: false },
  { name: 'mosquitto_sub, clean start 0', tool: 'mosquitto_sub', persistent: true },
  { name: 'mosquitto_pub, clean start 1', tool: 'mosquitto_pub', persistent: false },
  { name: 'mosquitto_pub, clean start 0', tool: 'mosquitto_pub', persistent: true },
];

/**
 * Starts the attacker on the device listener with the bridge's client id; resolves once the
 * broker accepted its CONNECT (mosquitto's -d output), with the promise of its exit.
 */
async function startAttack(
  attack: Attack,
  account: { user: string; password: string },
  clientId: string,
  ownEvent: EventJson,
): Promise<{ exited: Promise<{ code: number | null; output: string }> }> {
  const args = ['-h', MQTT_HOST, '-p', MQTT_PORT, '-V', 'mqttv5', '-d', '-i', clientId];
  args.push('-u', account.user, '-P', account.password);
  if (attack.persistent) args.push('-c', '-x', '60');
  if (attack.tool === 'mosquitto_sub') {
    // What an eavesdropper would ask for; the read ACL gives it nothing.
    args.push('-t', `${config.mqtt.topicPrefix}/#`, '-q', '1', '-W', String(HOLD_S));
  } else {
    // Its own (valid) event, again and again for HOLD_S seconds: the connection stays up.
    args.push('-t', `${config.mqtt.topicPrefix}/${account.user}`, '-q', '1');
    args.push('-m', JSON.stringify(ownEvent), '--repeat', String(HOLD_S * 5));
    args.push('--repeat-delay', '0.2');
  }
  const child = spawn(attack.tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let connected: () => void = () => undefined;
  const accepted = new Promise<void>((resolve) => (connected = resolve));
  const keep = (d: Buffer): void => {
    output += d.toString();
    if (/received CONNACK \(0\)/.test(output)) connected();
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<{ code: number | null; output: string }>((resolve) =>
    child.once('close', (code) => resolve({ code, output })),
  );
  const timer = setTimeout(() => child.kill('SIGKILL'), (HOLD_S + 20) * 1000);
  void exited.then(() => clearTimeout(timer));
  await Promise.race([
    accepted,
    exited.then(({ code, output: out }) =>
      assert.fail(`${attack.name}: the attacker never connected (exit ${code}):\n${out}`),
    ),
  ]);
  return { exited };
}

test(
  "a device account cannot take the bridge's client id: no event lost, no bridge disconnect",
  { timeout: 240_000 },
  async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
    const setup = await bridgeSetup();
    const bridge = cleanup.bridge(setup);
    const attacker = { user: uniq('att'), password: uniq('pw') };
    const victim = { user: uniq('vic'), password: uniq('pw') };
    await Promise.all([
      bridge.waitReady(),
      addMqttUser(attacker.user, attacker.password),
      addMqttUser(victim.user, victim.password),
    ]);
    const counters = async () => ({
      reconnects: await metric(setup.baseUrl, 'recsys_ingest_mqtt_reconnects_total'),
      sessionsLost: await metric(setup.baseUrl, 'recsys_ingest_mqtt_sessions_lost_total'),
      connected: await metric(setup.baseUrl, 'recsys_ingest_mqtt_connected'),
    });
    assert.deepEqual(await counters(), { reconnects: 0, sessionsLost: 0, connected: 1 });

    const acked: EventJson[] = [];
    const attackerEvents: EventJson[] = [];
    for (const attack of ATTACKS) {
      const own = validEvent(attacker.user);
      const { exited } = await startAttack(attack, attacker, setup.clientId, own);
      // The attacker holds the connection: the victim publishes, one PUBACK each.
      for (let i = 0; i < 3; i++) {
        const e = validEvent(victim.user, { itemId: `${attack.tool}-${attack.persistent}-${i}` });
        const pub = await mosquittoPub(JSON.stringify(e), {
          username: victim.user,
          password: victim.password,
        });
        assert.equal(pub.code, 0, `${attack.name}: publish ${i}: ${pub.stderr}`);
        acked.push(e);
      }
      const { code, output } = await exited;
      // mosquitto_sub stayed connected until -W (exit 27); mosquitto_pub sent all its repeats.
      assert.equal(code, attack.tool === 'mosquitto_sub' ? 27 : 0, `${attack.name}:\n${output}`);
      if (attack.tool === 'mosquitto_pub') attackerEvents.push(own);
      assert.deepEqual(await counters(), { reconnects: 0, sessionsLost: 0, connected: 1 });
    }

    // The attacker on the bridge listener, where its account does not exist: refused.
    const refused = await run(
      'mosquitto_sub',
      ['-h', BRIDGE_HOST, '-p', BRIDGE_PORT, '-V', 'mqttv5', '-i', setup.clientId].concat([
        '-u',
        attacker.user,
        '-P',
        attacker.password,
        '-t',
        `${config.mqtt.topicPrefix}/#`,
        '-W',
        '2',
      ]),
      { timeoutMs: 20_000 },
    );
    assert.notEqual(refused.code, 27, 'a device account connected to the bridge listener');
    assert.match(refused.stderr + refused.stdout, /not authori[sz]ed/i);

    // Every event acknowledged to its publisher is in Kafka: the victim's and the attacker's.
    const reader = new AvroReader();
    for (const [user, events] of [
      [victim.user, acked],
      [attacker.user, attackerEvents],
    ] as const) {
      const want = new Set(events.map((e) => e.eventId));
      const records = await waitForTopic<{ eventId: string }>(
        reader,
        setup.topics.events,
        user,
        (rs) => [...want].every((id) => rs.some((r) => r.value.eventId === id)),
        30_000,
      );
      const got = new Set(records.map((r) => r.value.eventId));
      const missing = [...want].filter((id) => !got.has(id));
      assert.deepEqual(missing, [], `${user}: acknowledged events missing from Kafka`);
    }
    assert.deepEqual(await counters(), { reconnects: 0, sessionsLost: 0, connected: 1 });
    assert.doesNotMatch(bridge.output, /connection lost|session was gone/);

    // Control: the bridge account on its own listener with the bridge's id and a clean start
    // does take over, and the counters show it (so their zeros above mean something).
    await run(
      'mosquitto_sub',
      ['-h', BRIDGE_HOST, '-p', BRIDGE_PORT, '-V', 'mqttv5', '-i', setup.clientId].concat([
        '-u',
        config.mqtt.username,
        '-P',
        config.mqtt.password,
        '-t',
        `${config.mqtt.topicPrefix}/#`,
        '-W',
        '2',
      ]),
      { timeoutMs: 20_000 },
    );
    let after = await counters();
    const deadline = Date.now() + 30_000;
    while (!(after.sessionsLost >= 1 && after.connected === 1) && Date.now() < deadline) {
      await sleep(250);
      after = await counters();
    }
    assert.ok(after.sessionsLost >= 1, `control: no lost session counted:\n${bridge.output}`);
    assert.ok(after.reconnects >= 1, 'control: no reconnect counted');
    assert.equal(after.connected, 1, 'control: the bridge reconnected');
    assert.match(bridge.output, /mqtt session was gone on reconnect/);
  },
);
