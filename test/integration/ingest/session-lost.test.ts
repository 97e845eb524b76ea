/**
 * The bridge says when the broker dropped its session: a device account connects with the
 * bridge's client id and a clean start (mosquitto_sub as the attacker, issue 16 item 3), which
 * takes the connection and discards the session; the bridge reconnects, finds no session, and
 * counts it in recsys_ingest_mqtt_sessions_lost_total (read with curl), which the
 * RecsysBridgeSessionLost alert watches. Until then the count is 0.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep } from '../../../core/retry.js';
import { requireServices, uniq } from '../harness.js';
import { addMqttUser, bridgeSetup, Cleanup, MQTT_HOST, MQTT_PORT, run } from './bridge-process.js';

const cleanup = new Cleanup();
after(() => cleanup.run());

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

test(
  'a clean-start takeover of the bridge client id is counted as a lost session',
  { timeout: 120_000 },
  async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
    const setup = await bridgeSetup();
    const bridge = cleanup.bridge(setup);
    const attacker = { user: uniq('att'), password: uniq('pw') };
    await Promise.all([bridge.waitReady(), addMqttUser(attacker.user, attacker.password)]);
    assert.equal(await metric(setup.baseUrl, 'recsys_ingest_mqtt_sessions_lost_total'), 0);
    assert.equal(await metric(setup.baseUrl, 'recsys_ingest_mqtt_connected'), 1, 'connected');

    // The attacker: the bridge's client id, clean start (mosquitto_sub's default), 2 s.
    await run(
      'mosquitto_sub',
      ['-h', MQTT_HOST, '-p', MQTT_PORT, '-V', 'mqttv5', '-u', attacker.user, '-P'].concat([
        attacker.password,
        '-i',
        setup.clientId,
        '-t',
        `recsys/events/${attacker.user}`,
        '-W',
        '2',
      ]),
      { timeoutMs: 20_000 },
    );

    let lost = 0;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      lost = await metric(setup.baseUrl, 'recsys_ingest_mqtt_sessions_lost_total');
      if (lost >= 1 && (await metric(setup.baseUrl, 'recsys_ingest_mqtt_connected')) === 1) break;
      await sleep(250);
    }
    assert.ok(lost >= 1, `no lost session counted; bridge output:\n${bridge.output}`);
    assert.equal(await metric(setup.baseUrl, 'recsys_ingest_mqtt_connected'), 1, 'reconnected');
    assert.match(bridge.output, /mqtt session was gone on reconnect/);
  },
);
