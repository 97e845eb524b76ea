/**
 * The records the consumer loop (`consumer.ts`) hands around: a decoded record, where a chunk
 * ends, a record it rejects (for the DLQ), and the rule a topic's values must keep.
 */
import type { RecordProblem } from '../schemas/index.js';

/** One decoded record, with where it came from (the identity of its side effects). */
export interface ConsumedRecord<T> {
  topic: string;
  partition: number;
  /** Kafka offset, as kafkajs gives it (a decimal string; offsets pass 2^53 in theory). */
  offset: string;
  key: string | null;
  value: T;
  /** Kafka record timestamp, epoch ms. */
  timestamp: number;
  /** The Kafka value bytes (for the DLQ, when the record is given up). */
  raw?: Buffer | null;
}

/** Where a chunk ends: its partition and last offset, whether or not that record decoded. */
export interface ChunkEnd {
  topic: string;
  partition: number;
  lastOffset: string;
}

/** A record the loop does not hand to the role (or gave up on), for the role's DLQ. */
export interface RejectedRecord {
  topic: string;
  partition: number;
  offset: string;
  key: string | null;
  /** The Kafka value, byte for byte. */
  value: Buffer | null;
  /** Kafka record timestamp, epoch ms. */
  timestamp: number;
  /**
   * Stable snake_case reason, the DLQ record's and the metric label's: `undecodable`,
   * `foreign_schema`, `invalid_record`, or {@link failureReason} of the error that gave it up.
   */
  reason: string;
  /** What went wrong, for people. */
  detail: string;
  /** The offending field's path, or null. */
  field: string | null;
  /** The decoded value, when it decoded. */
  decoded?: unknown;
}

/** What a topic's values must be: the full name of the writer schema's record, and a check. */
export interface RecordRule<T> {
  /** e.g. `recsys.UserEvent`; a value of any other schema is rejected as `foreign_schema`. */
  schema: string;
  /** A problem rejects the value as `invalid_record`. */
  check?: (value: T) => RecordProblem | null;
}
