/**
 * Offsets of a consumer whose role commits later than its `handle` resolves (`DeferredCommit`
 * in `consumer.ts`). `assignment` changes whenever partitions may have been revoked; `started`
 * holds the partitions handed to the role's `assigned` since; `released` what the role made
 * durable and has not been committed yet. A commit that fails is tried again with the next
 * release or after `commitIntervalMs`.
 *
 * An assignment starts where the group committed, whatever the batch in hand says: the role
 * starts over from its start (the lake removes its files past it), so a start past the committed
 * offset (a batch fetched for an earlier assignment, still in flight when the group rebalanced)
 * would leave the records between uncommitted and never written, and a start before it would
 * remove committed files a later owner does not write again. `committed` reads the group's offset; a first batch that does
 * not begin there is dropped and the partition sought to it (once per assignment: a committed
 * offset the log no longer holds starts where kafkajs reset to).
 *
 * kafkajs sends a commit made outside its run loop to the group coordinator it found when it
 * joined, and after that broker restarts it keeps asking the same broker, which answers "not the
 * correct coordinator" until the group is joined again. So a commit that fails with a coordinator
 * error, or `rejoinAfterFailures` times in a row for any reason, calls `rejoin`: the consumer
 * leaves and joins again (finding the current coordinator), and the role starts over from the
 * committed offsets, as after a rebalance.
 */
import type { Admin, Batch, Consumer, Kafka, TopicPartitionOffsetAndMetadata } from 'kafkajs';
import type { Logger } from '../core/index.js';

export interface DeferredCommit {
  /** Every partition may have moved (rebalance, consumer restart, stop): stop writing them. */
  revoked(): void;
  /**
   * `partition`'s first chunk of this assignment follows; consumption restarts at `offset` (the
   * committed offset, or where a new group starts). `commit(next)` commits `next` (one past the
   * last durable record) while this assignment lasts and is a no-op after. Retried like `handle`.
   */
  assigned(
    topic: string,
    partition: number,
    offset: string,
    commit: (next: string) => void,
  ): Promise<void>;
  /** Called by `stop()` after the last `handle`: make durable and `commit` what was taken. */
  drain(): Promise<void>;
}

/** Errors that mean the group's coordinator moved or is not there (kafkajs error types). */
const COORDINATOR_ERRORS = new Set(['NOT_COORDINATOR_FOR_GROUP', 'COORDINATOR_NOT_AVAILABLE']);

/** The kafkajs protocol error type of `err` or of its cause (after kafkajs' own retries). */
export function kafkaErrorType(err: unknown): string | undefined {
  for (let e = err as { type?: unknown; cause?: unknown } | undefined; e;) {
    if (typeof e.type === 'string') return e.type;
    e = e.cause as typeof e;
  }
  return undefined;
}

export class DeferredOffsets {
  /** Bumped on every possible revocation: work of an older assignment is dropped. */
  assignment = 0;
  /** The running kafkajs consumer (set once it exists). */
  consumer: Consumer | null = null;
  readonly #deferred: DeferredCommit;
  readonly #log: Logger;
  readonly #started = new Set<string>();
  readonly #released = new Map<string, TopicPartitionOffsetAndMetadata>();
  readonly #timer: NodeJS.Timeout;
  readonly #rejoin: () => void;
  readonly #committed: (topic: string, partition: number) => Promise<string | null>;
  readonly #rejoinAfterFailures: number;
  /** Partitions sought to their committed offset in this assignment. */
  readonly #sought = new Set<string>();
  #failures = 0;
  #committing = Promise.resolve();

  /**
   * @param group `committed` reads the group's committed offset of a partition (null: none yet);
   *   `rejoin` leaves the group and joins again (see the module comment)
   * @param rejoinAfterFailures failed commits in a row that call `rejoin` whatever the error
   */
  constructor(
    deferred: DeferredCommit,
    log: Logger,
    commitIntervalMs: number,
    group: {
      committed: (topic: string, partition: number) => Promise<string | null>;
      rejoin: () => void;
    },
    rejoinAfterFailures = 3,
  ) {
    this.#deferred = deferred;
    this.#log = log;
    this.#rejoin = group.rejoin;
    this.#committed = group.committed;
    this.#rejoinAfterFailures = rejoinAfterFailures;
    this.#timer = setInterval(() => void this.commitReleased(), commitIntervalMs);
    this.#timer.unref();
  }

  /** Partitions may have moved (rebalance, crash, stop): forget them and tell the role. */
  revoke(): void {
    this.assignment += 1;
    this.#started.clear();
    this.#sought.clear();
    this.#released.clear();
    this.#deferred.revoked();
  }

  /**
   * Hands a partition to the role's `assigned` before its first chunk (through `durably`, which
   * retries it); false if it was revoked meanwhile.
   */
  async assign(
    batch: Batch,
    durably: (what: string, fn: () => Promise<void>) => Promise<void>,
  ): Promise<boolean> {
    const { topic, partition } = batch;
    const key = `${topic}|${partition}`;
    if (this.#started.has(key)) return true;
    const at = this.assignment;
    const commit = (next: string): void => {
      if (at !== this.assignment) return;
      this.#released.set(key, { topic, partition, offset: next });
      void this.commitReleased();
    };
    // A Batch keeps the offset it was fetched from, though kafkajs' types do not declare it.
    const from = (batch as unknown as { fetchedOffset: string }).fetchedOffset;
    let seek: string | null = null;
    await durably('assignment', async () => {
      const committed = await this.#committed(topic, partition);
      if (committed !== null && committed !== from && !this.#sought.has(key)) {
        seek = committed;
        return;
      }
      await this.#deferred.assigned(topic, partition, from, commit);
    });
    if (at !== this.assignment) return false;
    if (seek !== null) {
      this.#sought.add(key);
      this.#log.warn(
        { topic, partition, fetched: from, committed: seek },
        'first batch of an assignment is not at the committed offset; seeking there',
      );
      this.consumer?.seek({ topic, partition, offset: seek });
      return false;
    }
    this.#started.add(key);
    return true;
  }

  /** Commits what was released; what fails is put back unless the partitions moved since. */
  commitReleased(): Promise<void> {
    this.#committing = this.#committing.then(async () => {
      const at = this.assignment;
      const offsets = [...this.#released.values()];
      this.#released.clear();
      if (offsets.length === 0 || !this.consumer) return;
      try {
        await this.consumer.commitOffsets(offsets);
        this.#failures = 0;
      } catch (err) {
        this.#failures += 1;
        const type = kafkaErrorType(err);
        this.#log.warn(
          { err: (err as Error).message, type, failures: this.#failures },
          'commit failed; retrying',
        );
        for (const o of offsets) {
          const key = `${o.topic}|${o.partition}`;
          if (at === this.assignment && !this.#released.has(key)) this.#released.set(key, o);
        }
        const coordinatorMoved = type !== undefined && COORDINATOR_ERRORS.has(type);
        if (coordinatorMoved || this.#failures >= this.#rejoinAfterFailures) {
          this.#failures = 0;
          this.#rejoin();
        }
      }
    });
    return this.#committing;
  }

  /** Commits what is left and stops the retry timer. */
  async close(): Promise<void> {
    await this.commitReleased();
    clearInterval(this.#timer);
  }
}

/**
 * The group's committed offset of a partition (null: none yet), through one admin client
 * connected on first use.
 */
export function committedReader(kafka: Kafka, groupId: string) {
  let admin: Promise<Admin> | null = null;
  return {
    async read(topic: string, partition: number): Promise<string | null> {
      admin ??= (async () => {
        const a = kafka.admin();
        await a.connect();
        return a;
      })();
      admin.catch(() => (admin = null));
      const [offsets] = await (await admin).fetchOffsets({ groupId, topics: [topic] });
      const offset = offsets?.partitions.find((p) => p.partition === partition)?.offset ?? '-1';
      return Number(offset) >= 0 ? offset : null;
    },
    close: (): Promise<void> =>
      admin ? admin.then((a) => a.disconnect()).catch(() => undefined) : Promise.resolve(),
  };
}
