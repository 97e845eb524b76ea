/**
 * The faults of the fault matrix's cluster form (`npm run chaos -- --profile cluster`): the
 * cluster profile of deploy/local (3 KRaft brokers, a Redis Cluster of 3 masters with a replica
 * each) and 2 processes of every role. Each fault returns its failover time: from the SIGKILL
 * until the path it broke works again, without waiting for the killed node or process to come
 * back (the generic recovery of `faults.ts`, everything ready and every backlog worked off, is
 * timed beside it):
 * - kill a Kafka broker (the leader of most partitions of the events topic): until the end offset
 *   of every events partition that was being written has moved past its end at the kill, i.e.
 *   the bridges' `acks=all` writes land on every partition again (a new leader elected, the dead
 *   broker out of the ISRs). The broker is started again after `nodeDownMs`.
 * - kill a Redis master (the master of one load user's slot): until a write to that slot
 *   succeeds, i.e. the master's slots are served by the promoted replica. The old master is
 *   started again after `nodeDownMs` and rejoins as a replica (`up` waits for 3 masters and
 *   3 replicas).
 * - kill one instance of a consumer role (features, indexer, lake): until every partition of the
 *   group's topics that had records waiting has its committed offset moved past the kill's, i.e.
 *   the sibling took over the killed member's partitions (after the session timeout) and worked
 *   on. The lake commits when it closes a file (RECSYS_LAKE_ROLL_MS), which the time includes.
 *   The instance is started again once that happened.
 * - kill one bridge (ingest): HTTP clients are balanced onto the other at the first refused
 *   connection; the time is the MQTT path's: a probe device publishes a valid event every 100 ms
 *   at QoS 1, and the time runs until every probe published from then on reaches the events
 *   topic within 2 s. The bridge is started again after `nodeDownMs` whatever happened (the
 *   broker may keep queuing the share group's messages for the dead bridge's session), and the
 *   detail says how many probes the sibling carried on time meanwhile.
 * - kill one feed server (its whole process): until every live socket is open again (on the
 *   other server) and a feed request is answered 200.
 */
import { join } from 'node:path';
import kafkajs from 'kafkajs';
import mqtt from 'mqtt';
import { Redis } from 'ioredis';
import { createLogger, sleep, type Config } from '../../core/index.js';
import { readPidFile } from '../../deploy/local/process.js';
import { userFeaturesKey } from '../../store/keys.js';
import { createRedis } from '../../store/redis.js';
import { createKafka } from '../../stream/kafka.js';
import { validEvent } from './events.js';
import { groupTopics, type Failover, type Fault, type FaultContext } from './faults.js';
import { probe, type ProcessName } from './product.js';

const QUIET = createLogger('silent', 'chaos-cluster');
const POLL_MS = 250;

const kafkaOf = (config: Readonly<Config>, role: string): kafkajs.Kafka =>
  createKafka(config.kafka, QUIET, role, { logLevel: kafkajs.logLevel.NOTHING });

/** SIGKILLs the deploy/local service `service` (its pid file in the stack's run directory). */
async function killService(ctx: FaultContext, service: string): Promise<void> {
  const record = await readPidFile(join(ctx.localDir, 'run', `${service}.pid`));
  if (!record) throw new Error(`${service}: no pid file in ${ctx.localDir}/run`);
  ctx.expectDown(service);
  process.kill(record.pid, 'SIGKILL');
}

/** `up <service> --profile cluster`, tried up to three times (as the single form's `stopFor`). */
async function startService(ctx: FaultContext, service: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await ctx.stackCli(['up', service, '--profile', 'cluster']);
      return;
    } catch (err) {
      if (attempt === 3) throw err;
      await sleep(5000);
    }
  }
}

async function waitFor(
  ctx: FaultContext,
  t0: number,
  done: () => Promise<boolean>,
): Promise<number | null> {
  while (Date.now() - t0 < ctx.failoverTimeoutMs) {
    if (await done().catch(() => false)) return Date.now() - t0;
    await sleep(POLL_MS);
  }
  return null;
}

async function endOffsets(admin: kafkajs.Admin, topic: string): Promise<Map<number, number>> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return new Map(offsets.map((o) => [o.partition, Number(o.high)]));
}

async function killBroker(ctx: FaultContext): Promise<Failover> {
  const topic = ctx.config.kafka.topics.events;
  const admin = kafkaOf(ctx.config, 'chaos-broker-fault').admin();
  await admin.connect();
  try {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    const led = new Map<number, number[]>();
    for (const p of meta.topics[0]?.partitions ?? []) {
      led.set(p.leader, [...(led.get(p.leader) ?? []), p.partitionId]);
    }
    const [broker, partitions] = [...led].sort((a, b) => b[1].length - a[1].length)[0] ?? [];
    if (broker === undefined) throw new Error(`${topic} has no partition leaders`);
    // Partitions being written: those whose end moved in the last 2 s.
    const before = await endOffsets(admin, topic);
    await sleep(2000);
    const atKill = await endOffsets(admin, topic);
    const active = [...atKill].filter(([p, end]) => end > (before.get(p) ?? 0)).map(([p]) => p);
    // node.id n is the service kafka-n (kafka-cluster.ts).
    const service = `kafka-${broker}`;
    const t0 = Date.now();
    await killService(ctx, service);
    const resumedMs: Record<number, number> = {};
    const ms = await waitFor(ctx, t0, async () => {
      const ends = await endOffsets(admin, topic);
      for (const p of active) {
        if ((ends.get(p) ?? 0) > (atKill.get(p) ?? 0)) resumedMs[p] ??= Date.now() - t0;
      }
      return active.every((p) => resumedMs[p] !== undefined);
    });
    await sleep(Math.max(0, t0 + ctx.nodeDownMs - Date.now()));
    await startService(ctx, service);
    return {
      ms,
      measure: 'every events partition being written takes acks=all writes again',
      detail: { killed: service, ledPartitions: partitions, resumedMs },
    };
  } finally {
    await admin.disconnect();
  }
}

/** The master serving `key`'s slot: its port (asked of any node that answers). */
async function masterPortOf(ctx: FaultContext, key: string): Promise<number> {
  for (let i = 0; i < 6; i++) {
    const node = new Redis(ctx.config.local.clusterRedisPort + i, '127.0.0.1', {
      lazyConnect: true,
      maxRetriesPerRequest: 1,
      connectTimeout: 1000,
      retryStrategy: () => null,
    });
    node.on('error', () => undefined);
    try {
      await node.connect();
      const slot = Number(await node.call('CLUSTER', 'KEYSLOT', key));
      const ranges = (await node.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
      const range = ranges.find(([from, to]) => slot >= from && slot <= to);
      if (range) return Number(range[2][1]);
    } catch {
      // Down or not answering: ask the next node.
    } finally {
      node.disconnect();
    }
  }
  throw new Error(`no Redis node says which master serves ${key}`);
}

async function killRedisMaster(ctx: FaultContext): Promise<Failover> {
  // The slot of a load user's features: the fault hits the product's own writes.
  const key = userFeaturesKey(ctx.loadUser());
  const probeKey = `${key.slice(0, key.indexOf('}') + 1)}:chaos-probe`;
  const port = await masterPortOf(ctx, key);
  const service = `redis-${port - ctx.config.local.clusterRedisPort + 1}`;
  const client = createRedis(ctx.config.redis.url, 'chaos-failover-probe');
  client.on('error', () => undefined);
  try {
    await client.set(probeKey, '0');
    const t0 = Date.now();
    await killService(ctx, service);
    const ms = await waitFor(ctx, t0, async () => {
      const write = client.set(probeKey, String(Date.now()));
      const answered = await Promise.race([write.then(() => true), sleep(1000).then(() => false)]);
      write.catch(() => undefined);
      return answered && (await masterPortOf(ctx, key)) !== port;
    });
    await sleep(Math.max(0, t0 + ctx.nodeDownMs - Date.now()));
    const restart = Date.now();
    await startService(ctx, service);
    const role = await redisRole(port);
    await client.del(probeKey).catch(() => undefined);
    return {
      ms,
      measure: "a write to the killed master's slot is served (by the promoted replica)",
      detail: { killed: service, port, rejoinedAs: role, rejoinMs: Date.now() - restart },
    };
  } finally {
    client.disconnect();
  }
}

async function redisRole(port: number): Promise<string> {
  const node = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1, lazyConnect: true });
  node.on('error', () => undefined);
  try {
    await node.connect();
    return String(((await node.call('ROLE')) as unknown[])[0]);
  } catch (err) {
    return `unknown (${(err as Error).message})`;
  } finally {
    node.disconnect();
  }
}

const GROUP_OF: Partial<Record<ProcessName, keyof Config['consumer']['groups']>> = {
  features: 'features',
  indexer: 'indexer',
  lake: 'lake',
};

/** Per topic and partition (`topic:partition`): committed offset of `group` (0 when none). */
async function committed(
  admin: kafkajs.Admin,
  group: string,
  topics: string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const t of await admin.fetchOffsets({ groupId: group, topics })) {
    for (const p of t.partitions)
      out.set(`${t.topic}:${p.partition}`, Math.max(0, Number(p.offset)));
  }
  return out;
}

async function ends(admin: kafkajs.Admin, topics: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const t of topics) {
    for (const [p, end] of await endOffsets(admin, t)) out.set(`${t}:${p}`, end);
  }
  return out;
}

function killConsumer(role: ProcessName): (ctx: FaultContext) => Promise<Failover> {
  return async (ctx) => {
    const group = ctx.config.consumer.groups[GROUP_OF[role] as keyof Config['consumer']['groups']];
    const topics = groupTopics(ctx.config)[group] ?? [];
    const name = ctx.product.instancesOf(role)[0] as string;
    const admin = kafkaOf(ctx.config, 'chaos-takeover').admin();
    await admin.connect();
    try {
      const c0 = await committed(admin, group, topics);
      const t0 = Date.now();
      await ctx.product.kill(name);
      const resumedMs: Record<string, number> = {};
      const ms = await waitFor(ctx, t0, async () => {
        const [now, end] = [await committed(admin, group, topics), await ends(admin, topics)];
        let waiting = 0;
        for (const [tp, e] of end) {
          const start = c0.get(tp) ?? 0;
          if (e <= start) continue; // nothing to do on this partition since the kill
          if ((now.get(tp) ?? 0) > start) resumedMs[tp] ??= Date.now() - t0;
          else waiting++;
        }
        return waiting === 0;
      });
      await sleep(Math.max(0, t0 + ctx.restartDelayMs - Date.now()));
      await ctx.product.start(name);
      const slowest = Object.entries(resumedMs).sort((a, b) => b[1] - a[1])[0];
      return {
        ms,
        measure: `every partition of ${role}'s group with records waiting commits again`,
        detail: { killed: name, partitionsResumed: Object.keys(resumedMs).length, slowest },
      };
    } finally {
      await admin.disconnect();
    }
  };
}

async function killBridge(ctx: FaultContext): Promise<Failover> {
  const { userId, password } = ctx.probeDevice;
  const topic = ctx.config.kafka.topics.events;
  const published = new Map<string, number>();
  const arrived = new Map<string, number>();
  const kafka = kafkaOf(ctx.config, 'chaos-bridge-probe');
  const groupId = `${ctx.prefix}-bridge-probe`;
  const consumer = kafka.consumer({ groupId });
  const device = await mqtt.connectAsync(ctx.config.mqtt.url, {
    protocolVersion: 5,
    clientId: userId,
    username: userId,
    password,
    clean: true,
    reconnectPeriod: 1000,
  });
  let publishing = true;
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: false });
    const joined = new Promise<void>((resolve) =>
      consumer.on(consumer.events.GROUP_JOIN, () => resolve()),
    );
    await consumer.run({
      eachMessage: async ({ message }) => {
        const id = message.headers?.['event-id']?.toString();
        if (id && published.has(id)) arrived.set(id, Date.now());
      },
    });
    await joined;
    const publisher = (async () => {
      while (publishing) {
        const event = validEvent(ctx.prefix, userId);
        const id = event.eventId as string;
        published.set(id, Date.now());
        device.publish(`${ctx.config.mqtt.topicPrefix}/${userId}`, JSON.stringify(event), {
          qos: 1,
        });
        await sleep(100);
      }
    })();
    await sleep(2000);
    const name = ctx.product.instancesOf('ingest')[0] as string;
    const t0 = Date.now();
    await ctx.product.kill(name);
    // Failed over from the first probe on after which every probe arrived within 2 s.
    const since = (): number | null => {
      let first: number | null = null;
      for (const [id, at] of published) {
        if (at < t0 || Date.now() - at < 2000) continue;
        const got = arrived.get(id);
        if (got === undefined || got - at > 2000) first = null;
        else first ??= at;
      }
      return first;
    };
    // The killed bridge comes back after nodeDownMs, as a supervisor would restart it; the
    // time runs on across the restart when the sibling alone did not carry every probe.
    const restart = sleep(ctx.nodeDownMs).then(() => ctx.product.start(name));
    restart.catch(() => undefined);
    let ms = await waitFor(ctx, t0, async () => {
      const first = since();
      return first !== null && Date.now() - first >= 5000;
    });
    if (ms !== null) ms = (since() ?? t0) - t0;
    await restart;
    publishing = false;
    await publisher;
    // What the sibling carried while the killed bridge was away.
    const whileDown = [...published].filter(
      ([, at]) => at >= t0 && at < t0 + ctx.nodeDownMs - 2000,
    );
    const onTime = whileDown.filter(([id, at]) => (arrived.get(id) ?? Infinity) - at <= 2000);
    return {
      ms,
      measure: 'MQTT probe events (10/s) reach Kafka within 2 s again',
      detail: {
        killed: name,
        restartedAfterMs: ctx.nodeDownMs,
        probesWhileDown: whileDown.length,
        onTimeWhileDown: onTime.length,
        neverArrived: [...published].filter(([id, at]) => at >= t0 && !arrived.has(id)).length,
      },
    };
  } finally {
    publishing = false;
    await device.endAsync().catch(() => undefined);
    await consumer.disconnect().catch(() => undefined);
    const admin = kafka.admin();
    await admin
      .connect()
      .then(() => admin.deleteGroups([groupId]))
      .catch(() => undefined);
    await admin.disconnect().catch(() => undefined);
  }
}

async function killServer(ctx: FaultContext): Promise<Failover> {
  const name = ctx.product.instancesOf('serving')[0] as string;
  const t0 = Date.now();
  await ctx.product.kill(name);
  const ms = await waitFor(ctx, t0, async () => {
    if (ctx.openSockets() < ctx.liveSockets) return false;
    return (await probe(ctx.product.port('serving'), '/readyz')) === 200;
  });
  await sleep(Math.max(0, t0 + ctx.restartDelayMs - Date.now()));
  await ctx.product.start(name);
  return {
    ms,
    measure: 'every live socket open again (on the other server)',
    detail: { killed: name },
  };
}

/** The cluster form's faults, in the order the full run takes them. */
export const CLUSTER_FAULTS: readonly Fault[] = [
  { name: 'none (control)', run: async () => undefined },
  { name: 'kill kafka broker', backbone: 'kafka-1', run: killBroker },
  { name: 'kill redis master', backbone: 'redis-1', run: killRedisMaster },
  { name: 'kill 1 of 2 bridges', run: killBridge },
  { name: 'kill 1 of 2 features', run: killConsumer('features') },
  { name: 'kill 1 of 2 indexers', run: killConsumer('indexer') },
  { name: 'kill 1 of 2 lake sinks', run: killConsumer('lake') },
  { name: 'kill 1 of 2 servers', run: killServer },
];

/** The cluster faults by a short key. */
export const CLUSTER_FAULT_KEYS: Readonly<Record<string, string>> = {
  none: 'none (control)',
  'kafka-broker': 'kill kafka broker',
  'redis-master': 'kill redis master',
  bridge: 'kill 1 of 2 bridges',
  features: 'kill 1 of 2 features',
  indexer: 'kill 1 of 2 indexers',
  lake: 'kill 1 of 2 lake sinks',
  serving: 'kill 1 of 2 servers',
};
