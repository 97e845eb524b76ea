/**
 * Open-loop HTTP load for bench:serve, run as a child so its CPU is not the measuring
 * process's: requests are scheduled at a fixed rate and latency is measured from the
 * scheduled time (so a slow server shows as latency, not as a lower offered rate:
 * no coordinated omission).
 *
 * Input: env BENCH_LOAD_FILE, a JSON file holding a LoadSpec (tokens make it too large for an
 * environment variable). Output: one JSON line on stdout.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';

export interface LoadSpec {
  host: string;
  port: number;
  /** Paths and their bearer tokens, used round-robin. */
  targets: { path: string; token: string }[];
  rate: number;
  durationMs: number;
  connections: number;
}

const spec = JSON.parse(readFileSync(process.env.BENCH_LOAD_FILE ?? '', 'utf8')) as LoadSpec;
const agent = new http.Agent({ keepAlive: true, maxSockets: spec.connections });
const latencies: number[] = [];
const statuses: Record<string, number> = {};
let sent = 0;
let done = 0;

function one(scheduledAt: number): void {
  const t = spec.targets[sent % spec.targets.length] as LoadSpec['targets'][number];
  sent++;
  const req = http.request(
    {
      host: spec.host,
      port: spec.port,
      path: t.path,
      agent,
      headers: { authorization: `Bearer ${t.token}` },
    },
    (res) => {
      res.resume();
      res.on('end', () => {
        latencies.push(performance.now() - scheduledAt);
        statuses[res.statusCode ?? 0] = (statuses[res.statusCode ?? 0] ?? 0) + 1;
        done++;
      });
    },
  );
  req.on('error', () => {
    statuses.error = (statuses.error ?? 0) + 1;
    done++;
  });
  req.end();
}

const t0 = performance.now();
await new Promise<void>((resolve) => {
  let issued = 0;
  const tick = (): void => {
    const elapsed = performance.now() - t0;
    if (elapsed >= spec.durationMs) return resolve();
    const due = Math.floor((elapsed * spec.rate) / 1000);
    while (issued < due) {
      one(t0 + (issued * 1000) / spec.rate);
      issued++;
    }
    setTimeout(tick, 1);
  };
  tick();
});
const sendMs = performance.now() - t0;
const deadline = performance.now() + 10_000;
while (done < sent && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
agent.destroy();
const s = Array.from(Float64Array.from(latencies).sort());
const at = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN;
process.stdout.write(
  JSON.stringify({
    sent,
    completed: latencies.length,
    statuses,
    achievedPerSec: Math.round((latencies.length * 1000) / sendMs),
    latencyMs: { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.length - 1] ?? NaN },
  }) + '\n',
);
