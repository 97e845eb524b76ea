/** The lake writer's state per topic-partition (`lake-writer.ts`). */
import type { DuckDBAppender, DuckDBConnection } from '@duckdb/node-api';

/** One table and its appender; a partition has two, one filling while the other is written. */
export interface Slot {
  conn: DuckDBConnection;
  table: string;
  appender: DuckDBAppender | null;
  /** Set while the slot's roll is written; resolves when the slot is empty and open again. */
  busy: Promise<void> | null;
}

/** The open roll of one partition. */
export interface Roll {
  first: bigint;
  last: bigint;
  rows: number;
  /** Rows per hour (see `hourOf`). */
  hours: Map<number, number>;
  slot: Slot;
  timer: NodeJS.Timeout;
}

export interface PartitionState {
  topic: string;
  partition: number;
  commit: (next: string) => void;
  slots: Slot[];
  /** Offset after the last one taken: the next roll's first. */
  next: bigint;
  roll: Roll | null;
  /** Rolls being written, in order; never rejects. */
  writing: Promise<void>;
  pendingRows: number;
  taking: boolean;
  rollDue: boolean;
  /** Aborted on revocation: nothing more is renamed or committed. */
  revoked: AbortController;
  failure: Error | null;
}
