/**
 * The lake's Parquet writer: takes one partition's events at a time, files each under the UTC
 * hour of its `ts`, and rolls all open files of a partition together, each written to a temp
 * name, fsynced, renamed into place and its directory fsynced; only then is the roll's offset
 * range released for commit. Parquet is written by an embedded DuckDB (zstd, `ts` and
 * `receivedAt` as UTC timestamps), the engine the batch jobs read the lake with.
 *
 * Columns: eventId, userId, sessionId, itemId, type, ts, context_page, context_position,
 * context_device, value, receivedAt, source, kafka_partition, kafka_offset (the record's Kafka
 * provenance); `topic`, `date` and `hour` come from the directories (see `lake-layout.ts`).
 *
 * Per topic-partition (steps):
 *   1. On assignment at offset C (where consumption restarts), wait for what an earlier
 *      assignment of it still writes, then clean up with {@link planRecovery}: remove files
 *      whose range starts at or after C (written, never committed) and temp files, trim a file
 *      containing C. The replay from C writes those records again: none twice, none lost.
 *   2. Records go into an in-memory DuckDB table (one appender, a column for the hour). The open
 *      roll's range is first..last: from the offset after the previous roll to the last offset
 *      taken, undecodable or refused records included.
 *   3. The roll closes when it holds `rollRecords` records or is `rollMs` old: one Parquet file
 *      per hour it touched, all named `<topic>-<partition>-<first>-<last>.parquet`. Closing
 *      every file of the partition at once is what keeps commits exact: files rolled one by one
 *      would interleave ranges (a late event's hour file open across many commits), and an
 *      offset could be committed in the middle of a file.
 *   4. When all its files are in place, `commit(last + 1)`. Rolls are written in order, one at a
 *      time, while the next fills a second table; a third waits (backpressure on `take`).
 *   5. A write that fails is retried with backoff; meanwhile `take` fails as soon as it would
 *      have to wait, so the consumer loop retries it while heartbeating (and readiness is red).
 *   6. On revocation everything not committed is dropped; a roll being written is abandoned
 *      before its next rename. Its partition's next owner cleans up whatever was renamed.
 *
 * What this cannot fence: a process frozen longer than the session timeout in the middle of a
 * roll, that renames a file after the partition's new owner cleaned up (a rename already issued
 * when the group starts rebalancing finishes long before the new owner can be assigned: that
 * takes this member's rejoin). A reader that must be exact even then deduplicates on eventId,
 * the idempotency key.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBAppender } from '@duckdb/node-api';
import { type Logger, RecsysError, retry, sleep } from '../core/index.js';
import type { UserEvent } from '../schemas/index.js';
import type { ChunkEnd, ConsumedRecord } from './consumer.js';
import { fileName } from './lake-layout.js';
import { append, DUCKDB_MEMORY_LIMIT, DUCKDB_THREADS, TABLE_COLUMNS } from './lake-parquet.js';
import { type LakeMetrics } from './lake-metrics.js';
import { HourFiles } from './lake-files.js';
import { LakeRecovery } from './lake-recovery.js';
import type { PartitionState, Roll, Slot } from './lake-state.js';

/** A roll could not be written (disk full, permissions, ...); retried. */
export class LakeWriteError extends RecsysError {
  readonly topic: string;
  readonly partition: number;
  constructor(topic: string, partition: number, cause: unknown) {
    super('RECSYS_LAKE_WRITE_FAILED', `${topic}/${partition}: ${(cause as Error).message}`, {
      cause,
      retriable: true,
    });
    this.topic = topic;
    this.partition = partition;
  }
}

/** Metrics of every lake writer in one process. Create once per registry. */
export interface LakeWriterOptions {
  /** Root directory of the lake. */
  dir: string;
  /** Records after which a roll closes. */
  rollRecords: number;
  /** Age after which a roll closes, ms. */
  rollMs: number;
  log: Logger;
  metrics: LakeMetrics;
}

const tpKey = (topic: string, partition: number): string => `${topic}|${partition}`;

export class LakeWriter {
  readonly #db: DuckDBInstance;
  readonly #spillDir: string;
  readonly #rollRecords: number;
  readonly #rollMs: number;
  readonly #log: Logger;
  readonly #metrics: LakeMetrics;
  readonly #states = new Map<string, PartitionState>();
  readonly #retiring = new Set<Promise<void>>();
  readonly #recovery: LakeRecovery;
  readonly #files: HourFiles;
  #tables = 0;

  private constructor(db: DuckDBInstance, spillDir: string, options: LakeWriterOptions) {
    this.#db = db;
    this.#spillDir = spillDir;
    this.#rollRecords = options.rollRecords;
    this.#rollMs = options.rollMs;
    this.#log = options.log.child({ component: 'lake-writer' });
    this.#metrics = options.metrics;
    this.#metrics.writers.add(this);
    this.#recovery = new LakeRecovery(db, options.dir, this.#metrics, this.#log);
    this.#files = new HourFiles(options.dir, this.#metrics);
  }

  /** Creates the lake directory if needed and starts the embedded DuckDB. */
  static async open(options: LakeWriterOptions): Promise<LakeWriter> {
    await mkdir(options.dir, { recursive: true });
    const spillDir = await mkdtemp(join(tmpdir(), 'recsys-lake-'));
    try {
      const db = await DuckDBInstance.create(':memory:', {
        threads: DUCKDB_THREADS,
        memory_limit: DUCKDB_MEMORY_LIMIT,
        temp_directory: spillDir,
        autoinstall_known_extensions: 'false',
      });
      return new LakeWriter(db, spillDir, options);
    } catch (err) {
      await rm(spillDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Files being filled, for the gauge. */
  openFiles(): number {
    let n = 0;
    for (const s of this.#states.values()) n += s.roll?.hours.size ?? 0;
    return n;
  }

  /** Rows taken and not yet committed, for the gauge. */
  pendingRows(): number {
    let n = 0;
    for (const s of this.#states.values()) n += s.pendingRows;
    return n;
  }

  /** The error of a roll being retried, or null when every write succeeds. */
  get failure(): Error | null {
    for (const s of this.#states.values()) if (s.failure) return s.failure;
    return null;
  }

  /**
   * Step 1: `topic`/`partition` restarts at `offset`; cleans up after it and opens it.
   * `commit(next)` is called after each roll is in place.
   */
  async assign(
    topic: string,
    partition: number,
    offset: string,
    commit: (next: string) => void,
  ): Promise<void> {
    await Promise.all(this.#retiring);
    const key = tpKey(topic, partition);
    const stale = this.#states.get(key);
    if (stale) {
      this.#states.delete(key);
      await this.#retire(stale);
    }
    const start = BigInt(offset);
    await this.#recovery.recover(topic, partition, start);
    const slots = await Promise.all([this.#slot(), this.#slot()]);
    this.#states.set(key, {
      topic,
      partition,
      commit,
      slots,
      next: start,
      roll: null,
      writing: Promise.resolve(),
      pendingRows: 0,
      taking: false,
      rollDue: false,
      revoked: new AbortController(),
      failure: null,
    });
    this.#log.debug({ topic, partition, offset }, 'partition assigned');
  }

  /**
   * Steps 2-3: adds a chunk of one partition (records in offset order, times checked with
   * `isLakeTime`) and moves the open roll to the chunk's end. Records taken before (a retry
   * of the chunk) are skipped. Resolves at once unless two rolls are still being written.
   */
  async take(records: readonly ConsumedRecord<UserEvent>[], chunk: ChunkEnd): Promise<void> {
    const state = this.#states.get(tpKey(chunk.topic, chunk.partition));
    // Not assigned here (any more): the consumer loop does not resolve this chunk.
    if (!state || state.revoked.signal.aborted) return;
    state.taking = true;
    try {
      for (const r of records) {
        const offset = BigInt(r.offset);
        if (offset < state.next) continue;
        const roll = state.roll ?? (await this.#openRoll(state));
        if (state.revoked.signal.aborted) return;
        const hour = append(roll.slot.appender as DuckDBAppender, r, offset);
        roll.rows += 1;
        roll.hours.set(hour, (roll.hours.get(hour) ?? 0) + 1);
        roll.last = offset;
        state.next = offset + 1n;
        state.pendingRows += 1;
        if (roll.rows >= this.#rollRecords) this.#seal(state);
      }
      const last = BigInt(chunk.lastOffset);
      if (last >= state.next) {
        const roll = state.roll ?? (await this.#openRoll(state));
        if (state.revoked.signal.aborted) return;
        roll.last = last;
        state.next = last + 1n;
      }
    } finally {
      state.taking = false;
      if (state.rollDue) this.#seal(state);
    }
  }

  /** Every partition was taken away: drop what is not committed, stop renaming (step 6). */
  revokeAll(): void {
    this.#recovery.forgetScans();
    for (const state of this.#states.values()) {
      const retired = this.#retire(state);
      this.#retiring.add(retired);
      void retired.finally(() => this.#retiring.delete(retired));
    }
    this.#states.clear();
  }

  /**
   * Rolls every partition and waits until the files are in place and committed. A roll that
   * keeps failing is not waited out: it stays uncommitted and the next owner replays it.
   */
  async drain(): Promise<void> {
    await Promise.all(
      [...this.#states.values()].map(async (state) => {
        this.#seal(state);
        for (;;) {
          const done = await Promise.race([
            state.writing.then(() => true),
            sleep(250).then(() => false),
          ]);
          if (done) return;
          if (state.failure) {
            this.#log.error(
              { topic: state.topic, partition: state.partition, err: state.failure.message },
              'stopping with a roll that cannot be written; it stays uncommitted for a replay',
            );
            state.revoked.abort();
            await state.writing;
            return;
          }
        }
      }),
    );
  }

  /** Releases DuckDB and its spill directory; call after `drain` (or `revokeAll`). */
  async close(): Promise<void> {
    this.revokeAll();
    await Promise.all(this.#retiring);
    this.#metrics.writers.delete(this);
    this.#db.closeSync();
    await rm(this.#spillDir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------------------------ rolls

  async #slot(): Promise<Slot> {
    const conn = await this.#db.connect();
    const table = `lake_${(this.#tables += 1)}`;
    await conn.run(`CREATE TABLE ${table} (${TABLE_COLUMNS})`);
    return { conn, table, appender: await conn.createAppender(table), busy: null };
  }

  /** A new roll in a free table; while none is free, fails if writes are failing (step 5). */
  async #openRoll(state: PartitionState): Promise<Roll> {
    for (;;) {
      const slot = state.slots.find((s) => s.busy === null);
      if (slot) {
        const roll: Roll = {
          first: state.next,
          last: state.next - 1n,
          rows: 0,
          hours: new Map(),
          slot,
          timer: setTimeout(() => this.#rollAged(state, roll), this.#rollMs),
        };
        roll.timer.unref();
        state.roll = roll;
        return roll;
      }
      if (state.failure) throw new LakeWriteError(state.topic, state.partition, state.failure);
      if (state.revoked.signal.aborted) throw state.revoked.signal.reason;
      await Promise.race(state.slots.map((s) => s.busy).concat(sleep(250)));
    }
  }

  #rollAged(state: PartitionState, roll: Roll): void {
    if (state.roll !== roll) return;
    // A `take` in progress may be waiting with records of this roll in hand; it seals it.
    if (state.taking) state.rollDue = true;
    else this.#seal(state);
  }

  /** Closes the open roll and queues its write (steps 3-4). */
  #seal(state: PartitionState): void {
    state.rollDue = false;
    const roll = state.roll;
    if (!roll || state.revoked.signal.aborted) return;
    state.roll = null;
    clearTimeout(roll.timer);
    const { slot } = roll;
    if (roll.rows > 0) {
      // Closing the appender moves its last rows into the table.
      slot.appender?.closeSync();
      slot.appender = null;
    }
    const written = state.writing.then(() => this.#write(state, roll));
    state.writing = written;
    if (roll.rows > 0) {
      slot.busy = written
        .then(() => this.#reopen(state, slot))
        .finally(() => {
          slot.busy = null;
        });
    }
  }

  /** Empties a written table and opens a new appender on it; never rejects. */
  async #reopen(state: PartitionState, slot: Slot): Promise<void> {
    const signal = state.revoked.signal;
    try {
      await retry(
        async () => {
          await slot.conn.run(`DROP TABLE IF EXISTS ${slot.table}`);
          await slot.conn.run(`CREATE TABLE ${slot.table} (${TABLE_COLUMNS})`);
          slot.appender = await slot.conn.createAppender(slot.table);
        },
        {
          attempts: Number.POSITIVE_INFINITY,
          maxDelayMs: 5000,
          signal,
          retriable: () => !signal.aborted,
          onRetry: (err) => {
            state.failure = err as Error;
            this.#log.warn({ err: (err as Error).message }, 'lake table not reset; retrying');
          },
        },
      );
    } catch {
      // Revoked: the table is dropped when the partition retires.
    }
  }

  /** Writes one roll's files and commits its range; retried until done or revoked. */
  async #write(state: PartitionState, roll: Roll): Promise<void> {
    const { topic, partition } = state;
    const signal = state.revoked.signal;
    const name = fileName(topic, partition, roll.first, roll.last);
    const hours = [...roll.hours.keys()].sort((a, b) => a - b);
    try {
      await retry(
        async () => {
          for (const hour of hours) {
            await this.#files.write(roll.slot, state.topic, hour, name, {
              rows: roll.hours.get(hour) ?? 0,
              revoked: state.revoked.signal,
            });
          }
        },
        {
          attempts: Number.POSITIVE_INFINITY,
          initialDelayMs: 200,
          maxDelayMs: 5000,
          signal,
          retriable: () => !signal.aborted,
          onRetry: (err, attempt, delayMs) => {
            state.failure = err as Error;
            this.#metrics.failures.inc();
            this.#log.warn(
              { topic, partition, name, err: (err as Error).message, attempt, delayMs },
              'lake roll not written; retrying',
            );
          },
        },
      );
    } catch (err) {
      if (!signal.aborted) {
        // Not retriable: nothing after this roll may be committed either.
        this.#log.error({ topic, partition, name, err: (err as Error).message }, 'roll failed');
        state.failure = err as Error;
        state.revoked.abort(err);
      }
      return;
    }
    state.failure = null;
    state.pendingRows -= roll.rows;
    if (!signal.aborted) state.commit(String(roll.last + 1n));
  }

  /** Waits for what a revoked partition still writes, then frees its tables; never rejects. */
  async #retire(state: PartitionState): Promise<void> {
    state.revoked.abort(new Error(`${state.topic}/${state.partition} revoked`));
    if (state.roll) clearTimeout(state.roll.timer);
    state.roll = null;
    // Neither rejects: writes and resets end quietly once revoked.
    await state.writing;
    await Promise.all(state.slots.map((s) => s.busy));
    for (const slot of state.slots) {
      try {
        slot.appender?.closeSync();
        await slot.conn.run(`DROP TABLE IF EXISTS ${slot.table}`);
      } catch (err) {
        this.#log.warn({ err: (err as Error).message, table: slot.table }, 'table not dropped');
      }
      slot.appender = null;
      slot.conn.closeSync();
    }
  }
}
