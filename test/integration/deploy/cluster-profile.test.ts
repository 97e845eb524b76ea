/**
 * deploy/local's cluster profile (issue 18, items 1 and 2): `up --profile cluster kafka redis`
 * starts 3 KRaft brokers and a 6-node Redis Cluster on spare ports, in a folder of its own (the
 * default stack is not touched), and forms the cluster; a second `up` changes nothing. Proved
 * from outside: kcat sees 3 brokers and the product's topic code (`ensureTopics`) makes topics
 * with 3 replicas, Kafka's own ConfigCommand shows min.insync.replicas=2 on them, the offsets
 * topic has 3 replicas; after the leader of a partition is SIGKILLed, an acks=all producer (the
 * product's) still writes to every partition and kcat reads every record back; redis-cli sees
 * 3 masters with one replica each and `cluster_state:ok`. Everything is stopped at the end, even
 * on failure.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../../core/config.js';
import { retry, sleep } from '../../../core/retry.js';
import { createProducer, ensureTopics } from '../../../stream/kafka.js';
import { CLI, config, describeTopicConfigs, log, run, testKafka } from '../harness.js';

const node = process.execPath;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port }, () => server.close(() => resolve(true)));
  });
}

/** A base port in [lo, hi) where base + every offset is free (a few random tries). */
async function spareBase(lo: number, hi: number, offsets: number[]): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = lo + Math.floor(Math.random() * (hi - lo));
    const free = await Promise.all(offsets.map((o) => portFree(base + o)));
    if (free.every(Boolean)) return base;
  }
  throw new Error(`no free ports in [${lo}, ${hi}) for offsets ${offsets.join(',')}`);
}

interface KcatTopic {
  topic: string;
  partitions: {
    partition: number;
    leader: number;
    replicas: { id: number }[];
    isrs: { id: number }[];
  }[];
}

describe('deploy/local cluster profile', () => {
  let dir = '';
  let env: NodeJS.ProcessEnv = {};
  let cluster: Readonly<Config>;
  let brokers = '';
  let redisPort = 0;

  const cli = (args: string[], timeoutMs = 240_000) =>
    run(node, [CLI, ...args], { env, timeoutMs });
  const kcat = (args: string[], timeoutMs = 30_000) =>
    run('kcat', ['-b', brokers, ...args], { timeoutMs });
  const redisCli = (port: number, ...args: string[]) =>
    run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args]);
  /**
   * kcat's metadata of `topic` once `settled` holds for it (or the last seen after 20 s): kcat
   * asks any broker, and a new topic or a fenced broker reaches each broker's metadata moments
   * after the controller decided it.
   */
  const topicMeta = async (
    topic: string,
    settled: (t: KcatTopic) => boolean = (t) =>
      t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0),
  ): Promise<KcatTopic> => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const res = await kcat(['-L', '-J', '-t', topic]);
      assert.equal(res.code, 0, res.stderr);
      const meta = JSON.parse(res.stdout) as { topics: KcatTopic[] };
      const found = meta.topics.find((t) => t.topic === topic);
      assert.ok(found, `kcat -L has no ${topic}`);
      if (settled(found) || Date.now() > deadline) return found;
      await sleep(250);
    }
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'recsys-cluster-'));
    // Spare ports, away from the default stack and any cluster profile already running:
    // brokers +0..2 and their controllers +100..102; Redis nodes +0..5 and buses +10000.
    // A run may name them (RECSYS_CLUSTER_KAFKA_PORT, RECSYS_CLUSTER_REDIS_PORT) instead.
    const kafkaOffsets = [0, 1, 2, 100, 101, 102];
    const redisOffsets = [0, 1, 2, 3, 4, 5, 10_000, 10_005];
    const kafkaPort = process.env.RECSYS_CLUSTER_KAFKA_PORT
      ? config.local.clusterKafkaPort
      : await spareBase(20_000, 29_000, kafkaOffsets);
    redisPort = process.env.RECSYS_CLUSTER_REDIS_PORT
      ? config.local.clusterRedisPort
      : await spareBase(20_000, 22_700, redisOffsets);
    for (const [base, offsets] of [
      [kafkaPort, kafkaOffsets],
      [redisPort, redisOffsets],
    ] as const) {
      for (const o of offsets) assert.ok(await portFree(base + o), `port ${base + o} is taken`);
    }
    env = {
      ...process.env,
      RECSYS_LOCAL_DIR: join(dir, 'local'),
      RECSYS_CLUSTER_KAFKA_PORT: String(kafkaPort),
      RECSYS_CLUSTER_REDIS_PORT: String(redisPort),
      // The cluster profile is plain, whatever the default stack runs with.
      RECSYS_SECURE_BACKBONE: '0',
      RECSYS_KAFKA_SASL_MECHANISM: '',
      RECSYS_LOG_LEVEL: 'warn',
    };
  });

  after(async () => {
    // Whatever happened: stop every node this folder recorded, then drop the folder.
    if (!dir) return;
    const t0 = Date.now();
    const res = await cli(['down', '--profile', 'cluster', 'kafka', 'redis'], 120_000);
    log.warn({ ms: Date.now() - t0, code: res.code }, 'cluster profile stopped');
    await rm(dir, { recursive: true, force: true });
  });

  test(
    'up forms 3 brokers and a 3+3 Redis Cluster; a second up changes nothing',
    { timeout: 280_000 },
    async () => {
      const t0 = Date.now();
      const first = await cli(['up', '--profile', 'cluster', 'kafka', 'redis']);
      assert.equal(first.code, 0, `up failed:\n${first.stdout}\n${first.stderr}`);
      log.warn({ ms: Date.now() - t0 }, 'cluster profile up');
      assert.match(first.stdout, /^redis cluster {2}created$/m);
      for (const n of ['kafka-1', 'kafka-2', 'kafka-3', 'redis-1', 'redis-6'])
        assert.match(first.stdout, new RegExp(`^${n} +started`, 'm'));
      const idsBefore = (await redisCli(redisPort, 'CLUSTER', 'MYID')).stdout.trim();

      const second = await cli(['up', '--profile', 'cluster', 'kafka', 'redis']);
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stdout, /^redis cluster {2}formed$/m);
      assert.doesNotMatch(second.stdout, / started /);
      assert.equal((await redisCli(redisPort, 'CLUSTER', 'MYID')).stdout.trim(), idsBefore);

      // The variables the profile prints are what the product's clients get.
      const exports = await cli(['cluster-env']);
      const vars = Object.fromEntries(
        [...exports.stdout.matchAll(/^export (\w+)='([^']*)'$/gm)].map((m) => [m[1], m[2]]),
      );
      assert.equal(vars.RECSYS_KAFKA_REPLICATION_FACTOR, '3');
      assert.equal(vars.RECSYS_KAFKA_MIN_INSYNC_REPLICAS, '2');
      assert.match(
        vars.RECSYS_REDIS_URL ?? '',
        new RegExp(`^redis-cluster://127.0.0.1:${redisPort},`),
      );
      brokers = vars.RECSYS_KAFKA_BROKERS ?? '';
      assert.equal(brokers.split(',').length, 3);
      // RECSYS_REDIS_URL's cluster form is the Redis Cluster client's to read (not this test's).
      cluster = loadConfig({ ...env, ...vars, RECSYS_REDIS_URL: config.redis.url });
    },
  );

  test('redis-cli: 3 masters, one replica each, every slot served', async () => {
    assert.ok(cluster, 'the cluster did not come up');
    const info = (await redisCli(redisPort, 'CLUSTER', 'INFO')).stdout;
    assert.match(info, /^cluster_state:ok\r?$/m);
    assert.match(info, /^cluster_known_nodes:6\r?$/m);
    assert.match(info, /^cluster_size:3\r?$/m);
    assert.match(info, /^cluster_slots_ok:16384\r?$/m);
    const nodes = (await redisCli(redisPort, 'CLUSTER', 'NODES')).stdout
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
    const masters = nodes.filter((n) => (n[2] ?? '').includes('master'));
    const replicas = nodes.filter((n) => (n[2] ?? '').includes('slave'));
    assert.equal(masters.length, 3);
    assert.equal(replicas.length, 3);
    // Each master has exactly one replica.
    assert.deepEqual(replicas.map((r) => r[3]).sort(), masters.map((m) => m[0]).sort());
    // A key written through one node is read through another (-c follows MOVED).
    assert.equal(
      (await redisCli(redisPort, '-c', 'SET', '{u:alice}:probe', 'v1')).stdout.trim(),
      'OK',
    );
    assert.equal(
      (await redisCli(redisPort + 5, '-c', 'GET', '{u:alice}:probe')).stdout.trim(),
      'v1',
    );
  });

  test(
    'topics at replication factor 3 and min.insync.replicas 2 survive a SIGKILLed broker',
    { timeout: 200_000 },
    async () => {
      // Which step failed, in the error: kafkajs' errors carry no useful stack.
      let step = 'metadata';
      try {
        assert.ok(cluster, 'the cluster did not come up');
        const meta = await kcat(['-L', '-J']);
        assert.equal((JSON.parse(meta.stdout) as { brokers: unknown[] }).brokers.length, 3);

        // The product's topic code, with the profile's settings.
        step = 'topic creation';
        const kafka = testKafka('cluster-test', cluster);
        await ensureTopics(kafka, cluster.kafka, log);
        const topic = cluster.kafka.topics.events;
        const before = await topicMeta(topic);
        assert.equal(before.partitions.length, cluster.kafka.partitions);
        for (const p of before.partitions) {
          assert.equal(p.replicas.length, 3, `partition ${p.partition} replicas`);
          assert.equal(p.isrs.length, 3, `partition ${p.partition} in-sync replicas`);
        }
        // Kafka's own tool: min.insync.replicas=2 is set on the topic itself.
        step = 'ConfigCommand';
        const described = await describeTopicConfigs(cluster.local.cacheDir, brokers, topic);
        assert.match(
          described,
          /^\s*min\.insync\.replicas=2 .*DYNAMIC_TOPIC_CONFIG:min\.insync\.replicas=2/m,
        );

        // A consumer group's offsets: the offsets topic is made at replication factor 3 too.
        step = 'consumer group offsets';
        const admin = kafka.admin();
        await admin.connect();
        const groupId = 'cluster-test';
        await admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '0' }] });
        const offsets = await topicMeta('__consumer_offsets');
        assert.ok(
          offsets.partitions.every((p) => p.replicas.length === 3),
          'offsets topic replicas',
        );

        // kcat writes through the three brokers.
        step = 'kcat write';
        const wrote = await run('kcat', ['-b', brokers, '-P', '-t', topic, '-p', '0', '-K', ':'], {
          input: 'k0:before-kill\n',
          timeoutMs: 30_000,
        });
        assert.equal(wrote.code, 0, wrote.stderr);

        // SIGKILL the broker leading partition 0 (its whole process group, as a crash would).
        const victim = before.partitions.find((p) => p.partition === 0)?.leader;
        assert.ok(victim, 'partition 0 has a leader');
        const pidFile = join(env.RECSYS_LOCAL_DIR as string, 'run', `kafka-${victim}.pid`);
        const { pid } = JSON.parse(await readFile(pidFile, 'utf8')) as { pid: number };
        const killedAt = Date.now();
        process.kill(-pid, 'SIGKILL');

        // The product's producer (acks=all) writes one record to every partition.
        step = 'producer connect';
        const producer = createProducer(kafka);
        // The metadata may name the dead broker until it catches up; the product's roles retry
        // their connect (retryForever) as here.
        await retry(() => producer.connect(), {
          attempts: 20,
          initialDelayMs: 200,
          maxDelayMs: 2000,
        });
        try {
          step = 'acks=all write after the kill';
          // The producer does not retry inside kafkajs (stream/kafka.ts); its callers do.
          await retry(
            () =>
              producer.send({
                topic,
                acks: -1,
                messages: before.partitions.map((p) => ({
                  partition: p.partition,
                  key: `k${p.partition}`,
                  value: `after-kill-${p.partition}`,
                })),
              }),
            { attempts: 40, initialDelayMs: 100, maxDelayMs: 1000, retriable: () => true },
          );
        } finally {
          await producer.disconnect();
        }
        const writeMs = Date.now() - killedAt;
        log.warn({ victim, writeMs }, 'acks=all write after a broker was killed');

        // Two in-sync replicas left everywhere, none led by the dead broker.
        step = 'metadata after the kill';
        const afterKill = await topicMeta(topic, (t) =>
          t.partitions.every((p) => p.leader !== victim && p.isrs.every((r) => r.id !== victim)),
        );
        for (const p of afterKill.partitions) {
          assert.notEqual(p.leader, victim, `partition ${p.partition} still led by ${victim}`);
          assert.equal(p.isrs.length, 2, `partition ${p.partition} ISR ${JSON.stringify(p.isrs)}`);
        }
        // The group's committed offset is still served (its coordinator moved if it had to).
        step = 'offsets after the kill';
        const fetched = await admin.fetchOffsets({ groupId, topics: [topic] });
        assert.equal(fetched[0]?.partitions.find((p) => p.partition === 0)?.offset, '0');
        await admin.disconnect();

        // kcat reads back every record: the one from before and one per partition from after.
        step = 'kcat read-back';
        const read = await kcat(
          ['-C', '-t', topic, '-o', 'beginning', '-e', '-f', '%p:%s\\n'],
          60_000,
        );
        assert.equal(read.code, 0, read.stderr);
        const lines = new Set(read.stdout.trim().split('\n'));
        assert.ok(lines.has('0:before-kill'), 'the record from before the kill');
        for (const p of before.partitions)
          assert.ok(
            lines.has(`${p.partition}:after-kill-${p.partition}`),
            `partition ${p.partition}`,
          );
        assert.equal(lines.size, before.partitions.length + 1);
      } catch (err) {
        if (err instanceof Error) err.message = `[${step}] ${err.message}`;
        throw err;
      }
    },
  );
});
