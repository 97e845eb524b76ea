/**
 * How the consumer loop makes a chunk durable when some of its records cannot be, so that one
 * bad record (a Lua error, WRONGTYPE on its user's key, a value the sink refuses) never stalls
 * its partition while an outage still pauses it (nothing is given up because Redis is away).
 *
 * Steps for one chunk (`applyChunk`), by the class of each failure (`classifyError`):
 *   1. call the role's `handle` with the whole chunk; `retriable` failures are retried with the
 *      capped, jittered backoff for as long as it takes; `fatal` ones are thrown (the consumer
 *      stops); `permanent` ones give up at once, `resource` (Redis OOM) and `unknown` ones after
 *      `boundedAttempts` attempts;
 *   2. a role may throw {@link PartialChunkError}: the other records are done, and only those it
 *      names are tried again (the feature role applies one script per user, so the other users
 *      of the chunk are applied once and keep their trending counts and co-visits);
 *   3. what still fails is split in halves, each tried once (an outage that starts meanwhile is
 *      waited out as in step 1), and each failing half split again, down to single records;
 *   4. a single record gets `recordAttempts` attempts, then goes to the DLQ with the reason
 *      ({@link failureReason}) and the exact Kafka bytes, and the loop moves on.
 * Halves are taken in offset order and each record is done or dead-lettered before the next
 * half starts, so whenever `handle` returns for a part, every record up to that part's last
 * offset is done; a role that commits by itself (`deferred`) is called once more with no
 * records and the chunk's end, so its offsets pass the dead-lettered ones.
 *
 * @example
 *   await applyChunk({ handle, reject, policy, signal, deferred: false, onFailure }, records, end);
 */
import {
  classifyError,
  retry,
  type ErrorClass,
  type RetryOptions,
  RecsysError,
} from '../core/index.js';
import type { ChunkEnd, ConsumedRecord, RejectedRecord } from './records.js';

/**
 * Thrown by a role's `handle` when only some records failed: every other record of the call is
 * done, and must not be handed to it again.
 */
export class PartialChunkError extends Error {
  readonly failed: readonly ConsumedRecord<unknown>[];
  constructor(failed: readonly ConsumedRecord<unknown>[], cause: unknown) {
    super(`${failed.length} records failed: ${(cause as Error | null)?.message}`, { cause });
    this.failed = failed;
  }
}

export interface PoisonPolicy {
  /** Attempts a single record gets before it is dead-lettered. @default 3 */
  recordAttempts: number;
  /** Attempts of a chunk failing with OOM or an unknown error before it is split. @default 30 */
  boundedAttempts: number;
}

export interface ChunkRunner<T> {
  handle: (records: ConsumedRecord<T>[], end: ChunkEnd) => Promise<void>;
  /** Dead-letters records; resolves once they are durable (the caller retries it). */
  reject: (records: RejectedRecord[]) => Promise<void>;
  policy: PoisonPolicy;
  signal: AbortSignal;
  /** The role commits by itself: call it with the chunk's end after a split. */
  deferred: boolean;
  /** Every failed attempt (metrics, logs); `willRetry` false when the records go on to a split. */
  onFailure: (err: unknown, errorClass: ErrorClass, records: number, willRetry: boolean) => void;
  /** Before each wait between attempts (keep the group membership). */
  onWait: () => void;
}

/** Longest error text kept in a dead letter. */
const DETAIL_KEEP = 1000;

/** The DLQ reason for a record given up because of `err` (a small, fixed set of values). */
export function failureReason(err: unknown): string {
  if (err instanceof RecsysError) return err.code.slice('RECSYS_'.length).toLowerCase();
  const e = err as { name?: unknown; message?: unknown } | null;
  if (e?.name === 'ReplyError' && typeof e.message === 'string') {
    if (e.message.startsWith('OOM ')) return 'redis_oom';
    if (e.message.startsWith('WRONGTYPE ')) return 'redis_wrongtype';
    if (e.message.includes('user_script:')) return 'redis_script_error';
    return 'redis_error';
  }
  return 'handle_failed';
}

/** Delays between attempts of a chunk or a half, and of a single record. */
const CHUNK_DELAYS = { initialDelayMs: 100, maxDelayMs: 5000 };
const RECORD_DELAYS = { initialDelayMs: 10, maxDelayMs: 200 };

/** Makes `records` durable, dead-lettering the ones that cannot be; see the module comment. */
export async function applyChunk<T>(
  run: ChunkRunner<T>,
  records: ConsumedRecord<T>[],
  end: ChunkEnd,
): Promise<void> {
  const { policy } = run;
  /** Some call of the chunk succeeded for part of its records (a `PartialChunkError`). */
  let parted = false;
  // The whole chunk, and the final call with no records, end where the chunk ends.
  const endOf = (part: readonly ConsumedRecord<T>[]): ChunkEnd => {
    const last = part[part.length - 1];
    return part === records || !last ? end : { ...end, lastOffset: last.offset };
  };

  /** Tries `part` until done or the budget of its error class is spent; returns what failed. */
  const persist = async (
    part: ConsumedRecord<T>[],
    budget: (c: ErrorClass) => number,
    delays: Pick<RetryOptions, 'initialDelayMs' | 'maxDelayMs'>,
  ): Promise<{ failed: ConsumedRecord<T>[]; err: unknown } | null> => {
    let pending = part;
    let spent = 0;
    try {
      await retry(
        async () => {
          try {
            await run.handle(pending, endOf(pending));
          } catch (err) {
            if (!(err instanceof PartialChunkError)) throw err;
            pending = err.failed as ConsumedRecord<T>[];
            parted = true;
            throw err.cause;
          }
        },
        {
          ...delays,
          attempts: Number.POSITIVE_INFINITY,
          signal: run.signal,
          retriable: (err) => {
            const c = classifyError(err);
            const again = c === 'retriable' || (c !== 'fatal' && ++spent < budget(c));
            run.onFailure(err, c, pending.length, again);
            return again;
          },
          onRetry: () => run.onWait(),
        },
      );
      return null;
    } catch (err) {
      run.signal.throwIfAborted();
      if (classifyError(err) === 'fatal') throw err;
      return { failed: pending, err };
    }
  };

  const deadLetter = async (r: ConsumedRecord<T>, err: unknown): Promise<void> => {
    const detail = (err as Error | null)?.message ?? String(err);
    await run.reject([
      {
        topic: r.topic,
        partition: r.partition,
        offset: r.offset,
        key: r.key,
        value: r.raw ?? null,
        timestamp: r.timestamp,
        reason: failureReason(err),
        detail: detail.length > DETAIL_KEEP ? `${detail.slice(0, DETAIL_KEEP)}…` : detail,
        field: null,
        decoded: r.value,
      },
    ]);
  };

  /** Splits failing records down to single ones; see steps 3 and 4. */
  const isolate = async (part: ConsumedRecord<T>[], err: unknown): Promise<void> => {
    if (part.length === 1) {
      const left = await persist(part, () => policy.recordAttempts, RECORD_DELAYS);
      if (left) await deadLetter(part[0] as ConsumedRecord<T>, left.err);
      return;
    }
    const mid = Math.ceil(part.length / 2);
    for (const half of [part.slice(0, mid), part.slice(mid)]) {
      // A single record gets its own attempts at once.
      const left =
        half.length === 1 ? { failed: half, err } : await persist(half, () => 1, CHUNK_DELAYS);
      if (left) await isolate(left.failed, left.err ?? err);
    }
  };

  const left = await persist(
    records,
    (c) => (c === 'permanent' ? 1 : policy.boundedAttempts),
    CHUNK_DELAYS,
  );
  if (left) await isolate(left.failed, left.err);
  // The parts ended before the chunk's end (trailing records dead-lettered, or a partial
  // success ahead of them): a deferred role learns where the chunk ends.
  if (run.deferred && (left || parted)) {
    const done = await persist([], () => 1, CHUNK_DELAYS);
    if (done) throw done.err;
  }
}
