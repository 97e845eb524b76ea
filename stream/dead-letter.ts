/**
 * The DLQ writer consumers share: records that cannot be used (undecodable values, documents a
 * sink refuses) go to the DLQ topic as Avro `DlqRecord`s with a reason, keyed by the userId when
 * known, and the call resolves only after Kafka acknowledged them (so the offsets of the
 * records they replace may be committed).
 */
import type { Producer } from 'kafkajs';
import type { Config } from '../core/index.js';
import { createEncoder, type DlqRecord, registerSchema, subjectsFor } from '../schemas/index.js';
import type { UndecodableRecord } from './consumer.js';

export type DeadLetter = (records: readonly DlqRecord[]) => Promise<void>;

/** Registers the DLQ schema (idempotent) and returns a writer on a connected `producer`. */
export async function createDeadLetter(
  config: Readonly<Config>,
  producer: Producer,
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
  };
}

/** The DLQ record for a Kafka record whose value did not decode. */
export function undecodableToDlq(r: UndecodableRecord, receivedAt = Date.now()): DlqRecord {
  return {
    reason: 'undecodable',
    message: `${r.topic}/${r.partition}@${r.offset}: ${r.error.message}`,
    field: null,
    // The schema's source enum names ingest paths; a record that reached a topic came through
    // the bridge, and which path is unknown here.
    source: 'mqtt',
    topic: r.topic,
    userId: r.message.key ? r.message.key.toString() : null,
    receivedAt,
    original: r.message.value ?? Buffer.alloc(0),
  };
}
