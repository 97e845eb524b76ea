/**
 * Issue 16, item 14, the stream process: `node dist/stream/main.js ingest features` under load
 * (QoS 1 over mqtt.js, HTTP batches) gets SIGTERM and
 *
 * - exits 0 within RECSYS_SHUTDOWN_TIMEOUT_MS, its log naming each stop step;
 * - every 202-answered event is in the topic (kcat), at once;
 * - every event the broker PUBACKed reaches the topic once a new bridge takes the same client id:
 *   what the stopping bridge had not written stayed, unacknowledged, in its broker session;
 * - the features consumer left its group (kafkajs admin: no members) and its committed offsets
 *   cover exactly what it applied: for each user, the last applied record (Redis `o`, read with
 *   redis-cli) is the last of that user's records below the committed offset, and the applied
 *   count (`n`) is the number of distinct events below it.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { sleep } from '../../../core/retry.js';
import type { UserEvent } from '../../../schemas/types.js';
import { config, requireServices, run, testKafka, uniq } from '../harness.js';
import {
  addMqttUser,
  AvroReader,
  bridgeSetup,
  BridgeProcess,
  Cleanup,
  readDecoded,
  waitForTopic,
} from '../ingest/bridge-process.js';
import { httpFlood, qos1Publisher } from '../ingest/flood.js';

/** This helper's Redis database. */
const DB = 4;
const DEADLINE_MS = 10_000;

const cleanup = new Cleanup();
after(() => cleanup.run());

async function redisHash(key: string): Promise<Record<string, string>> {
  const res = await run('redis-cli', [
    '-u',
    `${config.redis.url}/${DB}`,
    '--no-raw',
    'HGETALL',
    key,
  ]);
  assert.equal(res.code, 0, res.stderr);
  // --no-raw prints `1) "field"` / `2) "value"` lines.
  const items = [...res.stdout.matchAll(/^\s*\d+\) "(.*)"$/gm)].map((m) => m[1] as string);
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < items.length; i += 2) out[items[i] as string] = items[i + 1] as string;
  return out;
}

test(
  'SIGTERM under load: exit 0 in time, nothing accepted lost, offsets cover what was applied',
  { timeout: 300_000 },
  async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto', 'redis'))) return;
    const id = uniq('stop');
    const group = `${id}-features`;
    const setup = await bridgeSetup({
      RECSYS_REDIS_URL: `${config.redis.url}/${DB}`,
      RECSYS_GROUP_FEATURES: group,
      RECSYS_CONSUMER_SESSION_TIMEOUT_MS: '6000',
      RECSYS_SHUTDOWN_TIMEOUT_MS: String(DEADLINE_MS),
      RECSYS_LOG_LEVEL: 'info',
    });
    const mqttUsers = [uniq('m0'), uniq('m1'), uniq('m2')];
    const passwords = mqttUsers.map(() => uniq('pw'));
    const httpUsers = Array.from({ length: 12 }, (_, i) => `${id}-h${i}`);
    const bridge = cleanup.bridge(setup, ['ingest', 'features']);
    await Promise.all([
      bridge.waitReady(60_000),
      ...mqttUsers.map((u, i) => addMqttUser(u, passwords[i] as string)),
    ]);

    const publishers = await Promise.all(
      mqttUsers.map((u, i) => qos1Publisher(u, passwords[i] as string, 150)),
    );
    const http = httpFlood({
      baseUrl: setup.baseUrl,
      headers: setup.postHeaders,
      users: httpUsers,
      clients: 6,
      batch: 100,
    });
    t.after(async () => {
      for (const p of publishers) await p.stop();
      await http.stop();
    });
    await sleep(4000);
    assert.ok(http.accepted.length > 0, 'HTTP load is flowing');

    const t0 = performance.now();
    bridge.child.kill('SIGTERM');
    const exit = await Promise.race([bridge.exited, sleep(DEADLINE_MS + 5000).then(() => null)]);
    const stopMs = performance.now() - t0;
    await sleep(500);
    for (const p of publishers) await p.stop();
    await http.stop();
    t.diagnostic(`stopped in ${stopMs.toFixed(0)} ms: ${JSON.stringify(exit)}`);
    assert.ok(exit, `no exit within ${DEADLINE_MS + 5000} ms:\n${bridge.output}`);
    assert.deepEqual(exit, { code: 0, signal: null }, bridge.output);
    assert.ok(stopMs < DEADLINE_MS, `stopped in ${stopMs} ms`);
    for (const line of ['"stopping"', 'ingest queue flushed to Kafka', 'stopped cleanly']) {
      assert.ok(bridge.output.includes(line), `log has ${line}:\n${bridge.output.slice(-4000)}`);
    }

    // Accepted over HTTP: in Kafka already.
    const reader = new AvroReader();
    const first = await readDecoded<UserEvent>(reader, setup.topics.events);
    const firstIds = new Set(first.map((r) => r.value.eventId));
    const lostHttp = http.accepted.filter((eventId) => !firstIds.has(eventId));
    assert.deepEqual(lostHttp, [], `${lostHttp.length} of ${http.accepted.length} 202s missing`);

    // The group: left, and committed exactly what was applied.
    const admin = testKafka('shutdown').admin();
    await admin.connect();
    const committed = new Map<number, number>();
    try {
      const [described] = (await admin.describeGroups([group])).groups;
      assert.equal(described?.members.length, 0, `members left: ${JSON.stringify(described)}`);
      const [offsets] = await admin.fetchOffsets({ groupId: group, topics: [setup.topics.events] });
      for (const p of offsets?.partitions ?? []) committed.set(p.partition, Number(p.offset));
    } finally {
      await admin.disconnect();
    }
    const mine = new Set([...mqttUsers, ...httpUsers]);
    const checked = { users: 0, applied: 0 };
    for (const user of mine) {
      const records = first.filter((r) => r.key === user);
      const partition = records[0]?.partition;
      if (partition === undefined) continue;
      const below = records.filter((r) => r.offset < (committed.get(partition) ?? 0));
      const seen = new Set<string>();
      const applied = below.filter((r) => !seen.has(r.value.eventId) && seen.add(r.value.eventId));
      const h = await redisHash(`{u:${user}}:f`);
      const last = applied.at(-1);
      assert.equal(
        h.o ?? null,
        last ? `${partition}:${last.offset}` : null,
        `last applied, ${user}`,
      );
      assert.equal(Number(h.n ?? 0), applied.length, `applied count, ${user}`);
      checked.users++;
      checked.applied += applied.length;
    }
    const inTopic = first.filter((r) => mine.has(r.key ?? '')).length;
    t.diagnostic(
      `committed ${JSON.stringify([...committed])}; ${checked.applied} of ${inTopic} events applied and committed for ${checked.users} users`,
    );
    assert.ok(checked.users >= mine.size - 1 && checked.applied > 0);

    // PUBACKed by the broker: a new bridge with the same client id gets what was left.
    const acked = publishers.flatMap((p) => p.acked);
    const before = acked.filter((eventId) => firstIds.has(eventId)).length;
    const next = BridgeProcess.start(setup);
    try {
      await next.waitReady(60_000);
      const wanted = new Set(acked);
      const all = await waitForTopic<UserEvent>(
        reader,
        setup.topics.events,
        undefined,
        (r) => {
          const ids = new Set(r.map((x) => x.value.eventId));
          return [...wanted].every((eventId) => ids.has(eventId));
        },
        60_000,
      );
      const ids = new Set(all.map((x) => x.value.eventId));
      const lost = acked.filter((eventId) => !ids.has(eventId));
      t.diagnostic(
        `QoS 1: ${acked.length} PUBACKed, ${before} in Kafka at the stop, ${acked.length - lost.length} after the next bridge`,
      );
      assert.deepEqual(lost, [], `${lost.length} PUBACKed events lost`);
    } finally {
      await next.kill('SIGTERM');
    }
  },
);
