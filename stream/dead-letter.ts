/**
 * The DLQ writer consumers share: records that cannot be used (undecodable values, values of
 * another schema or breaking the contract, records a role gave up on, documents a sink refuses)
 * go to the DLQ topic as Avro `DlqRecord`s with a reason, keyed by the userId when known; the
 * call resolves only after Kafka acknowledged them (so the offsets of the records they replace
 * may be committed), and counts them by role and reason (`recsys_consumer_dead_letters_total`).
 */
import type { Producer } from 'kafkajs';
import type { Counter } from 'prom-client';
import type { Config } from '../core/index.js';
import {
  createEncoder,
  EVENT_SOURCES,
  type DlqRecord,
  type EventSource,
  registerSchema,
  subjectsFor,
} from '../schemas/index.js';
import type { RejectedRecord } from './records.js';

export type DeadLetter = (records: readonly DlqRecord[]) => Promise<void>;

/**
 * Registers the DLQ schema (idempotent) and returns a writer on a connected `producer`; with
 * `counted`, each record written counts under its role and reason.
 */
export async function createDeadLetter(
  config: Readonly<Config>,
  producer: Producer,
  counted?: { role: string; counter: Counter<'role' | 'reason'> },
): Promise<DeadLetter> {
  const subject = subjectsFor(config.kafka.topics).find((s) => s.name === 'DlqRecord');
  if (!subject) throw new Error('no DlqRecord subject');
  const id = await registerSchema(config.registry.url, subject);
  const encoder = createEncoder<DlqRecord>(id, subject.schema);
  return async (records) => {
    if (records.length === 0) return;
    await producer.send({
      topic: config.kafka.topics.dlq,
      acks: -1,
      messages: records.map((r) => ({ key: r.userId, value: encoder.encode(r) })),
    });
    if (counted) {
      for (const r of records) counted.counter.inc({ role: counted.role, reason: r.reason });
    }
  };
}

/**
 * The DLQ record of a Kafka record a consumer rejected: the exact Kafka value as `original`,
 * the message `<topic>/<partition>@<offset>: <what went wrong> [role <role>]`, its Kafka timestamp as `receivedAt`
 * (when the bridge wrote it; a replay writes the same dead letter).
 */
export function rejectedToDlq(r: RejectedRecord, role: string): DlqRecord {
  const decoded = r.decoded as { source?: unknown } | undefined;
  // The schema's source names ingest paths; a record that reached a topic came through the
  // bridge, by the path its event says when it decoded as one, else unknown here.
  const source: EventSource = EVENT_SOURCES.includes(decoded?.source as EventSource)
    ? (decoded?.source as EventSource)
    : 'mqtt';
  return {
    reason: r.reason,
    message: `${r.topic}/${r.partition}@${r.offset}: ${r.detail} [role ${role}]`,
    field: r.field,
    source,
    topic: r.topic,
    userId: r.key,
    receivedAt: r.timestamp,
    original: r.value ?? Buffer.alloc(0),
  };
}
