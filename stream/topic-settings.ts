/**
 * Existing topics brought to the configured replication factor and `min.insync.replicas`
 * (RECSYS_KAFKA_REPLICATION_FACTOR, RECSYS_KAFKA_MIN_INSYNC_REPLICAS). `ensureTopics` creates
 * missing topics with them; a topic made earlier (by a single-broker stack, or before the
 * variables changed) keeps what it was made with unless changed here:
 *
 * 1. A replication factor below the configured one is raised by partition reassignment
 *    (AlterPartitionReassignments, Kafka 2.4+): each partition keeps its replicas, in order (the
 *    leader stays), and gains the brokers holding the fewest replicas so far. The brokers copy
 *    the data in the background; this waits up to `reassignWaitMs` for it.
 * 2. `min.insync.replicas` is set to the configured value when it differs and the topic's
 *    replication factor carries it (a value above the replica count would refuse every acks=all
 *    write). The legacy AlterConfigs request replaces a topic's whole configuration, so the
 *    topic's other settings of its own (`cleanup.policy=compact` of the items topic) are sent
 *    along unchanged.
 * 3. What is not done (a factor above the configured one, too few brokers, a change the login
 *    may not make) is logged as a warning with the command that does it.
 *
 * The decisions are {@link planTopicSettings}, a pure function; {@link reconcileTopicSettings}
 * reads the cluster, applies the plan and logs.
 */
import kafkajs, { type Admin } from 'kafkajs';
import { sleep, type KafkaConfig, type Logger } from '../core/index.js';

/** What the cluster says of one topic. */
export interface TopicState {
  name: string;
  /** Each partition's replicas (broker ids), the preferred leader first. */
  partitions: { partition: number; replicas: number[] }[];
  /** The topic's `min.insync.replicas` as the broker applies it (its own or the default). */
  minInsyncReplicas: number;
  /** The topic's own settings (DYNAMIC_TOPIC_CONFIG), which AlterConfigs must repeat. */
  ownConfig: Record<string, string>;
}

/** What {@link planTopicSettings} decides for one topic. */
export interface TopicPlan {
  topic: string;
  /** New replica lists, for partitions below the replication factor; empty when none. */
  reassign: { partition: number; replicas: number[] }[];
  /** The topic's full own configuration to send, or null when min.insync.replicas stays. */
  alterConfig: Record<string, string> | null;
  /** What cannot or should not be changed here, each with the command that changes it. */
  warnings: string[];
}

/**
 * Decides what to change on `topic` for the configured `replicationFactor` and
 * `minInsyncReplicas` (each -1 or 0: the broker's default, nothing to enforce) with `brokers`
 * (ids) alive. `bootstrap` goes into the commands of the warnings.
 */
export function planTopicSettings(
  topic: TopicState,
  wanted: { replicationFactor: number; minInsyncReplicas: number },
  brokers: readonly number[],
  bootstrap: string,
): TopicPlan {
  const plan: TopicPlan = { topic: topic.name, reassign: [], alterConfig: null, warnings: [] };
  const have = Math.min(...topic.partitions.map((p) => p.replicas.length));
  const rf = wanted.replicationFactor;
  let rfAfter = have;
  if (rf > 0 && have < rf) {
    if (brokers.length < rf) {
      plan.warnings.push(
        `topic ${topic.name} has replication factor ${have}, configured ${rf}, but only ` +
          `${brokers.length} broker(s) are alive: start more brokers, or lower RECSYS_KAFKA_REPLICATION_FACTOR`,
      );
    } else {
      plan.reassign = addReplicas(topic.partitions, rf, brokers);
      rfAfter = rf;
    }
  } else if (rf > 0 && have > rf) {
    plan.warnings.push(
      `topic ${topic.name} has replication factor ${have}, above the configured ${rf}; it is not ` +
        `lowered automatically: kafka-reassign-partitions.sh --bootstrap-server ${bootstrap} ` +
        `--reassignment-json-file <plan.json> --execute (each partition's list cut to ${rf} brokers)`,
    );
  }
  const isr = wanted.minInsyncReplicas;
  if (isr > 0 && topic.minInsyncReplicas !== isr) {
    const command =
      `kafka-configs.sh --bootstrap-server ${bootstrap} --alter --entity-type topics ` +
      `--entity-name ${topic.name} --add-config min.insync.replicas=${isr}`;
    if (isr > rfAfter) {
      plan.warnings.push(
        `topic ${topic.name} has min.insync.replicas ${topic.minInsyncReplicas}, configured ${isr}, ` +
          `but only ${rfAfter} replica(s): not changed (every acks=all write would be refused); ` +
          `raise its replication factor first, then: ${command}`,
      );
    } else {
      plan.alterConfig = { ...topic.ownConfig, 'min.insync.replicas': String(isr) };
    }
  }
  return plan;
}

/**
 * Each partition below `rf` replicas keeps its own, in order, and gains brokers not yet among
 * them: the one holding the fewest replicas of the topic so far (counting those just added), the
 * lower id on a tie, so the new replicas spread evenly.
 */
function addReplicas(
  partitions: TopicState['partitions'],
  rf: number,
  brokers: readonly number[],
): TopicPlan['reassign'] {
  const load = new Map(brokers.map((b) => [b, 0]));
  for (const p of partitions)
    for (const r of p.replicas) if (load.has(r)) load.set(r, (load.get(r) as number) + 1);
  const out: TopicPlan['reassign'] = [];
  for (const p of [...partitions].sort((a, b) => a.partition - b.partition)) {
    if (p.replicas.length >= rf) continue;
    const replicas = [...p.replicas];
    while (replicas.length < rf) {
      const next = [...load.entries()]
        .filter(([b]) => !replicas.includes(b))
        .sort((a, b) => a[1] - b[1] || a[0] - b[0])[0];
      if (!next) break;
      replicas.push(next[0]);
      load.set(next[0], next[1] + 1);
    }
    out.push({ partition: p.partition, replicas });
  }
  return out;
}

/** Reads `topics` as {@link TopicState}s. */
async function readTopics(admin: Admin, topics: string[]): Promise<TopicState[]> {
  const meta = await admin.fetchTopicMetadata({ topics });
  const configs = await admin.describeConfigs({
    includeSynonyms: false,
    resources: topics.map((name) => ({ type: kafkajs.ConfigResourceTypes.TOPIC, name })),
  });
  return meta.topics.map((t) => {
    const entries = configs.resources.find((r) => r.resourceName === t.name)?.configEntries ?? [];
    const ownConfig: Record<string, string> = {};
    // configSource 1: DYNAMIC_TOPIC_CONFIG, the topic's own setting.
    for (const e of entries)
      if ((e as { configSource?: number }).configSource === 1)
        ownConfig[e.configName] = e.configValue;
    const minIsr = entries.find((e) => e.configName === 'min.insync.replicas')?.configValue;
    return {
      name: t.name,
      partitions: t.partitions.map((p) => ({ partition: p.partitionId, replicas: p.replicas })),
      minInsyncReplicas: Number(minIsr ?? 1),
      ownConfig,
    };
  });
}

/** Resolves once no partition of `topics` is being reassigned, or false after `timeoutMs`. */
async function reassigned(admin: Admin, topics: string[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { topics: moving } = await admin.listPartitionReassignments({});
    if (!moving.some((t) => topics.includes(t.topic))) return true;
    if (Date.now() > deadline) return false;
    await sleep(500);
  }
}

/**
 * Brings the existing `topics` to the configured replication factor and min.insync.replicas
 * ({@link planTopicSettings}); never throws for a change it could not make (it warns instead), so
 * a role still starts on a topic as it is.
 */
export async function reconcileTopicSettings(
  admin: Admin,
  topics: string[],
  config: KafkaConfig,
  log: Logger,
  reassignWaitMs = 60_000,
): Promise<TopicPlan[]> {
  if (topics.length === 0) return [];
  if (config.replicationFactor <= 0 && config.minInsyncReplicas <= 0) return [];
  const wanted = {
    replicationFactor: config.replicationFactor,
    minInsyncReplicas: config.minInsyncReplicas,
  };
  const bootstrap = config.brokers.join(',');
  const brokers = (await admin.describeCluster()).brokers.map((b) => b.nodeId);
  const plans = (await readTopics(admin, topics)).map((t) =>
    planTopicSettings(t, wanted, brokers, bootstrap),
  );
  const moving = plans.filter((p) => p.reassign.length > 0);
  if (moving.length > 0) {
    try {
      await admin.alterPartitionReassignments({
        topics: moving.map((p) => ({ topic: p.topic, partitionAssignment: p.reassign })),
      });
      log.warn(
        { topics: moving.map((p) => p.topic), replicationFactor: wanted.replicationFactor },
        'raising the replication factor of existing topics (partition reassignment)',
      );
      const names = moving.map((p) => p.topic);
      if (!(await reassigned(admin, names, reassignWaitMs))) {
        log.warn({ topics: names }, 'reassignment still copying; it goes on in the background');
      }
    } catch (err) {
      for (const p of moving) {
        p.warnings.push(
          `topic ${p.topic}: raising its replication factor to ${wanted.replicationFactor} failed ` +
            `(${(err as Error).message}); with an admin login: kafka-reassign-partitions.sh ` +
            `--bootstrap-server ${bootstrap} --reassignment-json-file <plan.json> --execute`,
        );
        p.alterConfig = null;
      }
    }
  }
  for (const p of plans) {
    if (!p.alterConfig) continue;
    try {
      await admin.alterConfigs({
        validateOnly: false,
        resources: [
          {
            type: kafkajs.ConfigResourceTypes.TOPIC,
            name: p.topic,
            configEntries: Object.entries(p.alterConfig).map(([name, value]) => ({ name, value })),
          },
        ],
      });
      log.info(
        { topic: p.topic, minInsyncReplicas: wanted.minInsyncReplicas },
        'set min.insync.replicas of an existing topic',
      );
    } catch (err) {
      p.warnings.push(
        `topic ${p.topic}: setting min.insync.replicas=${wanted.minInsyncReplicas} failed ` +
          `(${(err as Error).message}); with an admin login: kafka-configs.sh --bootstrap-server ` +
          `${bootstrap} --alter --entity-type topics --entity-name ${p.topic} ` +
          `--add-config min.insync.replicas=${wanted.minInsyncReplicas}`,
      );
    }
  }
  for (const w of plans.flatMap((p) => p.warnings)) log.warn(w);
  return plans;
}
