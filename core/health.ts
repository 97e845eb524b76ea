/**
 * Readiness as every process reports it: each dependency has a named check, all run in
 * parallel, each bounded by a timeout, and the report names what failed and why.
 */
import { withTimeout } from './retry.js';

export type HealthCheck = () => Promise<void> | void;

export interface HealthReport {
  ok: boolean;
  checks: Record<string, { ok: boolean; ms: number; error?: string }>;
}

export async function checkHealth(
  checks: Record<string, HealthCheck>,
  timeoutMs: number,
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
  return { ok: entries.every(([, r]) => r.ok), checks: Object.fromEntries(entries) };
}
