/**
 * Offsets of a consumer whose role commits later than its `handle` resolves (`DeferredCommit`
 * in `consumer.ts`). `assignment` changes whenever partitions may have been revoked; `started`
 * holds the partitions handed to the role's `assigned` since; `released` what the role made
 * durable and has not been committed yet. A commit that fails is tried again with the next
 * release or after `commitIntervalMs`.
 */
import type { Batch, Consumer, TopicPartitionOffsetAndMetadata } from 'kafkajs';
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
  #committing = Promise.resolve();

  constructor(deferred: DeferredCommit, log: Logger, commitIntervalMs: number) {
    this.#deferred = deferred;
    this.#log = log;
    this.#timer = setInterval(() => void this.commitReleased(), commitIntervalMs);
    this.#timer.unref();
  }

  /** Partitions may have moved (rebalance, crash, stop): forget them and tell the role. */
  revoke(): void {
    this.assignment += 1;
    this.#started.clear();
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
    // A Batch keeps the offset it was fetched from (on an assignment's first fetch, the
    // committed one), though kafkajs' types do not declare it.
    const from = (batch as unknown as { fetchedOffset: string }).fetchedOffset;
    await durably('assignment', () => this.#deferred.assigned(topic, partition, from, commit));
    if (at !== this.assignment) return false;
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
      } catch (err) {
        this.#log.warn({ err: (err as Error).message }, 'commit failed; retrying');
        for (const o of offsets) {
          const key = `${o.topic}|${o.partition}`;
          if (at === this.assignment && !this.#released.has(key)) this.#released.set(key, o);
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
