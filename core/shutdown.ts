/**
 * The graceful stop every long-running process shares (stream roles, the serving primary and its
 * workers, `batch --serve/--schedule`): on SIGTERM or SIGINT, run the process's stop steps in
 * order within one overall deadline (`RECSYS_SHUTDOWN_TIMEOUT_MS`), log each, then exit with a
 * code that says how it went:
 *
 * | code | meaning |
 * | ---: | --- |
 * | 0 | every step finished: work in hand is done, durable and acknowledged |
 * | 1 | a step failed (logged); later steps still ran |
 * | 124 | the deadline passed, or a step gave work back unfinished: what was not done is left to be redelivered or rerun (never acknowledged) |
 *
 * Each step gets the budget: the time left and a signal that aborts when the deadline passes,
 * so it can bound its own waits (flush to Kafka within the time left) and give up cleanly.
 * A second signal while stopping is only logged: a terminal's Ctrl-C reaches a whole process
 * group, and a cluster primary passes the signal on as well.
 *
 * @example
 *   onShutdown({ log, timeoutMs: config.shutdownTimeoutMs, steps: [
 *     { name: 'http', run: () => server.close() },
 *     { name: 'roles', run: (budget) => Promise.all(roles.map((r) => r.stop(budget))) },
 *   ] });
 */
import type { Logger } from './log.js';

export const EXIT_CLEAN = 0;
export const EXIT_FAILED = 1;
export const EXIT_DEADLINE = 124;

/** What a stop step may spend. */
export interface ShutdownBudget {
  /** Aborts when the overall deadline passes. */
  signal: AbortSignal;
  /** Milliseconds left until the deadline (0 once passed). */
  remainingMs(): number;
}

/** A step's way to say it handed work back unfinished (exit 124) without failing. */
export const ABANDONED = 'abandoned';

export interface ShutdownStep {
  name: string;
  run(budget: ShutdownBudget): unknown;
}

export interface ShutdownOptions {
  log: Logger;
  timeoutMs: number;
  /** The steps, in order; a function when they are known only once the process runs. */
  steps: readonly ShutdownStep[] | (() => readonly ShutdownStep[]);
  /** @default ['SIGTERM', 'SIGINT'] */
  signals?: readonly NodeJS.Signals[];
  /** @default process.exit */
  exit?: (code: number) => void;
}

export interface Shutdown {
  /** Starts stopping (once; later calls return the same outcome). Resolves with the exit code. */
  stop(reason: string): Promise<number>;
  readonly stopping: boolean;
}

/** Installs the signal handlers; see the module comment. */
export function onShutdown(options: ShutdownOptions): Shutdown {
  const { log, timeoutMs } = options;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let started: Promise<number> | null = null;

  const run = async (reason: string): Promise<number> => {
    const t0 = performance.now();
    const elapsed = (): number => Math.round(performance.now() - t0);
    const deadline = new AbortController();
    const budget: ShutdownBudget = {
      signal: deadline.signal,
      // 0 once the deadline fired, also when its timer fired a fraction of a millisecond early.
      remainingMs: () =>
        deadline.signal.aborted ? 0 : Math.max(0, timeoutMs - (performance.now() - t0)),
    };
    const steps = typeof options.steps === 'function' ? options.steps() : options.steps;
    log.info({ reason, timeoutMs, steps: steps.map((s) => s.name) }, 'stopping');
    let code = EXIT_CLEAN;
    let current = '';
    const all = (async () => {
      for (const step of steps) {
        if (deadline.signal.aborted) return;
        current = step.name;
        const s0 = performance.now();
        try {
          const outcome = await step.run(budget);
          if (outcome === ABANDONED && code === EXIT_CLEAN) code = EXIT_DEADLINE;
          log.info(
            { step: step.name, ms: Math.round(performance.now() - s0), outcome },
            'stop step done',
          );
        } catch (err) {
          if (deadline.signal.aborted) return;
          code = EXIT_FAILED;
          log.error({ step: step.name, err: (err as Error).message }, 'stop step failed');
        }
      }
      current = '';
    })();
    let timer: NodeJS.Timeout | undefined;
    const outOfTime = new Promise<'deadline'>((resolve) => {
      timer = setTimeout(() => resolve('deadline'), timeoutMs);
    });
    const outcome = await Promise.race([all.then(() => 'done' as const), outOfTime]);
    clearTimeout(timer);
    if (outcome === 'deadline') {
      // Listeners run now, synchronously: steps kill what they started before the exit.
      deadline.abort(new Error(`shutdown deadline of ${timeoutMs} ms passed`));
      code = EXIT_DEADLINE;
      log.error({ step: current, timeoutMs }, 'stop deadline passed; exiting with work unfinished');
    }
    log.info({ code, ms: elapsed() }, code === EXIT_CLEAN ? 'stopped cleanly' : 'stopped');
    exit(code);
    return code;
  };

  const stop = (reason: string): Promise<number> => (started ??= run(reason));
  for (const signal of options.signals ?? (['SIGTERM', 'SIGINT'] as const)) {
    process.on(signal, () => {
      if (started) {
        log.warn({ signal }, 'already stopping');
        return;
      }
      void stop(signal);
    });
  }
  return {
    stop,
    get stopping() {
      return started !== null;
    },
  };
}
