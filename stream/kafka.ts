/**
 * Kafka plumbing shared by every stream process: one client per process with logs routed to
 * pino, topic creation owned by the code (the broker does not auto-create), an
 * `acks=all` producer, consumers, and a health check. `createKafka` is the only place a kafkajs
 * client is built (a unit test holds every other file to it), so every client, the tests' and
 * deploy/local's probes included, logs in with the configured SASL credentials.
 */
import kafkajs, {
  type Admin,
  type Consumer,
  type ConsumerConfig,
  type Kafka,
  type KafkaConfig as KafkaJsConfig,
  type Producer,
  type SASLOptions,
} from 'kafkajs';
import {
  DependencyUnavailableError,
  type KafkaConfig,
  type Logger,
  retry,
  withTimeout,
} from '../core/index.js';
import { reconcileTopicSettings } from './topic-settings.js';

export type { Consumer, Kafka, Producer };

const { logLevel } = kafkajs;

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/** What a caller may tune; where and as whom it connects comes from the config only. */
export type KafkaTuning = Pick<
  KafkaJsConfig,
  'connectionTimeout' | 'requestTimeout' | 'retry' | 'logLevel'
>;

/**
 * The Kafka client of `role` (client id `<RECSYS_KAFKA_CLIENT_ID>-<role>`), logging through pino
 * at warn and above; `tuning` overrides timeouts, retries or the log level (probes and tests).
 */
export function createKafka(
  config: KafkaConfig,
  log: Logger,
  role: string,
  tuning: KafkaTuning = {},
): Kafka {
  const kafkaLog = log.child({ component: 'kafkajs' });
  return new kafkajs.Kafka({
    clientId: `${config.clientId}-${role}`,
    brokers: config.brokers,
    // SCRAM never sends the password; without TLS the records themselves still travel in
    // clear, which the local loopback stack accepts and a production cluster should not.
    ...(config.sasl ? { sasl: { ...config.sasl } as SASLOptions } : {}),
    connectionTimeout: 3000,
    requestTimeout: 30_000,
    // kafkajs retries each request itself with backoff; a dead broker surfaces as an error
    // after these attempts and the caller decides (readiness goes red, the bridge retries).
    retry: { initialRetryTime: 100, maxRetryTime: 5000, retries: 8 },
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }) => {
        const { message, ...rest } = entry;
        kafkaLog[LEVELS[level] ?? 'info'](rest, message);
      },
    ...tuning,
  });
}

/**
 * Creates the stack's topics if missing, with the configured replication factor and
 * `min.insync.replicas` (-1 and 0: the broker's defaults); existing topics are brought to them
 * where that is safe, and a warning says what is not (`topic-settings.ts`).
 * With `acks=all` (every producer here), a write is acknowledged once `min.insync.replicas`
 * replicas hold it, so at replication factor 3 and 2 one broker may die without losing it.
 */
export async function ensureTopics(kafka: Kafka, config: KafkaConfig, log: Logger): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const wanted = Object.values(config.topics).filter((t) => !existing.has(t));
    const made = Object.values(config.topics).filter((t) => existing.has(t));
    // A reading or change that fails is a warning: the role runs on the topics as they are.
    await reconcileTopicSettings(admin, made, config, log).catch((err: Error) =>
      log.warn({ err: err.message, topics: made }, "could not check the topics' settings"),
    );
    if (wanted.length === 0) return;
    const minIsr =
      config.minInsyncReplicas > 0
        ? [{ name: 'min.insync.replicas', value: String(config.minInsyncReplicas) }]
        : [];
    await admin.createTopics({
      // kafkajs' own wait asks one broker, and on a multi-broker cluster that broker may not
      // know the new topic yet: UNKNOWN_TOPIC_OR_PARTITION, which it does not retry
      // (tulios/kafkajs#1222). `waitForTopicLeaders` below waits for it instead.
      waitForLeaders: false,
      topics: wanted.map((topic) => ({
        topic,
        numPartitions: config.partitions,
        replicationFactor: config.replicationFactor,
        // The catalog topic holds the latest record per itemId for ever: a new loader replays
        // it in full.
        configEntries: [
          ...minIsr,
          ...(topic === config.topics.items ? [{ name: 'cleanup.policy', value: 'compact' }] : []),
        ],
      })),
    });
    await waitForTopicLeaders(admin, wanted);
    log.info(
      {
        topics: wanted,
        partitions: config.partitions,
        replicationFactor: config.replicationFactor,
        minInsyncReplicas: config.minInsyncReplicas,
      },
      'created topics',
    );
  } finally {
    await admin.disconnect();
  }
}

/**
 * Resolves once every partition of `topics` has a leader in the metadata the client gets, while
 * a broker's answer is "no such topic" or "no leader yet" (the new topic's metadata travels to
 * every broker within moments); other errors are thrown.
 */
export async function waitForTopicLeaders(admin: Admin, topics: string[]): Promise<void> {
  const waiting = new Set(['UNKNOWN_TOPIC_OR_PARTITION', 'LEADER_NOT_AVAILABLE']);
  await retry(
    async () => {
      const meta = await admin.fetchTopicMetadata({ topics });
      const leaderless = meta.topics.filter((t) => t.partitions.some((p) => p.leader < 0));
      if (leaderless.length > 0)
        throw Object.assign(new Error(`no leader yet: ${leaderless.map((t) => t.name)}`), {
          type: 'LEADER_NOT_AVAILABLE',
        });
    },
    {
      // About 30 s in all: 100 ms doubling to 2 s.
      attempts: 20,
      initialDelayMs: 100,
      maxDelayMs: 2000,
      retriable: (err) => waiting.has((err as { type?: string }).type ?? ''),
    },
  );
}

/**
 * The producer every writer uses: acks from all in-sync replicas, one request in flight per
 * broker (order kept), throughput from batching many messages per request. No retry inside
 * kafkajs: the retry of its `sendBatch` (2.2.4, `sendMessages`) sends again only to leaders that
 * had not answered yet, so a partition whose leader died and moved to a broker that had already
 * answered for other partitions of the call is never written, and the call resolves all the
 * same. The cluster fault matrix lost 8-46 acknowledged events per broker kill that way. Now the
 * call rejects and its caller sends the whole batch again (`KafkaBatcher`, the consumer roles'
 * retries): at least once, the partitions written the first time get a copy, which the stores
 * absorb by eventId. kafkajs refuses an idempotent producer without retries, and idempotence
 * only deduplicated kafkajs' own retries, so it is off.
 */
export function createProducer(kafka: Kafka): Producer {
  return kafka.producer({
    idempotent: false,
    maxInFlightRequests: 1,
    retry: { retries: 0 },
    // Java-compatible murmur2 partitioning, so a userId lands on the same partition whichever
    // client (kafkajs, Java, librdkafka with murmur2_random) wrote it.
    createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  });
}

/** Further seed brokers a health check tries when one refuses (within its time bound). */
const HEALTH_SEED_TRIES = 5;

export function createConsumer(kafka: Kafka, config: ConsumerConfig): Consumer {
  return kafka.consumer({ allowAutoTopicCreation: false, ...config });
}

/**
 * Resolves when the cluster answers a metadata request within `timeoutMs`. A seed broker that
 * refuses the connection is passed over for the next (kafkajs starts every new client at the
 * first seed): with one broker of three down, the others answer. Before, the first seed being
 * down made every process of the cluster fault matrix unready until it was back.
 */
export async function kafkaHealth(kafka: Kafka, timeoutMs: number): Promise<void> {
  let admin: Admin | undefined;
  const check = async (): Promise<void> => {
    admin = kafka.admin({
      retry: { retries: HEALTH_SEED_TRIES, initialRetryTime: 10, maxRetryTime: 50 },
    });
    await admin.connect();
    const cluster = await admin.describeCluster();
    if (cluster.brokers.length === 0) throw new Error('no brokers in cluster metadata');
  };
  try {
    await withTimeout(
      check(),
      timeoutMs,
      () => new DependencyUnavailableError('kafka', `no answer within ${timeoutMs} ms`),
    );
  } catch (err) {
    if (err instanceof DependencyUnavailableError) throw err;
    throw new DependencyUnavailableError('kafka', (err as Error).message, { cause: err });
  } finally {
    void admin?.disconnect().catch(() => undefined);
  }
}
