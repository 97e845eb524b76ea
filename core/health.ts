/**
 * Readiness as every process reports it: each dependency has a named check, all run in
 * parallel, each bounded by a timeout, and the report names what failed and why. A check named
 * `optional` does not make the process unready when it fails: the process still does its job
 * without it (serving without the served-log Kafka producer), and the report lists it as
 * `degraded`.
 */
import { withTimeout } from './retry.js';

export type HealthCheck = () => Promise<void> | void;

export interface HealthReport {
  ok: boolean;
  checks: Record<string, { ok: boolean; ms: number; error?: string }>;
  /** Optional checks that failed: the process is ready, with less than its full function. */
  degraded?: string[];
}

export async function checkHealth(
  checks: Record<string, HealthCheck>,
  timeoutMs: number,
  optional: readonly string[] = [],
): Promise<HealthReport> {
  const entries = await Promise.all(
    Object.entries(checks).map(async ([name, check]) => {
      const t0 = performance.now();
      try {
        await withTimeout(
          Promise.resolve().then(check),
          timeoutMs,
          () => new Error(`${name}: no answer within ${timeoutMs} ms`),
        );
        return [name, { ok: true, ms: Math.round(performance.now() - t0) }] as const;
      } catch (err) {
        return [
          name,
          { ok: false, ms: Math.round(performance.now() - t0), error: (err as Error).message },
        ] as const;
      }
    }),
  );
  const failed = entries.filter(([, r]) => !r.ok).map(([name]) => name);
  const degraded = failed.filter((name) => optional.includes(name));
  return {
    ok: failed.length === degraded.length,
    checks: Object.fromEntries(entries),
    ...(degraded.length > 0 ? { degraded } : {}),
  };
}
