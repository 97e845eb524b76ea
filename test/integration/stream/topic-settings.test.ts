/**
 * ensureTopics on topics that already exist (stream/topic-settings.ts), against the configured
 * Kafka: topics made at replication factor 1 are raised to the brokers' count (up to 3) by
 * partition reassignment, and min.insync.replicas is set to what the replicas carry (2 on a
 * cluster; on one broker, lowered from 2 to 1), the items topic keeping cleanup.policy=compact.
 * Checked from outside with kcat (replicas per partition) and Kafka's own ConfigCommand.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig, type Config } from '../../../core/config.js';
import { sleep } from '../../../core/retry.js';
import { ensureTopics } from '../../../stream/kafka.js';
import {
  config,
  describeTopicConfigs,
  kcatArgs,
  log,
  requireServices,
  run,
  testKafka,
  uniq,
} from '../harness.js';

interface KcatTopic {
  topic: string;
  partitions: { partition: number; replicas: { id: number }[] }[];
}

describe('ensureTopics on existing topics', () => {
  const id = uniq('topicset');
  const topicEnv = {
    RECSYS_TOPIC_EVENTS: `${id}.events`,
    RECSYS_TOPIC_DLQ: `${id}.dlq`,
    RECSYS_TOPIC_SERVED: `${id}.served`,
    RECSYS_TOPIC_ITEMS: `${id}.items`,
    RECSYS_TOPIC_PARTITIONS: '3',
  };
  const cfg = (rf: number, isr: number): Readonly<Config> =>
    loadConfig({
      ...process.env,
      ...topicEnv,
      RECSYS_KAFKA_REPLICATION_FACTOR: String(rf),
      RECSYS_KAFKA_MIN_INSYNC_REPLICAS: String(isr),
    });
  const kafka = testKafka('topic-settings');

  after(async () => {
    const admin = kafka.admin();
    await admin.connect().catch(() => undefined);
    await admin.deleteTopics({ topics: Object.values(cfg(1, 1).kafka.topics) }).catch(() => {});
    await admin.disconnect().catch(() => undefined);
  });

  test('raises the replication factor and sets min.insync.replicas, keeping compaction', async (t) => {
    if (!(await requireServices(t, 'kafka'))) return;
    const admin = kafka.admin();
    await admin.connect();
    const brokers = (await admin.describeCluster()).brokers.length;
    await admin.disconnect();
    const rf = Math.min(3, brokers);
    // One broker: made with 2 (more than its one replica), brought down to 1. A cluster: made
    // with 1, brought up to 2 once the reassignment gave each partition 3 replicas.
    const [madeIsr, wantedIsr] = rf > 1 ? [1, 2] : [2, 1];
    // (The config refuses min.insync.replicas above a positive factor: one broker's default, -1.)
    await ensureTopics(kafka, cfg(rf > 1 ? 1 : -1, madeIsr).kafka, log);
    await ensureTopics(kafka, cfg(rf, wantedIsr).kafka, log);

    const items = topicEnv.RECSYS_TOPIC_ITEMS;
    // kcat asks any broker; the reassignment's end reaches each broker's metadata within moments.
    let meta: KcatTopic | undefined;
    for (let i = 0; i < 40; i++) {
      const res = await run('kcat', [...kcatArgs(config), '-L', '-J', '-t', items]);
      assert.equal(res.code, 0, res.stderr);
      meta = (JSON.parse(res.stdout) as { topics: KcatTopic[] }).topics.find(
        (x) => x.topic === items,
      );
      if (meta?.partitions.every((p) => p.replicas.length === rf)) break;
      await sleep(250);
    }
    assert.equal(meta?.partitions.length, 3);
    for (const p of meta?.partitions ?? []) {
      assert.equal(p.replicas.length, rf, `partition ${p.partition} replicas`);
    }

    const described = await describeTopicConfigs(
      config.local.cacheDir,
      config.kafka.brokers.join(','),
      items,
    );
    assert.match(
      described,
      new RegExp(`^\\s*min\\.insync\\.replicas=${wantedIsr} .*DYNAMIC_TOPIC_CONFIG`, 'm'),
    );
    assert.match(described, /^\s*cleanup\.policy=compact .*DYNAMIC_TOPIC_CONFIG/m);
  });
});
