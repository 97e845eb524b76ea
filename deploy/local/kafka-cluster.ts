/**
 * The cluster profile's Kafka (`profile.ts`): 3 KRaft processes on loopback, each broker and
 * controller (a 3-voter quorum survives one loss), brokers on RECSYS_CLUSTER_KAFKA_PORT + 0..2
 * and controllers on those + 100. Every replicated default is set for a 3-node cluster: topics
 * and the internal offsets and transaction topics at replication factor 3, min.insync.replicas 2,
 * no unclean leader election, so an `acks=all` write survives the loss of any one broker.
 * Plain listeners only (the secure backbone stays single-node for now).
 */
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dataDir, type KafkaNodeName, type ServiceDef, type StackContext } from './service-def.js';
import { installKafka, kafkaAnswers, launchBroker, newClusterId } from './kafka.js';

/** Loopback, like every deploy/local service. */
export const CLUSTER_HOST = '127.0.0.1';
const NODES = [1, 2, 3] as const;
/** Controller port = broker port + this. */
export const CONTROLLER_OFFSET = 100;

/** The brokers' bootstrap addresses (what RECSYS_KAFKA_BROKERS should hold). */
export function clusterBrokers(ctx: Pick<StackContext, 'config'>): string[] {
  return NODES.map((n) => `${CLUSTER_HOST}:${ctx.config.local.clusterKafkaPort + n - 1}`);
}

/**
 * The cluster id all three storages are formatted with, made once beside their data. Three
 * `prepare` calls race here: the id is written to a private file and hard-linked into place,
 * which fails for all but the first; the others read the winner's.
 */
async function sharedClusterId(ctx: StackContext): Promise<string> {
  const dir = join(ctx.localDir, 'data');
  await mkdir(dir, { recursive: true });
  const file = join(dir, 'kafka-cluster.id');
  const mine = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  await writeFile(mine, newClusterId());
  try {
    await link(mine, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await rm(mine, { force: true });
  }
  return (await readFile(file, 'utf8')).trim();
}

function kafkaNode(n: (typeof NODES)[number]): ServiceDef {
  const name = `kafka-${n}` as KafkaNodeName;
  const port = (ctx: StackContext): number => ctx.config.local.clusterKafkaPort + n - 1;
  return {
    name,
    memory: 'heap 384m',
    port,
    install: installKafka,
    async prepare(ctx) {
      const base = ctx.config.local.clusterKafkaPort;
      const voters = NODES.map(
        (v) => `${v}@${CLUSTER_HOST}:${base + v - 1 + CONTROLLER_OFFSET}`,
      ).join(',');
      const controller = port(ctx) + CONTROLLER_OFFSET;
      return launchBroker(ctx, {
        dir: dataDir(ctx, name),
        confDir: join(ctx.localDir, 'conf', name),
        // Three of them beside the rest of the stack on a small machine: 384 MiB of heap each
        // (the single broker has 512).
        heap: { min: '128m', max: '384m' },
        creds: null,
        clusterId: await sharedClusterId(ctx),
        props: [
          'process.roles=broker,controller',
          `node.id=${n}`,
          `controller.quorum.voters=${voters}`,
          `listeners=PLAINTEXT://${CLUSTER_HOST}:${port(ctx)},CONTROLLER://${CLUSTER_HOST}:${controller}`,
          `advertised.listeners=PLAINTEXT://${CLUSTER_HOST}:${port(ctx)}`,
          'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
          'inter.broker.listener.name=PLAINTEXT',
          'controller.listener.names=CONTROLLER',
          `num.partitions=${ctx.config.kafka.partitions}`,
          'auto.create.topics.enable=false',
          // A topic created without a replication factor or min.insync.replicas (-1 and 0 in
          // RECSYS_KAFKA_REPLICATION_FACTOR / _MIN_INSYNC_REPLICAS) still gets 3 and 2.
          'default.replication.factor=3',
          'min.insync.replicas=2',
          'unclean.leader.election.enable=false',
          'offsets.topic.replication.factor=3',
          'offsets.topic.num.partitions=10',
          'transaction.state.log.replication.factor=3',
          'transaction.state.log.min.isr=2',
          'transaction.state.log.num.partitions=10',
          // A broker that stops heartbeating is fenced (its partitions led elsewhere) after
          // 4 s instead of 9: on one machine a missed 1 s heartbeat means a dead process.
          'broker.heartbeat.interval.ms=1000',
          'broker.session.timeout.ms=4000',
          'group.initial.rebalance.delay.ms=0',
          'num.network.threads=2',
          'num.io.threads=2',
          'num.replica.fetchers=1',
          'background.threads=2',
          'log.retention.hours=168',
        ],
      });
    },
    // Ready when this broker is registered with the quorum (the metadata it answers names it).
    probe: (ctx) => kafkaAnswers(ctx, [`${CLUSTER_HOST}:${port(ctx)}`], n),
  };
}

export const KAFKA_NODES: Readonly<Record<KafkaNodeName, ServiceDef>> = {
  'kafka-1': kafkaNode(1),
  'kafka-2': kafkaNode(2),
  'kafka-3': kafkaNode(3),
};
