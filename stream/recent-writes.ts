/**
 * Keeps one bridge from writing an event to Kafka twice when its sender sends it again: an HTTP
 * client retrying after a 503 whose write still landed (Kafka had the request when the deadline
 * passed), an MQTT client re-delivering a QoS 1 message it saw no PUBACK for, a batch holding
 * the same event twice. Events are keyed by userId and eventId. A copy of an event that is on
 * its way waits for that write's outcome instead of queueing a second write (and is written
 * after all if the first is not); a copy of one of the last `capacity` events Kafka acknowledged
 * is acknowledged without writing. Beyond that window, or sent to another bridge, a copy can
 * still reach Kafka: the consumers' eventId window then applies it once.
 *
 * @example
 *   const recent = new RecentWrites(100_000);
 *   const copies = await recent.write(keys, (fresh, onOutcome) => batcher.sendAll(pick(fresh), { onOutcome }));
 */
import { untilAborted } from '../core/index.js';

/** Sends the messages at `indexes` (of the caller's list), reporting each one's fate by its position in `indexes`. */
export type WriteFn = (
  indexes: readonly number[],
  onOutcome: (position: number, written: boolean) => void,
) => Promise<void>;

/** The key of an event: userId and eventId (neither holds a NUL). */
export function eventKey(userId: string, eventId: string): string {
  return `${userId}\u0000${eventId}`;
}

export class RecentWrites {
  readonly #capacity: number;
  /** Events on their way to Kafka, with the promise of their fate. */
  readonly #pending = new Map<string, Promise<boolean>>();
  /** Events Kafka acknowledged, oldest first (a Set keeps insertion order). */
  readonly #written = new Set<string>();

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** Events remembered as written. */
  get size(): number {
    return this.#written.size;
  }

  /**
   * Writes the events of `keys` that are neither written nor on their way, waits for those on
   * their way, and resolves once Kafka has every one; rejects like `write` does (nothing
   * remembered for what was not written). Resolves the number of copies not written again.
   */
  async write(keys: readonly string[], write: WriteFn, signal?: AbortSignal): Promise<number> {
    let todo: readonly number[] = keys.map((_, i) => i);
    let copies = 0;
    for (let round = 0; todo.length > 0; round++) {
      const fresh: number[] = [];
      const settle: Array<((written: boolean) => void) | undefined> = [];
      const waits: Array<Promise<boolean>> = [];
      const waiting: number[] = [];
      for (const i of todo) {
        const key = keys[i] as string;
        if (this.#written.has(key)) {
          if (round === 0) copies++;
          continue;
        }
        const pending = this.#pending.get(key);
        if (pending) {
          if (round === 0) copies++;
          waits.push(pending);
          waiting.push(i);
          continue;
        }
        fresh.push(i);
        this.#pending.set(key, new Promise<boolean>((resolve) => settle.push(resolve)));
      }
      const onOutcome = (position: number, written: boolean): void => {
        const told = settle[position];
        if (!told) return;
        settle[position] = undefined;
        const key = keys[fresh[position] as number] as string;
        this.#pending.delete(key);
        if (written) this.#remember(key);
        told(written);
      };
      const [, fates] = await Promise.all([
        fresh.length > 0 ? startWrite(write, fresh, onOutcome) : undefined,
        waits.length > 0 ? untilAborted(Promise.all(waits), signal) : [],
      ]);
      // Copies whose first write failed (its sender gave up before Kafka took it) go again.
      todo = waiting.filter((_, j) => !fates[j]);
    }
    return copies;
  }

  #remember(key: string): void {
    this.#written.add(key);
    if (this.#written.size > this.#capacity) {
      const oldest = this.#written.values().next().value as string;
      this.#written.delete(oldest);
    }
  }
}

/** Calls `write`; one that throws before sending anything wrote none of its messages. */
function startWrite(
  write: WriteFn,
  fresh: readonly number[],
  onOutcome: (position: number, written: boolean) => void,
): Promise<void> {
  try {
    return write(fresh, onOutcome);
  } catch (err) {
    fresh.forEach((_, position) => onOutcome(position, false));
    throw err;
  }
}
