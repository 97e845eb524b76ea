/**
 * Gathers messages from many concurrent callers into few Kafka produce requests. A caller's
 * promise resolves only once Kafka acknowledged (acks=all) the batch holding its message; that
 * is what the MQTT bridge waits for before it sends PUBACK, and HTTP ingest before it answers 202.
 *
 * Batching follows Kafka's Java producer: a batch goes out when it holds `maxBatch` messages or
 * `maxBatchBytes` of payload (so no request can pass the broker's 1 MB `message.max.bytes`,
 * which would fail the same way on every retry and stall the pipeline), or
 * its oldest message has waited `lingerMs`, and at most one produce request is in flight (a
 * retried batch goes before the next, so each partition keeps its order, and small requests do
 * not queue behind each other); what arrives meanwhile waits for the next request, which keeps requests large
 * under load (bench/README.md has the measurements). A failed send is retried with
 * backoff until it succeeds or the batcher is closed: the messages it holds are not lost and not
 * acknowledged meanwhile.
 *
 * Memory is bounded like the Java producer's `buffer.memory`: the payload bytes held (queued
 * and in the request in flight) may not pass `maxQueuedBytes`. A send that would pass it is
 * refused at once with {@link IngestQueueFullError} (HTTP answers 503, MQTT QoS 0 is dropped),
 * unless the caller bounds its messages itself and forces them in (MQTT QoS 1, at most the
 * receive maximum). An empty batcher takes any one send, so no request is too large for ever.
 * A caller that gives up (its `signal` aborts: an HTTP timeout, a DLQ deadline) withdraws its
 * messages that Kafka has not taken yet, so an abandoned request holds no memory.
 */
import type { Message, Producer, TopicMessages } from 'kafkajs';
import {
  DependencyUnavailableError,
  type Logger,
  RecsysError,
  retry,
  untilAborted,
} from '../core/index.js';

type EntryState = 'queued' | 'sending' | 'withdrawn';

interface Entry {
  /** performance.now() when queued. */
  at: number;
  bytes: number;
  topic: string;
  /** Dropped once withdrawn or delivered, so a settled entry holds no payload. */
  message: Message | null;
  state: EntryState;
  settled: boolean;
  resolve: () => void;
  reject: (err: Error) => void;
  /** Told once whether Kafka has the message (see `SendOptions.onOutcome`). */
  outcome: ((written: boolean) => void) | undefined;
}

export interface BatcherOptions {
  producer: Producer;
  lingerMs: number;
  maxBatch: number;
  /** Payload bytes (keys and values) after which a batch goes out. */
  maxBatchBytes: number;
  /** Payload bytes held (queued and in flight) past which sends are refused. @default Infinity */
  maxQueuedBytes?: number;
  log: Logger;
  /** Called with the error of every failed produce attempt. */
  onSendError?: (err: unknown, topics: string[]) => void;
  /** Called with the size of every batch Kafka acknowledged. */
  onBatch?: (size: number) => void;
}

export interface SendOptions {
  /** Queue even past `maxQueuedBytes`: for callers that bound their messages themselves. */
  force?: boolean;
  /**
   * Giving up: on abort, messages Kafka has not taken yet are withdrawn, and the send rejects
   * with the signal's reason. A message already in a request may still land.
   */
  signal?: AbortSignal;
  /**
   * Called once per message (its index in the send) with its true fate, which a caller that
   * gave up does not learn from the promise: true once Kafka acknowledged it, false when it
   * will not be written (refused, withdrawn before Kafka took it, or failed at close).
   */
  onOutcome?: (index: number, written: boolean) => void;
}

export interface OutgoingMessage {
  topic: string;
  message: Message;
}

/** A message the batcher gave up on because it was closed first; the caller may retry. */
export class BatcherClosedError extends DependencyUnavailableError {
  constructor(message: string) {
    super('kafka', `batcher ${message}`);
  }
}

/** A send refused because the batcher holds its bound of bytes already. */
export class IngestQueueFullError extends RecsysError {
  readonly heldBytes: number;
  readonly limitBytes: number;
  constructor(heldBytes: number, limitBytes: number) {
    super(
      'RECSYS_INGEST_QUEUE_FULL',
      `${heldBytes} bytes are waiting for Kafka; the bound is ${limitBytes}`,
    );
    this.heldBytes = heldBytes;
    this.limitBytes = limitBytes;
  }
}

function sizeOf(v: Buffer | string | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'string' ? Buffer.byteLength(v) : v.length;
}

const noop = (): void => undefined;

/** Withdrawn entries stay in the queue until a flush passes them, or until they are this many and half of it. */
const COMPACT_AFTER = 1024;

export class KafkaBatcher {
  readonly #opts: BatcherOptions;
  readonly #maxQueuedBytes: number;
  #queue: Entry[] = [];
  /** Bytes of queued (not withdrawn) entries. */
  #queuedBytes = 0;
  /** Bytes of the entries in the produce request in flight. */
  #sendingBytes = 0;
  /** Withdrawn entries still in `#queue`. */
  #withdrawn = 0;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = new Set<Promise<void>>();
  /** Produce requests in flight; kept at one, see the module comment. */
  #sending = 0;
  /** > 0 while someone waits in flush(): no lingering then. */
  #urgent = 0;
  #closed = new AbortController();
  readonly #roomListeners: Array<() => void> = [];

  constructor(options: BatcherOptions) {
    this.#opts = options;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? Number.POSITIVE_INFINITY;
  }

  /** Messages accepted but not yet taken into a produce request. */
  get pending(): number {
    return this.#queue.length - this.#withdrawn;
  }

  /** Payload bytes held: queued, and in the request in flight. */
  get heldBytes(): number {
    return this.#queuedBytes + this.#sendingBytes;
  }

  get maxQueuedBytes(): number {
    return this.#maxQueuedBytes;
  }

  /** Whether the bound leaves any room (a send of `bytes` more may still be refused). */
  hasRoom(): boolean {
    return this.heldBytes < this.#maxQueuedBytes;
  }

  /** Calls `listener` whenever bytes were released and there is room. */
  onRoom(listener: () => void): void {
    this.#roomListeners.push(listener);
  }

  send(topic: string, message: Message, options: SendOptions = {}): Promise<void> {
    const bytes = sizeOf(message.key) + sizeOf(message.value);
    const refused = this.#refusal(bytes, options, 1);
    if (refused) return Promise.reject(refused);
    const onOutcome = options.onOutcome;
    const outcome = onOutcome && ((written: boolean) => onOutcome(0, written));
    let entry!: Entry;
    const p = new Promise<void>((resolve, reject) => {
      entry = {
        at: 0,
        bytes,
        topic,
        message,
        state: 'queued',
        settled: false,
        resolve,
        reject,
        outcome,
      };
    });
    this.#enqueue(entry);
    if (options.signal) this.#withdrawOnAbort(options.signal, [entry], p);
    this.#schedule();
    return p;
  }

  /** Queues all of `messages` or, if they do not fit, none of them. */
  sendAll(messages: readonly OutgoingMessage[], options: SendOptions = {}): Promise<void> {
    let bytes = 0;
    const sizes = messages.map(({ message: m }) => {
      const n = sizeOf(m.key) + sizeOf(m.value);
      bytes += n;
      return n;
    });
    const refused = this.#refusal(bytes, options, messages.length);
    if (refused) return Promise.reject(refused);
    const onOutcome = options.onOutcome;
    const entries: Entry[] = [];
    const all = Promise.all(
      messages.map(
        ({ topic, message }, i) =>
          new Promise<void>((resolve, reject) => {
            const entry: Entry = {
              at: 0,
              bytes: sizes[i] as number,
              topic,
              message,
              state: 'queued',
              settled: false,
              resolve,
              reject,
              outcome: onOutcome && ((written: boolean) => onOutcome(i, written)),
            };
            entries.push(entry);
            this.#enqueue(entry);
          }),
      ),
    ).then(noop);
    if (options.signal) this.#withdrawOnAbort(options.signal, entries, all);
    this.#schedule();
    return all;
  }

  /** Why a send of `count` messages is refused, if it is (their outcome is then false). */
  #refusal(bytes: number, options: SendOptions, count: number): Error | null {
    let err: Error | null = null;
    const held = this.heldBytes;
    if (this.#closed.signal.aborted) err = new BatcherClosedError('the Kafka writer is closed');
    else if (options.signal?.aborted) err = options.signal.reason as Error;
    else if (!options.force && held > 0 && held + bytes > this.#maxQueuedBytes) {
      err = new IngestQueueFullError(held, this.#maxQueuedBytes);
    }
    if (err) for (let i = 0; i < count; i++) options.onOutcome?.(i, false);
    return err;
  }

  #enqueue(entry: Entry): void {
    entry.at = performance.now();
    this.#queue.push(entry);
    this.#queuedBytes += entry.bytes;
  }

  #schedule(): void {
    // While a request is out, its completion sends what gathered meanwhile.
    if (this.#sending > 0) return;
    if (this.#full()) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), this.#opts.lingerMs);
  }

  #withdrawOnAbort(signal: AbortSignal, entries: Entry[], settled: Promise<void>): void {
    const onAbort = (): void => {
      for (const e of entries) this.#withdraw(e, signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const off = (): void => signal.removeEventListener('abort', onAbort);
    settled.then(off, off);
  }

  /** Rejects `e` now; frees its bytes if Kafka has not taken it (a taken one may still land). */
  #withdraw(e: Entry, reason: Error): void {
    if (e.settled) return;
    if (e.state === 'queued') {
      e.state = 'withdrawn';
      e.message = null;
      this.#queuedBytes -= e.bytes;
      this.#withdrawn++;
      if (this.#withdrawn > COMPACT_AFTER && this.#withdrawn * 2 > this.#queue.length) {
        this.#queue = this.#queue.filter((x) => x.state !== 'withdrawn');
        this.#withdrawn = 0;
      }
      this.#released();
      tell(e, false);
    }
    settle(e, reason);
  }

  #released(): void {
    if (!this.hasRoom()) return;
    for (const listener of this.#roomListeners) listener();
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#queue.length === 0 || this.#sending > 0) return;
    // Take messages up to either bound (always at least one, whatever its size), passing over
    // withdrawn ones.
    const batch: Entry[] = [];
    let scanned = 0;
    let bytes = 0;
    while (scanned < this.#queue.length && batch.length < this.#opts.maxBatch) {
      const e = this.#queue[scanned] as Entry;
      if (e.state === 'withdrawn') {
        scanned++;
        this.#withdrawn--;
        continue;
      }
      if (batch.length > 0 && bytes + e.bytes > this.#opts.maxBatchBytes) break;
      bytes += e.bytes;
      e.state = 'sending';
      batch.push(e);
      scanned++;
    }
    this.#queue.splice(0, scanned);
    if (batch.length === 0) return;
    this.#queuedBytes -= bytes;
    this.#sendingBytes += bytes;
    this.#sending++;
    const p = this.#deliver(batch, bytes).finally(() => {
      this.#sending--;
      this.#inFlight.delete(p);
      this.#next();
    });
    this.#inFlight.add(p);
  }

  async #deliver(batch: Entry[], bytes: number): Promise<void> {
    const byTopic = new Map<string, Message[]>();
    for (const e of batch) {
      const list = byTopic.get(e.topic);
      const m = e.message as Message;
      if (list) list.push(m);
      else byTopic.set(e.topic, [m]);
      e.message = null;
    }
    const topicMessages: TopicMessages[] = [...byTopic].map(([topic, messages]) => ({
      topic,
      messages,
    }));
    let failure: Error | null = null;
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
      failure = err as Error;
    }
    // Bytes first: a caller resolved below that sends again sees the room.
    this.#sendingBytes -= bytes;
    if (!failure) this.#opts.onBatch?.(batch.length);
    for (const e of batch) {
      tell(e, !failure);
      settle(e, failure);
    }
    this.#released();
  }

  #full(): boolean {
    return this.pending >= this.#opts.maxBatch || this.#queuedBytes >= this.#opts.maxBatchBytes;
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

  /**
   * Flushes, then rejects anything still waiting (a send that could not succeed) once
   * `timeoutMs` passed. Resolves true when everything was acknowledged in time.
   */
  async close(timeoutMs = 10_000): Promise<boolean> {
    const timer = setTimeout(
      () => this.#closed.abort(new BatcherClosedError('closed before Kafka acknowledged')),
      timeoutMs,
    );
    await this.flush();
    clearTimeout(timer);
    const clean = !this.#closed.signal.aborted;
    this.#closed.abort(new BatcherClosedError('closed'));
    return clean;
  }
}

/** Reports an entry's fate to its sender's `onOutcome`, once. */
function tell(e: Entry, written: boolean): void {
  const { outcome } = e;
  e.outcome = undefined;
  outcome?.(written);
}

/** Resolves (`err` null) or rejects an entry once; later calls do nothing. */
function settle(e: Entry, err: Error | null): void {
  if (e.settled) return;
  e.settled = true;
  const { resolve, reject } = e;
  e.resolve = noop;
  e.reject = noop;
  if (err) reject(err);
  else resolve();
}
