/**
 * The ingest role: MQTT (shared subscription, QoS 1) and HTTP into Kafka through one
 * {@link IngestPipeline}. Dependencies that are down at start are retried with backoff while
 * `/readyz` reports which one is missing; nothing crashes and nothing is acknowledged before
 * Kafka has it. The bytes held for Kafka are bounded (`RECSYS_INGEST_MAX_QUEUED_BYTES`, see
 * `producer.ts` and `mqtt-admission.ts`).
 *
 * Stopping: HTTP answers 503 `RECSYS_SHUTTING_DOWN`, the bridge stops reading MQTT, flushes what
 * it holds to Kafka within the budget (acknowledging what Kafka took), then sends DISCONNECT: the
 * broker keeps the session, with every message not acknowledged, for the next run.
 *
 * @example
 *   const ingest = await startIngest({ config, log, metrics, app: server.app });
 *   // later
 *   await ingest.stop();
 */
import { hostname } from 'node:os';
import { Counter, Gauge, type Registry } from 'prom-client';
import {
  ABANDONED,
  checkHealth,
  type Config,
  type HealthReport,
  type Logger,
  retryForever,
  type ShutdownBudget,
  type TemplatedApp,
} from '../../core/index.js';
import {
  createEncoder,
  type DlqRecord,
  registerSchema,
  registryHealth,
  subjectsFor,
  type UserEvent,
} from '../../schemas/index.js';
import { KafkaBatcher } from '../producer.js';
import { createIngestMetrics, IngestPipeline } from '../ingest.js';
import { IngestAuth } from '../ingest-auth.js';
import { mountIngest } from '../ingest-http.js';
import { createKafka, createProducer, ensureTopics, kafkaHealth } from '../kafka.js';
import { MqttAdmission } from '../mqtt-admission.js';
import { MqttSubscriber } from '../mqtt-subscriber.js';

/** Of a stop budget, what the flush to Kafka may take: the rest is for the MQTT and Kafka goodbyes. */
const FLUSH_SHARE = 0.8;

export interface IngestDeps {
  config: Readonly<Config>;
  log: Logger;
  metrics: Registry;
  /** The HTTP app to mount `POST /v1/events` on. */
  app: TemplatedApp;
}

export interface IngestRole {
  readiness(): Promise<HealthReport>;
  /** Resolves once Kafka, the registry and the MQTT subscription are up. */
  ready: Promise<void>;
  stop(budget?: ShutdownBudget): Promise<void | typeof ABANDONED>;
}

/** The bridge's MQTT counters, registered on `metrics` (its gauges: `ingestGauges`). */
function createMqttMetrics(metrics: Registry): { sessionsLost: Counter; reconnects: Counter } {
  return {
    sessionsLost: new Counter({
      name: 'recsys_ingest_mqtt_sessions_lost_total',
      help: 'reconnects on which the broker no longer held the bridge session: the QoS 1 events it had queued for the bridge are lost',
      registers: [metrics],
    }),
    reconnects: new Counter({
      name: 'recsys_ingest_mqtt_reconnects_total',
      help: 'connections of the bridge to the broker after its first one: each follows a lost connection (a broker restart, a network fault; a takeover of the client id would show here)',
      registers: [metrics],
    }),
  };
}

export function startIngest({ config, log, metrics, app }: IngestDeps): IngestRole {
  const kafka = createKafka(config.kafka, log, 'ingest');
  const producer = createProducer(kafka);
  const ingestMetrics = createIngestMetrics(metrics);
  const stopping = new AbortController();
  let pipeline: IngestPipeline | null = null;
  let batcher: KafkaBatcher | null = null;
  let subscriber: MqttSubscriber | null = null;
  let admission: MqttAdmission | null = null;
  let draining = false;

  ingestGauges(metrics, config.ingest.maxQueuedBytes, () => ({ batcher, subscriber, admission }));
  const mqttMetrics = createMqttMetrics(metrics);

  // HTTP ingest answers 503 until the pipeline exists, so the route can be mounted at once.
  mountIngest(app, () => pipeline, {
    auth: new IngestAuth(config),
    limits: config.ingest,
    maxBodyBytes: config.http.maxBodyBytes,
    timeoutMs: config.ingest.httpTimeoutMs,
    log,
    refused: ingestMetrics.httpRefused,
    stopping: () => draining,
  });

  const forever = retryForever(log, stopping.signal);

  const ready = (async () => {
    await forever('kafka topics', () => ensureTopics(kafka, config.kafka, log));
    const subjects = subjectsFor(config.kafka.topics);
    const ids = await forever('schema registration', () =>
      Promise.all(subjects.map((s) => registerSchema(config.registry.url, s))),
    );
    const schemaOf = (name: string): object =>
      subjects.find((s) => s.name === name)?.schema as object;
    const idOf = (name: string): number =>
      ids[subjects.findIndex((s) => s.name === name)] as number;
    log.info(
      { subjects: subjects.map((s, i) => ({ subject: s.subject, id: ids[i] })) },
      'schemas registered (BACKWARD)',
    );
    await forever('kafka producer connect', () => producer.connect());

    batcher = new KafkaBatcher({
      producer,
      lingerMs: config.ingest.lingerMs,
      maxBatch: config.ingest.maxKafkaBatch,
      maxBatchBytes: config.ingest.maxKafkaBatchBytes,
      maxQueuedBytes: config.ingest.maxQueuedBytes,
      log,
      onSendError: (_err, topics) => {
        for (const t of topics) ingestMetrics.producerErrors.labels(t).inc();
      },
      onBatch: (n) => ingestMetrics.batchSize.observe(n),
    });
    pipeline = new IngestPipeline({
      batcher,
      encoders: {
        event: createEncoder<UserEvent>(idOf('UserEvent'), schemaOf('UserEvent')),
        dlq: createEncoder<DlqRecord>(idOf('DlqRecord'), schemaOf('DlqRecord')),
      },
      topics: config.kafka.topics,
      limits: config.ingest,
      topicPrefix: config.mqtt.topicPrefix,
      metrics: ingestMetrics,
      log,
    });
    const admitting = new MqttAdmission({
      target: pipeline,
      dropped: ingestMetrics.dropped,
      log: log.child({ component: 'mqtt' }),
    });
    admission = admitting;
    batcher.onRoom(() => admitting.drain());

    subscriber = new MqttSubscriber({
      url: config.mqtt.bridgeUrl,
      username: config.mqtt.username,
      password: config.mqtt.password,
      clientId: config.mqtt.clientId,
      topicFilter: `$share/${config.mqtt.shareGroup}/${config.mqtt.topicPrefix}/+`,
      receiveMaximum: config.mqtt.receiveMaximum,
      sessionExpirySec: config.mqtt.sessionExpirySec,
      log: log.child({ component: 'mqtt' }),
      onMessage: (message) => admitting.receive(message),
    });
    subscriber.on('sessionLost', () => mqttMetrics.sessionsLost.inc());
    subscriber.on('reconnect', () => mqttMetrics.reconnects.inc());
    await subscriber.start();
    log.info({ host: hostname(), clientId: config.mqtt.clientId }, 'ingest ready');
  })();

  return {
    ready,
    readiness: () =>
      checkHealth(
        {
          kafka: () => kafkaHealth(kafka, config.healthTimeoutMs),
          registry: () => registryHealth(config.registry.url, config.healthTimeoutMs),
          mqtt: () => {
            if (!subscriber?.connected)
              throw new Error('mqtt: bridge subscription is not connected');
          },
          pipeline: () => {
            if (!pipeline)
              throw new Error('pipeline: still starting (waiting for Kafka or the registry)');
          },
        },
        config.healthTimeoutMs,
      ),
    async stop(budget?: ShutdownBudget) {
      const t0 = performance.now();
      draining = true;
      stopping.abort(new Error('stopping'));
      admission?.stop();
      subscriber?.pause();
      // Finish what Kafka is writing so those messages get their PUBACK, then leave.
      const held = { messages: batcher?.pending ?? 0, bytes: batcher?.heldBytes ?? 0 };
      const flushMs = budget ? Math.floor(budget.remainingMs() * FLUSH_SHARE) : 10_000;
      const flushed = (await batcher?.close(flushMs)) ?? true;
      const ms = Math.round(performance.now() - t0);
      if (flushed) log.info({ ...held, flushMs, ms }, 'ingest queue flushed to Kafka');
      else
        log.warn({ ...held, flushMs, ms }, 'ingest queue not flushed in time: left unacknowledged');
      // PUBACKs of the last batch go out on the next tick.
      await new Promise((r) => setImmediate(r));
      await subscriber?.stop();
      await producer.disconnect().catch(() => undefined);
      log.info({ flushed }, 'ingest stopped');
      return flushed ? undefined : ABANDONED;
    },
  };
}

/** The bridge's gauges, registered on `metrics` and read on every scrape. */
function ingestGauges(
  metrics: Registry,
  maxQueuedBytes: number,
  parts: () => {
    batcher: KafkaBatcher | null;
    subscriber: MqttSubscriber | null;
    admission: MqttAdmission | null;
  },
): void {
  new Gauge({
    name: 'recsys_ingest_mqtt_inflight_messages',
    help: 'MQTT messages received and not yet acknowledged (waiting for Kafka)',
    registers: [metrics],
    collect() {
      this.set(parts().subscriber?.inFlight ?? 0);
    },
  });

  new Gauge({
    name: 'recsys_ingest_mqtt_connected',
    help: 'whether the bridge is connected and subscribed to the broker (1) or not (0)',
    registers: [metrics],
    collect() {
      this.set(parts().subscriber?.connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'recsys_ingest_queued_bytes',
    help: 'payload bytes the bridge holds for Kafka (queued and in the request in flight)',
    registers: [metrics],
    collect() {
      this.set(parts().batcher?.heldBytes ?? 0);
    },
  });
  new Gauge({
    name: 'recsys_ingest_queue_limit_bytes',
    help: 'RECSYS_INGEST_MAX_QUEUED_BYTES: past it HTTP answers 503, MQTT QoS 1 waits and QoS 0 is dropped',
    registers: [metrics],
  }).set(maxQueuedBytes);
  new Gauge({
    name: 'recsys_ingest_mqtt_waiting_messages',
    help: 'MQTT QoS 1 messages received and waiting, unacknowledged, for room under the byte bound',
    registers: [metrics],
    collect() {
      this.set(parts().admission?.waiting ?? 0);
    },
  });
}
