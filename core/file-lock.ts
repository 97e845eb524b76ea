/**
 * An exclusive lock between processes on one machine: a lock file created with O_EXCL (`wx`)
 * holding the owner's pid, removed when the work is done. A lock older than `staleMs` belonged
 * to a process that died holding it and is taken over; waiting longer than `timeoutMs` fails.
 *
 * @example
 *   await withFileLock(`${file}.lock`, () => rewrite(file), { staleMs: 10_000, timeoutMs: 30_000 });
 */
import { rm, stat, writeFile } from 'node:fs/promises';
import { sleep } from './retry.js';

export interface FileLockOptions {
  /** Age after which a lock is considered abandoned and removed, ms. */
  staleMs: number;
  /** How long to wait for the lock, ms. */
  timeoutMs: number;
  /** Called before an abandoned lock is removed. */
  onStale?: (ageMs: number) => void;
  /** The error thrown after `timeoutMs`. @default an Error naming the lock */
  timeoutError?: () => Error;
}

export async function withFileLock<T>(
  lock: string,
  fn: () => Promise<T>,
  options: FileLockOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    try {
      await writeFile(lock, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > options.staleMs) {
        options.onStale?.(age);
        await rm(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw (
          options.timeoutError?.() ??
          new Error(`could not take ${lock} within ${options.timeoutMs / 1000} s`)
        );
      }
      await sleep(10 + Math.random() * 30);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { force: true });
  }
}
