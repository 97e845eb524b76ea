/**
 * The ingest role: MQTT (shared subscription, QoS 1) and HTTP into Kafka through one
 * {@link IngestPipeline}. Dependencies that are down at start are retried with backoff while
 * `/readyz` reports which one is missing; nothing crashes and nothing is acknowledged before
 * Kafka has it.
 *
 * @example
 *   const ingest = await startIngest({ config, log, metrics, app: server.app });
 *   // later
 *   await ingest.stop();
 */
import { hostname } from 'node:os';
import { Counter, Gauge, type Registry } from 'prom-client';
import {
  checkHealth,
  type Config,
  type HealthReport,
  type Logger,
  retryForever,
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
import { MqttSubscriber } from '../mqtt-subscriber.js';

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
  stop(): Promise<void>;
}

export function startIngest({ config, log, metrics, app }: IngestDeps): IngestRole {
  const kafka = createKafka(config.kafka, log, 'ingest');
  const producer = createProducer(kafka);
  const ingestMetrics = createIngestMetrics(metrics);
  const stopping = new AbortController();
  let pipeline: IngestPipeline | null = null;
  let batcher: KafkaBatcher | null = null;
  let subscriber: MqttSubscriber | null = null;
  let draining = false;

  // Registered on `metrics`; read on every scrape.
  new Gauge({
    name: 'recsys_ingest_mqtt_inflight_messages',
    help: 'MQTT messages received and not yet acknowledged (waiting for Kafka)',
    registers: [metrics],
    collect() {
      this.set(subscriber?.inFlight ?? 0);
    },
  });

  new Gauge({
    name: 'recsys_ingest_mqtt_connected',
    help: 'whether the bridge is connected and subscribed to the broker (1) or not (0)',
    registers: [metrics],
    collect() {
      this.set(subscriber?.connected ? 1 : 0);
    },
  });
  const sessionsLost = new Counter({
    name: 'recsys_ingest_mqtt_sessions_lost_total',
    help: 'reconnects on which the broker no longer held the bridge session: the QoS 1 events it had queued for the bridge are lost',
    registers: [metrics],
  });

  // HTTP ingest answers 503 until the pipeline exists, so the route can be mounted at once.
  mountIngest(app, () => pipeline, {
    auth: new IngestAuth(config),
    limits: config.ingest,
    maxBodyBytes: config.http.maxBodyBytes,
    timeoutMs: config.ingest.httpTimeoutMs,
    log,
    refused: ingestMetrics.httpRefused,
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
    const active = pipeline;

    subscriber = new MqttSubscriber({
      url: config.mqtt.url,
      username: config.mqtt.username,
      password: config.mqtt.password,
      clientId: config.mqtt.clientId,
      topicFilter: `$share/${config.mqtt.shareGroup}/${config.mqtt.topicPrefix}/+`,
      receiveMaximum: config.mqtt.receiveMaximum,
      sessionExpirySec: config.mqtt.sessionExpirySec,
      log: log.child({ component: 'mqtt' }),
      onMessage: (message) => {
        // While draining, leave new messages unacknowledged: the broker keeps them for the
        // session and delivers them to the next bridge run.
        if (draining) return;
        active.ingestMqtt(message.topic, message.payload).then(
          () => message.ack(),
          (err: Error) =>
            log.error(
              { err: err.message, topic: message.topic },
              'ingest failed; message left unacknowledged for redelivery',
            ),
        );
      },
    });
    subscriber.on('sessionLost', () => sessionsLost.inc());
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
    async stop() {
      draining = true;
      stopping.abort(new Error('stopping'));
      // Finish what Kafka is writing so those messages get their PUBACK, then leave.
      await batcher?.close();
      await new Promise((r) => setImmediate(r));
      await subscriber?.stop();
      await producer.disconnect().catch(() => undefined);
      log.info('ingest stopped');
    },
  };
}
