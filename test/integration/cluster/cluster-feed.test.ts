/**
 * The product on a Redis Cluster (3 masters, 3 replicas, started here): devices publish over
 * MQTT (`mosquitto_pub`); two stream processes (`node dist/stream/main.js ingest features`) are
 * two bridges sharing the subscription and two feature consumers in one group, applying the
 * events into the cluster; two feed servers (`node dist/serving/main.js`), each with a live
 * socket of its own user, push that user's new feed when its features change: the sharded
 * change signal reaches the server holding the socket (and only it). A feed from either server
 * reflects the events. Kafka, the registry and Mosquitto are the configured ones.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { mintToken, WS_PROTOCOL } from '../../../core/auth.js';
import { loadConfig, type Config } from '../../../core/config.js';
import { sleep } from '../../../core/retry.js';
import { CatalogStore } from '../../../store/catalog.js';
import { userFeaturesKey } from '../../../store/keys.js';
import { createRedis, type RedisClient } from '../../../store/redis.js';
import { TrendingStore } from '../../../store/trending.js';
import { AssignerProtocol } from 'kafkajs';
import {
  addMqttUser,
  CI,
  productEnv,
  requireServices,
  run,
  startProduct,
  testKafka,
  uniq,
} from '../harness.js';
import { deleteTopics, freePort } from '../ingest/bridge-process.js';
import { type RedisClusterProcesses, startRedisCluster } from './redis-cluster.js';

interface Frame {
  type: string;
  feed: { items: { itemId: string; source: string }[] };
}

/** A live socket of `userId` on the server at `port`, collecting its feed frames. */
async function liveSocket(
  config: Readonly<Config>,
  port: number,
  userId: string,
): Promise<{ frames: Frame[]; ws: WebSocket }> {
  const token = await mintToken(config.serving, userId, 600);
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/feed`, [WS_PROTOCOL, `bearer.${token}`]);
  const frames: Frame[] = [];
  ws.on('message', (data: Buffer) => frames.push(JSON.parse(data.toString()) as Frame));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  for (let i = 0; i < 250 && frames.length === 0; i++) await sleep(20);
  assert.equal(frames[0]?.type, 'feed', `${userId}: the current feed on open`);
  return { frames, ws };
}

const ids = (frame: Frame | undefined): string[] => frame?.feed.items.map((i) => i.itemId) ?? [];

describe('the product on a Redis Cluster', { timeout: 240_000 }, () => {
  let cluster: RedisClusterProcesses | null = null;
  let redis: RedisClient | null = null;
  let dir = '';
  let env: NodeJS.ProcessEnv = {};
  let config: Readonly<Config> | null = null;
  const children: ChildProcess[] = [];
  const sockets: WebSocket[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cluster-feed-'));
  });

  after(async () => {
    for (const ws of sockets) ws.terminate();
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    redis?.disconnect();
    await cluster?.stop();
    if (config) await deleteTopics(Object.values(config.kafka.topics)).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('MQTT through 2 bridges and 2 feature consumers into the cluster; 2 servers push and serve', async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
    if ((await run('redis-server', ['--version']).catch(() => null))?.code !== 0) {
      if (CI) throw new Error('redis-server is not installed');
      return t.skip('redis-server not installed');
    }
    cluster = await startRedisCluster();
    const id = uniq('rc');
    env = productEnv(dir, id, 0, { RECSYS_REDIS_URL: cluster.url, RECSYS_LIVE_COALESCE_MS: '20' });
    config = loadConfig(env);
    assert.ok(config.redis.cluster, 'the processes get the cluster form');
    redis = createRedis(cluster.url, 'test');
    redis.on('error', () => undefined);

    // A catalog of 9 items in 3 categories, it-1 the most trending.
    const now = Date.now();
    await new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 }).upsert(
      Array.from({ length: 9 }, (_, i) => ({
        itemId: `it-${i + 1}`,
        categoryL1: `c${i % 3}`,
        categoryL2: null,
        price: 10 + i,
        isAvailable: true,
        createdAt: now - 30 * 86_400_000, // not new: no exploration
      })),
    );
    let offset = 0;
    await new TrendingStore(redis, config.trending).apply(
      'seed',
      0,
      Array.from({ length: 6 }, (_, i) =>
        Array.from({ length: 6 - i }, () => ({
          itemId: `it-${i + 1}`,
          category: `c${i % 3}`,
          ts: now,
          offset: String(offset++),
        })),
      ).flat(),
    );

    const userA = uniq('ua').replace(/[^A-Za-z0-9_.:@-]/g, '');
    const userB = uniq('ub').replace(/[^A-Za-z0-9_.:@-]/g, '');
    const passwords = new Map([userA, userB].map((u) => [u, `pw-${u}`]));
    for (const [u, pw] of passwords) await addMqttUser(u, pw);
    const ports = [await freePort(), await freePort(), await freePort(), await freePort()];
    const [streamPort1, streamPort2, portA, portB] = ports as [number, number, number, number];
    // Two bridges (one MQTT share group, a client id each) and two feature consumers (one group).
    for (const [n, port] of [streamPort1, streamPort2].entries()) {
      const own = { ...env, RECSYS_MQTT_CLIENT_ID: `${id}/bridge-${n + 1}` };
      children.push(
        await startProduct('dist/stream/main.js', ['ingest', 'features'], own, port, '/readyz'),
      );
    }
    children.push(await startProduct('dist/serving/main.js', [], env, portA, '/healthz'));
    children.push(await startProduct('dist/serving/main.js', [], env, portB, '/healthz'));

    const onA = await liveSocket(config, portA, userA);
    const onB = await liveSocket(config, portB, userB);
    sockets.push(onA.ws, onB.ws);
    assert.ok(ids(onA.frames[0]).includes('it-1'), 'it-1 (trending) in the feed before');

    // Devices publish with mosquitto_pub, each as its own account.
    const mqtt = new URL(config.mqtt.url);
    const prefix = config.mqtt.topicPrefix;
    const publish = async (events: { userId: string; itemId: string; type: string }[]) => {
      for (const e of events) {
        const body = { eventId: crypto.randomUUID(), ...e, ts: Date.now() };
        const res = await run('mosquitto_pub', [
          ...['-h', mqtt.hostname, '-p', mqtt.port || '1883', '-V', 'mqttv5', '-q', '1'],
          ...['-u', e.userId, '-P', passwords.get(e.userId) as string],
          ...['-t', `${prefix}/${e.userId}`, '-m', JSON.stringify(body)],
        ]);
        assert.equal(res.code, 0, `mosquitto_pub: ${res.stderr}`);
      }
    };
    // userA buys it-1 (a purchase consumes it: never shown to userA again); userB views items.
    const t0 = Date.now();
    await publish([
      { userId: userA, itemId: 'it-1', type: 'purchase' },
      ...[2, 3, 4, 5].map((i) => ({ userId: userB, itemId: `it-${i}`, type: 'view' })),
    ]);
    for (let i = 0; i < 500 && (onA.frames.length < 2 || onB.frames.length < 2); i++) {
      await sleep(20);
    }
    const pushMs = Date.now() - t0;
    assert.ok(onA.frames.length >= 2, `server A pushed userA's new feed (${onA.frames.length})`);
    assert.ok(onB.frames.length >= 2, `server B pushed userB's new feed (${onB.frames.length})`);
    assert.ok(!ids(onA.frames.at(-1)).includes('it-1'), 'the pushed feed reflects the purchase');

    // The features are in the cluster where redis-cli -c finds them (on the user's slot master).
    const port = await cluster.masterOf(userFeaturesKey(userA));
    const total = await cluster.cli(['HGET', userFeaturesKey(userA), 'n'], { port, follow: false });
    assert.equal(total.stdout.trim(), '1');

    // Both bridges took MQTT events (the broker shares the subscription round-robin), and the
    // feature group has two members, each holding partitions.
    const accepted = await Promise.all(
      [streamPort1, streamPort2].map(async (p) => {
        const text = await (await fetch(`http://127.0.0.1:${p}/metrics`)).text();
        const line = text
          .split('\n')
          .find((l) => l.startsWith('recsys_ingest_events_total{source="mqtt",outcome="accepted"'));
        return Number(line?.split(' ').pop() ?? 0);
      }),
    );
    assert.ok(
      accepted.every((n) => n > 0),
      `events per bridge: ${accepted}`,
    );
    assert.equal(
      accepted.reduce((x, y) => x + y, 0),
      5,
    );
    const admin = testKafka('cluster-feed').admin();
    await admin.connect();
    try {
      const [group] = (await admin.describeGroups([config.consumer.groups.features])).groups;
      const topic = config.kafka.topics.events;
      const owned = (group?.members ?? []).map(
        (m) =>
          AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment[topic]?.length ??
          0,
      );
      assert.ok(owned.length === 2 && owned.every((n) => n > 0), `partitions per member: ${owned}`);
    } finally {
      await admin.disconnect();
    }

    // A feed from either server reflects userA's purchase; userB's still holds it-1.
    for (const p of [portA, portB]) {
      const token = await mintToken(config.serving, userA, 600);
      const res = await fetch(`http://127.0.0.1:${p}/v1/users/${userA}/feed?limit=20`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 200);
      const body = (await res.json()) as Frame['feed'];
      assert.ok(body.items.length > 0 && !body.items.some((i) => i.itemId === 'it-1'), `port ${p}`);
    }
    assert.ok(ids(onB.frames.at(-1)).includes('it-1'), "userB's feed keeps it-1");
    // Each server pushed only to its own socket's user: userB's socket got no frame for userA.
    const extraB = onB.frames.length;
    await publish([{ userId: userA, itemId: 'it-3', type: 'view' }]);
    for (let i = 0; i < 250 && onA.frames.length < 3; i++) await sleep(20);
    assert.ok(onA.frames.length >= 3, 'server A pushed again');
    await sleep(300);
    assert.equal(onB.frames.length, extraB, "userA's change never reached server B's socket");
    t.diagnostic(`events to pushes on both servers in ${pushMs} ms`);
  });
});
