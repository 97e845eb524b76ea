/**
 * The ingest path shared by the MQTT bridge and HTTP ingest: validate, encode with the
 * registered Avro schema, produce keyed by userId, and resolve once Kafka acknowledged. Rejected
 * input goes to the DLQ topic with its reason, the field, and the original bytes, and is counted.
 * A DLQ write that Kafka does not take within `dlqTimeoutMs` is withdrawn and fails the call with
 * {@link DlqTimeoutError} (counted): the input is then not acknowledged, so its sender retries.
 * MQTT QoS 1 messages are forced past the batcher's byte bound (the broker's receive maximum
 * bounds them, and the role lets them in only when there is room); everything else is refused
 * with `IngestQueueFullError` past it.
 *
 * @example
 *   const pipeline = new IngestPipeline({ batcher, encoders, topics, limits, topicPrefix, metrics, log });
 *   const outcome = await pipeline.ingestMqtt('recsys/events/u1', payload, 1); // 'accepted' | 'rejected'
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import {
  deadlineSignal,
  DependencyUnavailableError,
  type IngestConfig,
  type Logger,
} from '../core/index.js';
import {
  type DlqRecord,
  type Encoder,
  EVENT_TYPES,
  EventRejectedError,
  type EventSource,
  type EventType,
  parseEventBytes,
  requireUserIdFromTopic,
  type UserEvent,
  validateEvent,
} from '../schemas/index.js';
import type { KafkaBatcher, OutgoingMessage, SendOptions } from './producer.js';
import { eventKey, RecentWrites } from './recent-writes.js';

export type IngestOutcome = 'accepted' | 'rejected';

/** A DLQ record Kafka did not take in time; the input it records is not acknowledged. */
export class DlqTimeoutError extends DependencyUnavailableError {
  constructor(ms: number) {
    super('kafka', `the DLQ record was not acknowledged within ${ms} ms`);
  }
}

export interface IngestMetrics {
  events: Counter<'source' | 'outcome'>;
  byType: Counter<'type'>;
  dlq: Counter<'reason' | 'source'>;
  publishSeconds: Histogram<'source'>;
  producerErrors: Counter<'topic'>;
  batchSize: Histogram;
  httpRefused: Counter<'status' | 'code'>;
  dropped: Counter<'reason'>;
  dlqTimeouts: Counter<'source'>;
  copies: Counter<'source'>;
}

export function createIngestMetrics(registry: Registry): IngestMetrics {
  return {
    events: new Counter({
      name: 'recsys_ingest_events_total',
      help: 'Events received, by source (mqtt, http) and outcome (accepted: in Kafka; rejected: in the DLQ; failed: not written)',
      labelNames: ['source', 'outcome'],
      registers: [registry],
    }),
    byType: new Counter({
      name: 'recsys_ingest_events_by_type_total',
      help: 'Accepted events by type (view, click, ...); clicks over served items is the online CTR (deploy/prometheus)',
      labelNames: ['type'],
      registers: [registry],
    }),
    dlq: new Counter({
      name: 'recsys_ingest_dlq_total',
      help: 'Payloads written to the DLQ, by reason code',
      labelNames: ['reason', 'source'],
      registers: [registry],
    }),
    publishSeconds: new Histogram({
      name: 'recsys_ingest_publish_seconds',
      help: 'From receiving an event to Kafka acknowledging it (acks=all)',
      labelNames: ['source'],
      buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    producerErrors: new Counter({
      name: 'recsys_kafka_producer_errors_total',
      help: 'Failed Kafka produce attempts (each is retried)',
      labelNames: ['topic'],
      registers: [registry],
    }),
    httpRefused: new Counter({
      name: 'recsys_ingest_http_refused_total',
      help: 'POST /v1/events requests refused, by HTTP status and error code (400 also writes the DLQ)',
      labelNames: ['status', 'code'],
      registers: [registry],
    }),
    dropped: new Counter({
      name: 'recsys_ingest_dropped_total',
      help: 'MQTT QoS 0 messages dropped, by reason (queue_full: past RECSYS_INGEST_MAX_QUEUED_BYTES; dlq_timeout: rejected input whose DLQ record Kafka did not take in time; stopping: arrived or still queued as the bridge stopped; failed: an unexpected error, logged)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    dlqTimeouts: new Counter({
      name: 'recsys_ingest_dlq_timeouts_total',
      help: 'DLQ records Kafka did not take within RECSYS_INGEST_DLQ_TIMEOUT_MS, by source; their input was not acknowledged',
      labelNames: ['source'],
      registers: [registry],
    }),
    copies: new Counter({
      name: 'recsys_ingest_copies_total',
      help: 'Accepted events not written to Kafka again: a copy (same userId and eventId) of one written or on its way (RECSYS_INGEST_RECENT_EVENTS), by source',
      labelNames: ['source'],
      registers: [registry],
    }),
    batchSize: new Histogram({
      name: 'recsys_ingest_batch_messages',
      help: 'Messages per Kafka produce request',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
      registers: [registry],
    }),
  };
}

export interface IngestPipelineOptions {
  batcher: KafkaBatcher;
  encoders: { event: Encoder<UserEvent>; dlq: Encoder<DlqRecord> };
  topics: { events: string; dlq: string };
  limits: IngestConfig;
  topicPrefix: string;
  metrics: IngestMetrics;
  log: Logger;
  now?: () => number;
}

/** A rejected HTTP event, with its index in the batch. */
export interface HttpRejection {
  index: number;
  error: EventRejectedError;
}

export class IngestPipeline {
  readonly #o: IngestPipelineOptions;
  readonly #now: () => number;
  // Label children resolved once: prom-client's labels() lookup costs a hash per call, and this
  // runs for every event (see bench/ingest).
  readonly #accepted: Record<EventSource, Counter.Internal>;
  readonly #rejected: Record<EventSource, Counter.Internal>;
  readonly #latency: Record<EventSource, Histogram.Internal<'source'>>;
  readonly #byType: Record<EventType, Counter.Internal>;
  readonly #recent: RecentWrites;

  constructor(options: IngestPipelineOptions) {
    this.#o = options;
    this.#recent = new RecentWrites(options.limits.recentEvents);
    this.#now = options.now ?? Date.now;
    const m = options.metrics;
    this.#accepted = {
      mqtt: m.events.labels('mqtt', 'accepted'),
      http: m.events.labels('http', 'accepted'),
    };
    this.#rejected = {
      mqtt: m.events.labels('mqtt', 'rejected'),
      http: m.events.labels('http', 'rejected'),
    };
    this.#latency = {
      mqtt: m.publishSeconds.labels('mqtt'),
      http: m.publishSeconds.labels('http'),
    };
    this.#byType = Object.fromEntries(EVENT_TYPES.map((t) => [t, m.byType.labels(t)])) as Record<
      EventType,
      Counter.Internal
    >;
  }

  /** Whether the batcher's byte bound leaves room (see `KafkaBatcher.hasRoom`). */
  hasRoom(): boolean {
    return this.#o.batcher.hasRoom();
  }

  /** The bytes held for Kafka and their bound. */
  get queue(): { heldBytes: number; limitBytes: number } {
    return { heldBytes: this.#o.batcher.heldBytes, limitBytes: this.#o.batcher.maxQueuedBytes };
  }

  /**
   * One MQTT message. Resolves after Kafka acknowledged either the event (accepted) or its DLQ
   * record (rejected); only then may the caller PUBACK. QoS 1 is forced past the byte bound
   * (the caller admits it only when there is room); QoS 0 is refused with
   * `IngestQueueFullError` past it.
   */
  async ingestMqtt(topic: string, payload: Buffer, qos: 0 | 1 = 1): Promise<IngestOutcome> {
    const force = qos === 1;
    const receivedAt = this.#now();
    const t0 = performance.now();
    let event: UserEvent;
    try {
      const topicUserId = requireUserIdFromTopic(topic, this.#o.topicPrefix);
      event = parseEventBytes(payload, this.#o.limits, {
        now: receivedAt,
        source: 'mqtt',
        topicUserId,
      });
    } catch (err) {
      if (!(err instanceof EventRejectedError)) throw err;
      await this.#toDlq([{ err, source: 'mqtt', topic, original: payload, receivedAt }], { force });
      return 'rejected';
    }
    const message = this.#message(event);
    const copies = await this.#recent.write(
      [eventKey(event.userId, event.eventId)],
      (_, onOutcome) => this.#o.batcher.send(this.#o.topics.events, message, { force, onOutcome }),
    );
    if (copies > 0) this.#o.metrics.copies.labels('mqtt').inc(copies);
    this.#accepted.mqtt.inc();
    this.#byType[event.type].inc();
    this.#latency.mqtt.observe((performance.now() - t0) / 1000);
    return 'accepted';
  }

  /**
   * An HTTP batch, all or nothing: every event is validated first; if any is invalid nothing
   * is written to the events topic, the rejections go to the DLQ, and the caller answers 400.
   * The events are queued all together or refused (`IngestQueueFullError`); when `signal`
   * aborts (the caller's timeout), those Kafka has not taken yet are withdrawn.
   */
  async ingestHttp(
    raws: readonly unknown[],
    body: Buffer,
    signal?: AbortSignal,
  ): Promise<{ accepted: number; rejections: HttpRejection[] }> {
    const receivedAt = this.#now();
    const t0 = performance.now();
    const events: UserEvent[] = [];
    const rejections: HttpRejection[] = [];
    const ctx = { now: receivedAt, source: 'http' as const };
    for (let i = 0; i < raws.length; i++) {
      const raw = raws[i];
      try {
        if (jsonSizeExceeds(raw, this.#o.limits.maxEventBytes)) {
          throw new EventRejectedError(
            'too_large',
            null,
            `event is over the limit of ${this.#o.limits.maxEventBytes} bytes`,
          );
        }
        events.push(validateEvent(raw, this.#o.limits, ctx));
      } catch (err) {
        if (!(err instanceof EventRejectedError)) throw err;
        rejections.push({ index: i, error: err });
      }
    }
    if (rejections.length > 0) {
      const records = rejections.map(({ index, error }) => ({
        err: error,
        source: 'http' as const,
        topic: null,
        original: originalOf(raws[index], body),
        receivedAt,
        userId: userIdOf(raws[index]),
      }));
      await this.#toDlq(records, { signal });
      return { accepted: 0, rejections };
    }
    const topic = this.#o.topics.events;
    const messages = events.map((e) => ({ topic, message: this.#message(e) }));
    const keys = events.map((e) => eventKey(e.userId, e.eventId));
    const copies = await this.#recent.write(
      keys,
      (fresh, onOutcome) =>
        this.#o.batcher.sendAll(
          fresh.map((i) => messages[i] as OutgoingMessage),
          { signal, onOutcome },
        ),
      signal,
    );
    if (copies > 0) this.#o.metrics.copies.labels('http').inc(copies);
    this.#accepted.http.inc(events.length);
    for (const e of events) this.#byType[e.type].inc();
    const seconds = (performance.now() - t0) / 1000;
    for (let i = 0; i < events.length; i++) this.#latency.http.observe(seconds);
    return { accepted: events.length, rejections };
  }

  /** Records a request that was refused before its events could be read (size, JSON). */
  async rejectHttpBody(
    err: EventRejectedError,
    original: Buffer,
    signal?: AbortSignal,
  ): Promise<void> {
    const receivedAt = this.#now();
    await this.#toDlq([{ err, source: 'http', topic: null, original, receivedAt }], { signal });
  }

  #message(event: UserEvent): OutgoingMessage['message'] {
    return {
      key: event.userId,
      value: this.#o.encoders.event.encode(event),
      headers: { 'event-id': event.eventId, source: event.source },
    };
  }

  /** Writes DLQ records (all or none) within `dlqTimeoutMs`; counts them once Kafka has them. */
  async #toDlq(rejected: readonly Rejected[], options: SendOptions): Promise<void> {
    const ms = this.#o.limits.dlqTimeoutMs;
    const source = (rejected[0] as Rejected).source;
    const messages = rejected.map((r) => {
      const userId = r.userId ?? (r.topic ? safeTopicUser(r.topic, this.#o.topicPrefix) : null);
      const record: DlqRecord = {
        reason: r.err.reason,
        message: r.err.message,
        field: r.err.field,
        source: r.source,
        topic: r.topic,
        userId,
        receivedAt: r.receivedAt,
        original: r.original,
      };
      return {
        topic: this.#o.topics.dlq,
        message: {
          key: userId,
          value: this.#o.encoders.dlq.encode(record),
          headers: { reason: r.err.reason },
        },
      };
    });
    const deadline = deadlineSignal(ms, () => new DlqTimeoutError(ms), options.signal);
    try {
      await this.#o.batcher.sendAll(messages, { force: options.force, signal: deadline.signal });
    } catch (err) {
      if (err instanceof DlqTimeoutError) {
        this.#o.metrics.dlqTimeouts.labels(source).inc(rejected.length);
        this.#o.log.warn(
          { source, records: rejected.length, timeoutMs: ms, reason: rejected[0]?.err.reason },
          'DLQ write timed out; the input is not acknowledged',
        );
      }
      throw err;
    } finally {
      deadline.clear();
    }
    for (const r of rejected) {
      this.#rejected[r.source].inc();
      this.#o.metrics.dlq.labels(r.err.reason, r.source).inc();
      this.#o.log.debug(
        { reason: r.err.reason, field: r.err.field, topic: r.topic, source: r.source },
        'event rejected to DLQ',
      );
    }
  }
}

/** Rejected input on its way to the DLQ. */
interface Rejected {
  err: EventRejectedError;
  source: EventSource;
  topic: string | null;
  original: Buffer;
  receivedAt: number;
  userId?: string | null;
}

/**
 * The bytes of one event of an HTTP batch, re-serialised (JSON.parse kept no byte spans). A
 * value too deep to serialise (a hostile `[[[[...]]]]`) is kept as the whole request body
 * instead, which the body bound keeps below Kafka's message limit.
 */
function originalOf(raw: unknown, body: Buffer): Buffer {
  try {
    return Buffer.from(JSON.stringify(raw) ?? 'null');
  } catch {
    return body;
  }
}

/**
 * Whether `value` serialised as JSON would pass `limit` bytes, walked without recursion (so a
 * deeply nested body cannot overflow the stack) and stopping as soon as it does. Strings are
 * counted as their UTF-8 bytes plus quotes, ignoring escapes: close enough for a bound.
 */
export function jsonSizeExceeds(value: unknown, limit: number): boolean {
  let size = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'string') size += Buffer.byteLength(v) + 2;
    else if (typeof v === 'number' || typeof v === 'boolean') size += String(v).length;
    else if (v === null || v === undefined) size += 4;
    else if (Array.isArray(v)) {
      size += 1 + v.length;
      for (const item of v) stack.push(item);
    } else if (typeof v === 'object') {
      const keys = Object.keys(v);
      size += 1 + keys.length;
      for (const k of keys) {
        size += Buffer.byteLength(k) + 3;
        stack.push((v as Record<string, unknown>)[k]);
      }
    }
    if (size > limit) return true;
  }
  return false;
}

function safeTopicUser(topic: string, prefix: string): string | null {
  const rest = topic.startsWith(prefix + '/') ? topic.slice(prefix.length + 1) : null;
  return rest && rest.length <= 128 && !rest.includes('/') ? rest : null;
}

function userIdOf(raw: unknown): string | null {
  const u = (raw as { userId?: unknown } | null)?.userId;
  return typeof u === 'string' && u.length <= 128 ? u : null;
}
