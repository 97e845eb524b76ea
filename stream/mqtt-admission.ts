/**
 * How MQTT messages enter the ingest pipeline when the bridge's byte bound
 * (`RECSYS_INGEST_MAX_QUEUED_BYTES`) is reached:
 *
 * - QoS 1 waits. While the bound leaves no room, or older QoS 1 messages still wait, a new one
 *   joins a waiting line, unacknowledged; the broker sends at most the receive maximum of
 *   unacknowledged messages, so it stops sending more (back-pressure, nothing lost). As the
 *   batcher releases bytes, the line goes in oldest first, forced past the bound (its size is
 *   bounded by the receive maximum). A message whose write failed for a reason worth retrying
 *   (its DLQ record timed out) is tried again after a pause: it stays unacknowledged meanwhile.
 * - QoS 0 is dropped past the bound and counted (`recsys_ingest_dropped_total{reason}`): its
 *   sender asked for at most once, and holding it would make the bound meaningless.
 * - Stopping: nothing more goes in. Waiting QoS 1 messages stay unacknowledged, so the broker
 *   keeps them for the session and delivers them to the next bridge run.
 *
 * @example
 *   const admission = new MqttAdmission({ target: pipeline, dropped, log });
 *   batcher.onRoom(() => admission.drain());
 *   subscriber = new MqttSubscriber({ ..., onMessage: (m) => admission.receive(m) });
 */
import type { Counter } from 'prom-client';
import { isRetriable, type Logger } from '../core/index.js';
import { DlqTimeoutError, type IngestOutcome } from './ingest.js';
import type { InboundMessage } from './mqtt-subscriber.js';
import { IngestQueueFullError } from './producer.js';

/** What the admission feeds: the ingest pipeline. */
export interface AdmissionTarget {
  hasRoom(): boolean;
  ingestMqtt(topic: string, payload: Buffer, qos: 0 | 1): Promise<IngestOutcome>;
}

export type DropReason = 'queue_full' | 'dlq_timeout' | 'stopping' | 'failed';

export interface MqttAdmissionOptions {
  target: AdmissionTarget;
  /** `recsys_ingest_dropped_total{reason}`: QoS 0 messages given up. */
  dropped: Counter<'reason'>;
  log: Logger;
  /** First pause before a failed QoS 1 message is tried again, ms; doubles per attempt. @default 500 */
  retryDelayMs?: number;
  /** @default 5000 */
  maxRetryDelayMs?: number;
}

interface Waiting {
  message: InboundMessage;
  attempt: number;
}

export class MqttAdmission {
  readonly #o: Required<MqttAdmissionOptions>;
  /** The waiting line; `#head` is its first live slot (shift() would be O(n) per message). */
  #line: Waiting[] = [];
  #head = 0;
  #stopping = false;
  readonly #retries = new Set<NodeJS.Timeout>();
  readonly #drops: Record<DropReason, Counter.Internal>;

  constructor(options: MqttAdmissionOptions) {
    this.#o = { retryDelayMs: 500, maxRetryDelayMs: 5000, ...options };
    const d = options.dropped;
    this.#drops = {
      queue_full: d.labels('queue_full'),
      dlq_timeout: d.labels('dlq_timeout'),
      stopping: d.labels('stopping'),
      failed: d.labels('failed'),
    };
  }

  /** QoS 1 messages waiting for room. */
  get waiting(): number {
    return this.#line.length - this.#head;
  }

  receive(message: InboundMessage): void {
    if (message.qos === 0) return this.#qos0(message);
    if (this.#stopping) return;
    this.#admit({ message, attempt: 0 });
  }

  /** Bytes were released: lets waiting QoS 1 messages in, oldest first, while there is room. */
  drain(): void {
    while (this.#head < this.#line.length && !this.#stopping && this.#o.target.hasRoom()) {
      const next = this.#line[this.#head] as Waiting;
      this.#line[this.#head++] = undefined as unknown as Waiting;
      // Its connection is gone: the broker redelivers it on the new one.
      if (!next.message.stale) this.#ingest(next);
    }
    if (this.#head === this.#line.length) {
      this.#line = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#line.length) {
      this.#line = this.#line.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Takes nothing more; what waits stays unacknowledged for the broker to redeliver. */
  stop(): void {
    this.#stopping = true;
    for (const t of this.#retries) clearTimeout(t);
    this.#retries.clear();
    const left = this.waiting;
    this.#line = [];
    this.#head = 0;
    if (left > 0) {
      this.#o.log.info({ messages: left }, 'mqtt: waiting messages left to the broker session');
    }
  }

  #admit(w: Waiting): void {
    if (this.waiting > 0 || !this.#o.target.hasRoom()) this.#line.push(w);
    else this.#ingest(w);
  }

  #ingest(w: Waiting): void {
    const { message } = w;
    this.#o.target.ingestMqtt(message.topic, message.payload, 1).then(
      () => message.ack(),
      (err: Error) => {
        if (this.#stopping || message.stale) return;
        if (!isRetriable(err)) {
          this.#o.log.error(
            { err: err.message, topic: message.topic },
            'ingest failed; message left unacknowledged for redelivery',
          );
          return;
        }
        const delayMs = Math.min(this.#o.maxRetryDelayMs, this.#o.retryDelayMs * 2 ** w.attempt);
        this.#o.log.warn(
          { err: err.message, topic: message.topic, attempt: w.attempt + 1, delayMs },
          'ingest failed; the message stays unacknowledged and is tried again',
        );
        const timer = setTimeout(() => {
          this.#retries.delete(timer);
          if (!this.#stopping && !message.stale) this.#admit({ message, attempt: w.attempt + 1 });
        }, delayMs);
        this.#retries.add(timer);
      },
    );
  }

  #qos0(message: InboundMessage): void {
    if (this.#stopping) return this.#drops.stopping.inc();
    if (!this.#o.target.hasRoom()) return this.#drops.queue_full.inc();
    this.#o.target.ingestMqtt(message.topic, message.payload, 0).catch((err: Error) => {
      if (err instanceof IngestQueueFullError) return this.#drops.queue_full.inc();
      if (err instanceof DlqTimeoutError) return this.#drops.dlq_timeout.inc();
      if (this.#stopping) return this.#drops.stopping.inc();
      this.#drops.failed.inc();
      this.#o.log.error({ err: err.message, topic: message.topic }, 'QoS 0 message lost');
    });
  }
}
