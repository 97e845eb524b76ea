/**
 * Benchmark load generator, run as a child process so its CPU is not the measuring process's.
 * Several MQTT connections, each authenticated as its own user and publishing QoS 1 events to
 * its own topic (the ACL allows nothing else). `rate` 0 means as fast as the broker takes them,
 * with at most `window` unacknowledged publishes per connection.
 *
 * Input: env BENCH_PUBLISHER (JSON of PublisherSpec). Output: one JSON line on stdout.
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';

export interface PublisherSpec {
  url: string;
  users: { username: string; password: string }[];
  topicPrefix: string;
  /** Events per second over all connections; 0 = unthrottled. */
  rate: number;
  durationMs: number;
  window: number;
}

const spec = JSON.parse(process.env.BENCH_PUBLISHER ?? '{}') as PublisherSpec;

async function connect(username: string, password: string): Promise<MqttClient> {
  const client = mqtt.connect(spec.url, {
    username,
    password,
    protocolVersion: 5,
    clean: true,
    reconnectPeriod: 0,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return client;
}

const clients = await Promise.all(spec.users.map((u) => connect(u.username, u.password)));
const items = Array.from({ length: 500 }, (_, i) => `item-${i}`);
const types = ['view', 'view', 'view', 'click', 'add_to_cart', 'like', 'purchase'];
let sent = 0;
let acked = 0;
let errors = 0;
const outstanding = new Array<number>(clients.length).fill(0);

function publishOne(i: number): void {
  const client = clients[i] as MqttClient;
  const user = spec.users[i]?.username as string;
  // `ts` is the send time: the benchmark measures from it to the Kafka append time.
  const event = {
    eventId: randomUUID(),
    userId: user,
    itemId: items[sent % items.length],
    type: types[sent % types.length],
    ts: Date.now(),
    context: { page: 'home', position: sent % 20, device: 'bench' },
  };
  sent++;
  outstanding[i] = (outstanding[i] ?? 0) + 1;
  client.publish(`${spec.topicPrefix}/${user}`, JSON.stringify(event), { qos: 1 }, (err) => {
    outstanding[i] = (outstanding[i] ?? 1) - 1;
    if (err) errors++;
    else acked++;
  });
}

const t0 = Date.now();
await new Promise<void>((resolve) => {
  let next = 0;
  const tick = (): void => {
    const elapsed = Date.now() - t0;
    if (elapsed >= spec.durationMs) return resolve();
    if (spec.rate > 0) {
      const due = Math.floor((spec.rate * elapsed) / 1000) - sent;
      for (let k = 0; k < due; k++) publishOne(next++ % clients.length);
      setTimeout(tick, 2);
    } else {
      let budget = 2000;
      for (let c = 0; c < clients.length && budget > 0; c++) {
        while ((outstanding[c] ?? 0) < spec.window && budget-- > 0) publishOne(c);
      }
      setImmediate(tick);
    }
  };
  tick();
});
const sendMs = Date.now() - t0;
// Let the last publishes be acknowledged by the broker.
const deadline = Date.now() + 10_000;
while (acked + errors < sent && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
await Promise.all(clients.map((c) => c.endAsync()));
process.stdout.write(JSON.stringify({ sent, acked, errors, sendMs }) + '\n');
