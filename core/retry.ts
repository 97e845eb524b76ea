import { isRetriable } from './errors.js';
import type { Logger } from './log.js';

export interface RetryOptions {
  /** Attempts in all, the first included. @default 5 */
  attempts?: number;
  /** Delay before the second attempt. @default 100 */
  initialDelayMs?: number;
  /** Upper bound of any single delay. @default 5000 */
  maxDelayMs?: number;
  /** Growth of the delay per attempt. @default 2 */
  factor?: number;
  /** Aborts the wait between attempts and the loop. */
  signal?: AbortSignal;
  /** Called before each wait, e.g. to log. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Decides whether an error is worth another attempt. @default isRetriable */
  retriable?: (err: unknown) => boolean;
}

/**
 * The one retry loop of the project: capped exponential backoff with full jitter
 * (delay drawn uniformly from [0, min(max, initial * factor^n)]), so that many clients
 * recovering at once do not retry in lockstep. Non-retriable errors are thrown at once.
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const attempts = options.attempts ?? 5;
  const initial = options.initialDelayMs ?? 100;
  const max = options.maxDelayMs ?? 5000;
  const factor = options.factor ?? 2;
  const retriable = options.retriable ?? isRetriable;
  for (let attempt = 1; ; attempt++) {
    options.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || !retriable(err)) throw err;
      const ceiling = Math.min(max, initial * factor ** (attempt - 1));
      const delayMs = Math.round(Math.random() * ceiling);
      options.onRetry?.(err, attempt, delayMs);
      await sleep(delayMs, options.signal);
    }
  }
}

/**
 * `retry` options for a one-shot tool's first contact with the backbone (the catalog CLI, the
 * benchmarks' producers and admin clients), so a broker or Redis still starting, or failing
 * over, for some seconds does not fail the command: 10 attempts, 250 ms doubling to 5 s (at most
 * about 30 s of waiting), each failure logged as `<what> failed; retrying`. Long-running roles
 * retry for ever instead (`retryForever`).
 */
export function startupRetry(what: string, log: Pick<Logger, 'warn'>): RetryOptions {
  return {
    attempts: 10,
    initialDelayMs: 250,
    maxDelayMs: 5000,
    onRetry: (err, attempt, delayMs) =>
      log.warn({ err: (err as Error).message, attempt, delayMs }, `${what} failed; retrying`),
  };
}

/** Resolves after `ms`, or rejects with the signal's reason when aborted. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Rejects with `onTimeout()` when `promise` has not settled within `ms`. */
export async function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * An abort signal that fires with `onTimeout()` after `ms`, or with `parent`'s reason when that
 * aborts first. `clear()` once done, so the timer does not keep the process alive.
 */
export function deadlineSignal(
  ms: number,
  onTimeout: () => Error,
  parent?: AbortSignal,
): { signal: AbortSignal; clear(): void } {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(onTimeout()), ms);
  const onParent = (): void => controller.abort(parent?.reason);
  if (parent?.aborted) onParent();
  else parent?.addEventListener('abort', onParent, { once: true });
  return {
    signal: controller.signal,
    clear() {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onParent);
    },
  };
}

/** Settles like `promise`, or rejects with the signal's reason when it aborts first; leaves no listener behind. */
export async function untilAborted<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  signal.throwIfAborted();
  let onAbort: (() => void) | undefined;
  const abort = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, abort]);
  } finally {
    signal.removeEventListener('abort', onAbort as () => void);
  }
}
