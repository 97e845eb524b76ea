/**
 * Gathers messages from many concurrent callers into few Kafka produce requests. A caller's
 * promise resolves only once Kafka acknowledged (acks=all) the batch holding its message; that
 * is what the MQTT bridge waits for before it sends PUBACK, and HTTP ingest before it answers 202.
 *
 * Batching follows Kafka's Java producer: a batch goes out when it holds `maxBatch` messages or
 * `maxBatchBytes` of payload (so no request can pass the broker's 1 MB `message.max.bytes`,
 * which would fail the same way on every retry and stall the pipeline), or
 * its oldest message has waited `lingerMs`, and at most one produce request is in flight (the
 * idempotent producer's sequence numbers stay in order, and small requests do not queue behind
 * each other); what arrives meanwhile waits for the next request, which keeps requests large
 * under load (bench/README.md has the measurements). A failed send is retried with
 * backoff until it succeeds or the batcher is closed: the messages it holds are not lost and not
 * acknowledged meanwhile, so MQTT stops delivering more (receive maximum) and HTTP callers time
 * out with 503 and retry.
 */
import type { Message, Producer, TopicMessages } from 'kafkajs';
import { DependencyUnavailableError, type Logger, retry } from '../core/index.js';

interface Entry {
  /** performance.now() when queued. */
  at: number;
  bytes: number;
  topic: string;
  message: Message;
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface BatcherOptions {
  producer: Producer;
  lingerMs: number;
  maxBatch: number;
  /** Payload bytes (keys and values) after which a batch goes out. */
  maxBatchBytes: number;
  log: Logger;
  /** Called with the error of every failed produce attempt. */
  onSendError?: (err: unknown, topics: string[]) => void;
  /** Called with the size of every batch Kafka acknowledged. */
  onBatch?: (size: number) => void;
}

/** A message the batcher gave up on because it was closed first; the caller may retry. */
export class BatcherClosedError extends DependencyUnavailableError {
  constructor(message: string) {
    super('kafka', `batcher ${message}`);
  }
}

function sizeOf(v: Buffer | string | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'string' ? Buffer.byteLength(v) : v.length;
}

/** Settles like `promise`, or rejects when `signal` aborts first; leaves no listener behind. */
async function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  const abort = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, abort]);
  } finally {
    signal.removeEventListener('abort', onAbort as () => void);
  }
}

export class KafkaBatcher {
  readonly #opts: BatcherOptions;
  #queue: Entry[] = [];
  #queuedBytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = new Set<Promise<void>>();
  /** Produce requests in flight; kept at one, see the module comment. */
  #sending = 0;
  /** > 0 while someone waits in flush(): no lingering then. */
  #urgent = 0;
  #closed = new AbortController();

  constructor(options: BatcherOptions) {
    this.#opts = options;
  }

  /** Messages accepted but not yet acknowledged by Kafka. */
  get pending(): number {
    return this.#queue.length;
  }

  send(topic: string, message: Message): Promise<void> {
    if (this.#closed.signal.aborted)
      return Promise.reject(new BatcherClosedError('the Kafka writer is closed'));
    return new Promise<void>((resolve, reject) => {
      const bytes = sizeOf(message.key) + sizeOf(message.value);
      this.#queue.push({ at: performance.now(), bytes, topic, message, resolve, reject });
      this.#queuedBytes += bytes;
      // While a request is out, its completion sends what gathered meanwhile.
      if (this.#sending > 0) return;
      if (this.#full()) this.#flush();
      else this.#timer ??= setTimeout(() => this.#flush(), this.#opts.lingerMs);
    });
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#queue.length === 0 || this.#sending > 0) return;
    // Take messages up to either bound (always at least one, whatever its size).
    let n = 0;
    let bytes = 0;
    while (n < this.#queue.length && n < this.#opts.maxBatch) {
      const next = (this.#queue[n] as Entry).bytes;
      if (n > 0 && bytes + next > this.#opts.maxBatchBytes) break;
      bytes += next;
      n++;
    }
    const batch = this.#queue.splice(0, n);
    this.#queuedBytes -= bytes;
    this.#sending++;
    const p = this.#deliver(batch).finally(() => {
      this.#sending--;
      this.#inFlight.delete(p);
      this.#next();
    });
    this.#inFlight.add(p);
  }

  async #deliver(batch: Entry[]): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const e of batch) {
      const list = byTopic.get(e.topic);
      if (list) list.push(e.message);
      else byTopic.set(e.topic, [e.message]);
    }
    const topicMessages: TopicMessages[] = [...byTopic].map(([topic, messages]) => ({
      topic,
      messages,
    }));
    try {
      const sending = retry(() => this.#opts.producer.sendBatch({ acks: -1, topicMessages }), {
        attempts: Number.POSITIVE_INFINITY,
        initialDelayMs: 100,
        maxDelayMs: 5000,
        signal: this.#closed.signal,
        // Whatever went wrong, the messages must still reach Kafka; keep trying until closed.
        retriable: () => true,
        onRetry: (err, attempt, delayMs) => {
          this.#opts.onSendError?.(err, [...byTopic.keys()]);
          this.#opts.log.warn(
            { err: (err as Error).message, attempt, delayMs, messages: batch.length },
            'kafka produce failed; retrying',
          );
        },
      });
      // close() gives up on a request that hangs (a broker that accepts the connection and
      // never answers) as well as on one that keeps failing.
      sending.catch(() => undefined); // its outcome is the race's once the race is lost
      await untilAborted(sending, this.#closed.signal);
    } catch (err) {
      for (const e of batch) e.reject(err as Error);
      return;
    }
    this.#opts.onBatch?.(batch.length);
    for (const e of batch) e.resolve();
  }

  #full(): boolean {
    return (
      this.#queue.length >= this.#opts.maxBatch || this.#queuedBytes >= this.#opts.maxBatchBytes
    );
  }

  /** After a request returns: send now if a batch is due, else when the oldest one lingered enough. */
  #next(): void {
    const oldest = this.#queue[0];
    if (!oldest) return;
    const waited = performance.now() - oldest.at;
    if (this.#full() || waited >= this.#opts.lingerMs || this.#urgent > 0) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), this.#opts.lingerMs - waited);
  }

  /** Sends what is queued and waits for every batch in flight. */
  async flush(): Promise<void> {
    this.#urgent++;
    try {
      while (this.#queue.length > 0 || this.#inFlight.size > 0) {
        this.#flush();
        await Promise.allSettled([...this.#inFlight]);
      }
    } finally {
      this.#urgent--;
    }
  }

  /** Flushes, then rejects anything still waiting (a send that could not succeed). */
  async close(timeoutMs = 10_000): Promise<void> {
    const timer = setTimeout(
      () => this.#closed.abort(new BatcherClosedError('closed before Kafka acknowledged')),
      timeoutMs,
    );
    await this.flush();
    clearTimeout(timer);
    this.#closed.abort(new BatcherClosedError('closed'));
  }
}
