/**
 * The load scenarios the k6 scripts run (`deploy/k6/scenarios.json`: rates, durations,
 * thresholds), read by the project's own benchmarks so both judge against the same targets.
 * Checked on load: a missing or non-numeric field fails with its path.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Scenarios {
  feed: {
    rates: number[];
    k6Rate: number;
    durationMs: number;
    warmupMs: number;
    users: number;
    targets: { p99Ms: number; atRate: number; peakPerSec: number; maxErrorRate: number };
  };
  live: {
    subscribers: number;
    eventRate: number;
    durationMs: number;
    targets: { pushP99Ms: number; eventToFrameP99Ms: number };
  };
  ingest: { rate: number; batchEvents: number; durationMs: number; targets: { p99Ms: number } };
  memory: { sockets: number; targets: { rssMiBAt10kSockets: number } };
}

/** The paths every scenario must carry as numbers (arrays: each element). */
const NUMBERS = [
  'feed.rates',
  'feed.k6Rate',
  'feed.durationMs',
  'feed.warmupMs',
  'feed.users',
  'feed.targets.p99Ms',
  'feed.targets.atRate',
  'feed.targets.peakPerSec',
  'feed.targets.maxErrorRate',
  'live.subscribers',
  'live.eventRate',
  'live.durationMs',
  'live.targets.pushP99Ms',
  'live.targets.eventToFrameP99Ms',
  'ingest.rate',
  'ingest.batchEvents',
  'ingest.durationMs',
  'ingest.targets.p99Ms',
  'memory.sockets',
  'memory.targets.rssMiBAt10kSockets',
];

export function loadScenarios(root: string): Scenarios {
  const file = join(root, 'deploy', 'k6', 'scenarios.json');
  const doc = JSON.parse(readFileSync(file, 'utf8')) as unknown;
  for (const path of NUMBERS) {
    const value = path
      .split('.')
      .reduce<unknown>((v, key) => (v as Record<string, unknown> | undefined)?.[key], doc);
    const values = Array.isArray(value) ? value : [value];
    if (values.length === 0 || !values.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      throw new Error(`${file}: ${path} must be a number (or a list of numbers)`);
    }
  }
  return doc as Scenarios;
}
