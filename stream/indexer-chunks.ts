/**
 * What the indexer role does with one chunk (see `roles/indexer.ts` for the steps): skips the
 * records an earlier attempt already made durable, dead-letters values of the wrong schema,
 * writes the documents through the {@link BulkWriter}, dead-letters what Elasticsearch refuses
 * for good, and throws a retriable error while any document met a cluster problem.
 *
 * @example
 *   const chunks = new IndexerChunks({ config, log, producer, writer, counters, ... });
 *   consumer = startConsumer({ decoder: chunks.decoder, handle: (r) => chunks.handle(r), ... });
 */
import { createHash } from 'node:crypto';
import type { Counter } from 'prom-client';
import type { Message, Producer } from 'kafkajs';
import { DependencyUnavailableError, type Config, type Logger } from '../core/index.js';
import {
  createDecoder,
  type Decoder,
  type DlqRecord,
  type Encoder,
  type EventSource,
  type ServedFeed,
  type UserEvent,
} from '../schemas/index.js';
import type { ConsumedRecord, RejectedRecord } from './consumer.js';
import type { BulkItem, BulkWriter, ItemFailure } from './elastic-bulk.js';
import {
  dlqDocument,
  eventDocument,
  PAYLOAD_FIELDS,
  servedDocument,
  type EsDocument,
  type StreamName,
} from './indexer-docs.js';

type Value = UserEvent | ServedFeed | DlqRecord;

/** A decoded record value with what the indexer needs beyond it. */
export interface Decoded {
  value: Value;
  /** Full name of the writer schema's record, e.g. `recsys.UserEvent`. */
  schema: string | undefined;
  /** The Kafka value bytes, for the DLQ (`original`) and the dead-letter digest. */
  raw: Buffer;
}

export const OUTCOMES = ['created', 'duplicate', 'rejected'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** What goes to the DLQ (or, for the DLQ topic's own records, to the log). */
interface Rejection {
  stream: StreamName;
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  raw: Buffer;
  /** `undecodable`, `es_rejected`, or why the consumer loop gave the record up. */
  reason: string;
  message: string;
  field: string | null;
  source: EventSource;
  userId: string | null;
  receivedAt: number;
}

/** Longest Elasticsearch error reason kept in a dead letter (they quote the offending value). */
const REASON_KEEP = 1000;

const clip = (s: string, n: number): string => (s.length <= n ? s : `${s.slice(0, n)}…`);
const where = (r: { topic: string; partition: number; offset: string }): string =>
  `${r.topic}[${r.partition}]@${r.offset}`;

export interface IndexerChunkDeps {
  config: Readonly<Config>;
  log: Logger;
  producer: Producer;
  writer: BulkWriter;
  /** Topic → the data stream its records go to. */
  streamOf: ReadonlyMap<string, StreamName>;
  /** Data stream → its index name, and the writer schema its values must have. */
  indexOf: Readonly<Record<StreamName, string>>;
  schemaOf: Readonly<Record<StreamName, string>>;
  counters: Readonly<Record<StreamName, Record<Outcome, Counter.Internal>>>;
  /** Counts values of another topic's schema, with the consumer's undecodable records. */
  undecodableCount: Counter.Internal;
  /** Dead letters written, by role (`indexer`) and reason. */
  deadLetters: Counter<'role' | 'reason'>;
  /** The DLQ encoder, known once the DLQ schema is registered. */
  dlqEncoder: () => Encoder<DlqRecord>;
}

export class IndexerChunks {
  /** Decodes values and keeps their writer schema and raw bytes. */
  readonly decoder: Decoder<Decoded>;
  readonly #deps: IndexerChunkDeps;
  /** Records (the consumer's objects) whose effect is durable: a retry skips them. */
  readonly #durable = new WeakSet<object>();

  constructor(deps: IndexerChunkDeps) {
    this.#deps = deps;
    const registry = createDecoder<Value>(deps.config.registry.url);
    this.decoder = {
      prepare: (messages) => registry.prepare(messages),
      decode: (message) => {
        const value = registry.decode(message);
        const type = (value as { constructor?: { getType?: () => { name?: string } } }).constructor;
        return { value, schema: type?.getType?.().name, raw: message as Buffer };
      },
    };
  }

  /** Makes one chunk durable in Elasticsearch (or the DLQ); throws to be called again. */
  async handle(records: ConsumedRecord<Decoded>[]): Promise<void> {
    const { streamOf, schemaOf, indexOf, writer } = this.#deps;
    const now = Date.now();
    const work: Array<{ record: ConsumedRecord<Decoded>; stream: StreamName }> = [];
    const items: BulkItem[] = [];
    const rejections: Array<{ record: ConsumedRecord<Decoded>; rejection: Rejection }> = [];
    for (const r of records) {
      if (this.#durable.has(r)) continue;
      const stream = streamOf.get(r.topic) as StreamName;
      if (r.value.schema !== schemaOf[stream]) {
        const detail = `schema ${r.value.schema} is not ${schemaOf[stream]}, the value schema of this topic`;
        rejections.push({
          record: r,
          rejection: rejectionOf(stream, r, 'undecodable', detail, null),
        });
        continue;
      }
      const { id, doc } = this.#build(stream, r, now);
      work.push({ record: r, stream });
      items.push({ index: indexOf[stream], id, source: JSON.stringify(doc) });
    }
    const results = await writer.write(items);
    let missing = 0;
    let example: ItemFailure | undefined;
    results.forEach((res, i) => {
      const { record, stream } = work[i] as (typeof work)[0];
      if (res.outcome === 'created' || res.outcome === 'duplicate') {
        this.#durable.add(record);
        this.#deps.counters[stream][res.outcome].inc();
      } else if (res.outcome === 'rejected') {
        const esField = /\bfield \[([^\]]+)\]/.exec(res.reason)?.[1];
        const field =
          esField !== undefined && stream !== 'dlq'
            ? (PAYLOAD_FIELDS[stream][esField] ?? null)
            : null;
        const detail = `${res.type}: ${clip(res.reason, REASON_KEEP)}`;
        rejections.push({
          record,
          rejection: rejectionOf(stream, record, 'es_rejected', detail, field),
        });
      } else {
        missing++;
        example ??= res;
      }
    });
    if (rejections.length > 0) await this.#reject(rejections);
    if (example) {
      throw new DependencyUnavailableError(
        'elasticsearch',
        `${missing} of ${items.length} documents not indexed yet: HTTP ${example.status} ${example.type}: ${clip(example.reason, 300)}`,
      );
    }
  }

  /** Records the consumer loop could not decode, or gave up on: to the DLQ. */
  async rejected(bad: RejectedRecord[]): Promise<void> {
    await this.#deadLetter(
      bad.map((b) => ({
        stream: this.#deps.streamOf.get(b.topic) as StreamName,
        topic: b.topic,
        partition: b.partition,
        offset: b.offset,
        key: b.key,
        raw: b.value ?? Buffer.alloc(0),
        reason: b.reason,
        message: `${b.detail} (${where(b)})`,
        field: b.field,
        source: 'http' as const,
        userId: b.key,
        receivedAt: b.timestamp,
      })),
    );
  }

  async #reject(
    rejections: Array<{ record: ConsumedRecord<Decoded>; rejection: Rejection }>,
  ): Promise<void> {
    await this.#deadLetter(rejections.map((x) => x.rejection));
    for (const { record, rejection } of rejections) {
      this.#durable.add(record);
      if (rejection.reason === 'es_rejected') {
        this.#deps.counters[rejection.stream].rejected.inc();
      }
      // The consumer loop counts what it cannot decode; a value of another topic's schema
      // decodes, so it is counted here, under the same metric.
      else this.#deps.undecodableCount.inc();
    }
    this.#deps.log.warn(
      { count: rejections.length, reason: rejections[0]?.rejection.message },
      'records refused and dead-lettered',
    );
  }

  #build(stream: StreamName, r: ConsumedRecord<Decoded>, now: number): EsDocument {
    const ctx = { namespace: this.#deps.config.indexer.namespace, now };
    switch (stream) {
      case 'events':
        return eventDocument(r.value.value as UserEvent, ctx);
      case 'served':
        return servedDocument(r.value.value as ServedFeed, ctx);
      case 'dlq': {
        const digest = createHash('sha256').update(r.value.raw).digest('base64url');
        return dlqDocument(r.value.value as DlqRecord, { ...r, digest }, ctx);
      }
    }
  }

  /** Dead letters to the DLQ topic; the DLQ topic's own records are logged instead (no loop). */
  async #deadLetter(rejections: Rejection[]): Promise<void> {
    const messages: Message[] = [];
    for (const r of rejections) {
      if (r.stream === 'dlq') {
        this.#deps.log.error(
          { topic: r.topic, partition: r.partition, offset: r.offset, reason: r.reason },
          `dead letter cannot be indexed (${r.message}); it stays in the DLQ topic`,
        );
        continue;
      }
      const record: DlqRecord = {
        reason: r.reason,
        message: r.message,
        field: r.field,
        source: r.source,
        topic: null,
        userId: r.userId,
        receivedAt: r.receivedAt,
        original: r.raw,
      };
      messages.push({
        key: r.userId ?? r.key,
        value: this.#deps.dlqEncoder().encode(record),
        headers: { origin: `${r.topic}/${r.partition}/${r.offset}` },
      });
    }
    if (messages.length === 0) return;
    try {
      await this.#deps.producer.send({
        topic: this.#deps.config.kafka.topics.dlq,
        acks: -1,
        messages,
      });
    } catch (err) {
      throw new DependencyUnavailableError('kafka', `dead-lettering: ${(err as Error).message}`, {
        cause: err,
      });
    }
    for (const r of rejections) {
      if (r.stream !== 'dlq') this.#deps.deadLetters.inc({ role: 'indexer', reason: r.reason });
    }
  }
}

/** A rejection for one consumed record, with the payload's own source, user and time. */
function rejectionOf(
  stream: StreamName,
  r: ConsumedRecord<Decoded>,
  reason: Rejection['reason'],
  detail: string,
  field: string | null,
): Rejection {
  const v = r.value.value as Partial<UserEvent & ServedFeed>;
  const isEvent = stream === 'events' && reason === 'es_rejected';
  return {
    stream,
    topic: r.topic,
    partition: r.partition,
    offset: r.offset,
    key: r.key,
    raw: r.value.raw,
    reason,
    message: `${detail} (${where(r)})`,
    field,
    source: isEvent ? (v.source as EventSource) : 'http',
    userId: reason === 'es_rejected' ? (v.userId ?? r.key) : r.key,
    receivedAt: isEvent ? (v.receivedAt as number) : r.timestamp,
  };
}
