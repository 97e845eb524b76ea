/**
 * The one lifecycle every consuming role shares, so a role file holds only what it does with
 * records. `consumerRole` connects Kafka (topics, the producer and the DLQ when asked for),
 * waits for the role's own resources, starts the shared consumer loop (`consumer.ts`), and
 * returns the role contract (`core/role.ts`):
 * - `ready` resolves once the consumer is in its group; every start-up step is retried with the
 *   shared backoff (`retryForever`) until it works or the role stops;
 * - `failed` rejects when the consumer hits an error no retry fixes;
 * - every record is checked before the role sees it: its writer schema must be its topic's
 *   record (by name: `recsys.UserEvent` on the events topic, ...) and its value must keep the
 *   contract (`schemas/record-checks.ts`); records that fail, and records the role gives up on
 *   (`stream/poison.ts`), go to the DLQ with their reason, counted by role and reason;
 * - `readiness` checks Kafka, the consumer (in its group, not stuck retrying a chunk) and the
 *   role's own `checks` (Redis, the lake directory, ...);
 * - `stop` aborts the start-up, stops the consumer (which finishes and commits the chunk in
 *   hand, and drains a deferred role), then runs `onStop` and disconnects.
 *
 * @example
 *   return consumerRole<UserEvent>(deps, {
 *     role: 'catalog',
 *     groupId: config.consumer.groups.catalog,
 *     topics: [config.kafka.topics.items],
 *     handle: async (records) => store.upsert(records.map(toItem)),
 *     checks: { redis: () => redisHealth(redis, config.healthTimeoutMs) },
 *     onStop: async () => redis.disconnect(),
 *   });
 */
import type { Kafka, Producer } from 'kafkajs';
import {
  checkHealth,
  retryForever,
  type ForeverRetry,
  type HealthCheck,
  type Logger,
  type RoleDeps,
  type StreamRole,
} from '../../core/index.js';
import type { Config } from '../../core/index.js';
import { checkRecord, createDecoder, recordName, type SchemaName } from '../../schemas/index.js';
import {
  startConsumer,
  type ConsumerHandle,
  type ConsumerOptions,
  type RecordRule,
} from '../consumer.js';
import { consumerMetrics } from '../consumer-metrics.js';
import type { DeferredCommit } from '../deferred-offsets.js';
import { createDeadLetter, rejectedToDlq, type DeadLetter } from '../dead-letter.js';
import { createKafka, createProducer, ensureTopics, kafkaHealth } from '../kafka.js';

/** What a role's hooks get once Kafka is up. */
export interface RoleContext {
  log: Logger;
  kafka: Kafka;
  /** Retries a start-up step until it works or the role stops. */
  forever: ForeverRetry;
  signal: AbortSignal;
  /** Sends records to the DLQ; only when the role asked for `deadLetters`. */
  deadLetter: DeadLetter;
}

export interface ConsumerRoleSpec<T> {
  /** The role's name: its logs carry `role`, its Kafka client id is the name. */
  role: string;
  /** How the ready and stopped log lines name it. @default `<role> consumer` */
  label?: string;
  groupId: string;
  topics: string[];
  /** Values as registry-framed Avro (default), or raw bytes (`Buffer | null`). */
  raw?: boolean;
  /** Where a new group starts. @default true */
  fromBeginning?: boolean;
  /**
   * Whether the role dead-letters records (connects the producer and the DLQ). Without it, a
   * record the loop would dead-letter holds its partition (retried, logged). @default true
   */
  deadLetters?: boolean;
  /** Opens what the role needs once Kafka and the DLQ are up; retried until it works. */
  open?: (ctx: RoleContext) => Promise<void>;
  /** Makes a chunk durable (see `ConsumerOptions.handle`). */
  handle: (ctx: RoleContext) => ConsumerOptions<T>['handle'];
  /** Records rejected (see the module comment); default: to the DLQ. */
  rejected?: (ctx: RoleContext) => ConsumerOptions<T>['rejected'];
  /** For a role that commits later than `handle` resolves. */
  deferred?: (ctx: RoleContext) => DeferredCommit;
  /** The role's own readiness checks, beside Kafka and the consumer. */
  checks?: Record<string, HealthCheck>;
  /** After the consumer stopped (and drained): close the role's own resources. */
  onStop?: () => Promise<void>;
}

/** The schema each topic the stack writes holds, and its checks. */
function recordRules<T>(
  topics: Config['kafka']['topics'],
  consumed: readonly string[],
): Map<string, RecordRule<T>> {
  const of: [string, SchemaName][] = [
    [topics.events, 'UserEvent'],
    [topics.served, 'ServedFeed'],
    [topics.dlq, 'DlqRecord'],
  ];
  const rules = new Map<string, RecordRule<T>>();
  for (const [topic, name] of of) {
    if (!consumed.includes(topic)) continue;
    rules.set(topic, { schema: recordName(name), check: (value) => checkRecord(name, value) });
  }
  return rules;
}

export function consumerRole<T>(deps: RoleDeps, spec: ConsumerRoleSpec<T>): StreamRole {
  const { config, metrics } = deps;
  const log = deps.log.child({ role: spec.role });
  const label = spec.label ?? `${spec.role} consumer`;
  const kafka = createKafka(config.kafka, log, spec.role);
  const wantsDlq = spec.deadLetters ?? true;
  const producer: Producer | null = wantsDlq ? createProducer(kafka) : null;
  const stopping = new AbortController();
  const forever = retryForever(log, stopping.signal);
  const deadLetters = consumerMetrics(metrics).deadLetters;
  let consumer: ConsumerHandle | null = null;
  let stopped: Promise<void> | null = null;

  const ready = (async () => {
    await forever('kafka topics', () => ensureTopics(kafka, config.kafka, log));
    let deadLetter: DeadLetter = async () => {
      throw new Error(`${spec.role}: this role has no DLQ`);
    };
    if (producer) {
      await forever('kafka producer connect', () => producer.connect());
      deadLetter = await forever('dlq schema', () =>
        createDeadLetter(config, producer, { role: spec.role, counter: deadLetters }),
      );
    }
    const ctx: RoleContext = { log, kafka, forever, signal: stopping.signal, deadLetter };
    if (spec.open) await spec.open(ctx);
    stopping.signal.throwIfAborted();
    consumer = startConsumer<T>({
      kafka,
      groupId: spec.groupId,
      topics: spec.topics,
      ...(spec.fromBeginning === undefined ? {} : { fromBeginning: spec.fromBeginning }),
      decoder: spec.raw ? null : createDecoder<T>(config.registry.url),
      ...(spec.raw ? {} : { records: recordRules<T>(config.kafka.topics, spec.topics) }),
      log,
      metrics: consumerMetrics(metrics),
      tuning: config.consumer,
      rejected: spec.rejected ? spec.rejected(ctx) : toDlq(ctx, spec.role, config.kafka.topics.dlq),
      handle: spec.handle(ctx),
      ...(spec.deferred ? { deferred: spec.deferred(ctx) } : {}),
    });
    await consumer.ready;
    log.info({ group: spec.groupId, topics: spec.topics }, `${label} ready`);
  })();
  ready.catch(() => undefined);

  return {
    ready,
    failed: consumerFailure(ready, () => consumer),
    readiness: () =>
      checkHealth(
        {
          kafka: () => kafkaHealth(kafka, config.healthTimeoutMs),
          ...spec.checks,
          consumer: () => {
            if (!consumer?.healthy()) {
              throw new Error('consumer: not in its group, or retrying a chunk');
            }
          },
        },
        config.healthTimeoutMs,
      ),
    stop() {
      stopped ??= (async () => {
        stopping.abort(new Error('stopping'));
        // The consumer first: its stop finishes the chunk in hand and drains a deferred role.
        await consumer?.stop();
        await ready.catch(() => undefined);
        await spec.onStop?.();
        await producer?.disconnect().catch(() => undefined);
        log.info(`${label} stopped`);
      })();
      return stopped;
    },
  };
}

/**
 * The default `rejected`: to the DLQ, except records of the DLQ topic itself (dead-lettering
 * those again would loop), which are logged and stay where they are.
 */
function toDlq<T>(
  ctx: RoleContext,
  role: string,
  dlqTopic: string,
): ConsumerOptions<T>['rejected'] {
  return async (bad) => {
    const own = bad.filter((r) => r.topic === dlqTopic);
    for (const r of own) {
      ctx.log.warn({ offset: r.offset, reason: r.reason, err: r.detail }, 'dead letter not used');
    }
    await ctx.deadLetter(
      bad.filter((r) => r.topic !== dlqTopic).map((r) => rejectedToDlq(r, role)),
    );
  };
}

/**
 * A role's `failed`: rejects when its consumer (known once `ready` resolved) fails for good.
 * Never rejects unobserved.
 */
function consumerFailure(
  ready: Promise<void>,
  consumer: () => ConsumerHandle | null,
): Promise<never> {
  let fail: (err: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => undefined);
  void ready.then(
    () => consumer()?.failed.catch(fail),
    () => undefined,
  );
  return failed;
}
