/**
 * The replay's report: one JSON document (`bench/results/replay-<dataset>-<time>.json`) and its
 * markdown summary beside it (`.md`, also printed).
 *
 * @example
 *   const md = markdownReport(report);
 *   await writeReport('bench/results', report); // { json: '...json', markdown: '...md' }
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NTH_BUCKETS, type SystemReport } from './metrics.js';

export interface ReplayReport {
  dataset: string;
  file: string;
  startedAt: string;
  finishedAt: string;
  options: Record<string, unknown>;
  /** Readiness checks of the server that failed when the replay started (none: ready). */
  servingNotReady: Record<string, unknown>;
  log: {
    events: number;
    skippedRows: number;
    users: number;
    items: number;
    catalogSize: number;
    catalogSource: string;
    types: Record<string, number>;
  };
  plan: {
    history: number;
    replayPlanned: number;
    replayed: number;
    skippedAtDeadline: number;
    unused: number;
    usersInHistory: number;
    usersReplayed: number;
    timeScale: number;
  };
  /** Served feed first, then the baselines. */
  systems: Record<string, SystemReport>;
  served: {
    latencyMs: Record<string, number>;
    serverLatencyMs: Record<string, number>;
    freshnessMs: Record<string, number>;
    modelVersions: Record<string, number>;
    feedErrors: number;
    applyTimeouts: number;
  };
  stepsMs: Record<string, number>;
  /** Per system, the rank of each replayed event's item (null: not shown), in `eventIds` order. */
  ranks: Record<string, (number | null)[]>;
  eventIds: string[];
}

const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : '-');
const pct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '-');
const ms = (x: number | undefined): string =>
  x === undefined || !Number.isFinite(x) ? '-' : `${x.toFixed(1)} ms`;

export function markdownReport(r: ReplayReport): string {
  const k = Number(r.options.k);
  const rows = Object.entries(r.systems);
  const out: string[] = [];
  out.push(`## Replay of ${r.dataset} (${r.startedAt})`, '');
  out.push(
    `${r.log.events.toLocaleString('en')} events, ${r.log.users.toLocaleString('en')} users, ` +
      `${r.log.items.toLocaleString('en')} items (catalog ${r.log.catalogSize.toLocaleString('en')}, ${r.log.catalogSource}). ` +
      `History ${r.plan.history.toLocaleString('en')} events; replayed ${r.plan.replayed.toLocaleString('en')} ` +
      `of ${r.plan.replayPlanned.toLocaleString('en')} (${r.plan.usersReplayed} users, ` +
      `${r.systems.served?.cold.events ?? 0} events of users without history). ` +
      `Events published over ${String(r.options.via)}, K = ${k}.`,
    '',
  );
  out.push(
    `| system | HR@${k} | MRR@${k} | NDCG@${k} | coverage | consumed slots | HR cold | HR warm |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const [name, s] of rows) {
    out.push(
      `| ${name} | ${f3(s.hr)} | ${f3(s.mrr)} | ${f3(s.ndcg)} | ${pct(s.coverage)} | ` +
        `${pct(s.consumedShare)} | ${f3(s.cold.hr)} (${s.cold.events}) | ${f3(s.warm.hr)} (${s.warm.events}) |`,
    );
  }
  out.push('', `HR@${k} by the user's Nth replayed event:`, '');
  out.push(
    `| system | ${NTH_BUCKETS.map((b) => `${b.label} (${r.systems.served?.byNth[b.label]?.events ?? 0})`).join(' | ')} |`,
    `| --- | ${NTH_BUCKETS.map(() => '---:').join(' | ')} |`,
  );
  for (const [name, s] of rows) {
    out.push(
      `| ${name} | ${NTH_BUCKETS.map((b) => f3(s.byNth[b.label]?.hr ?? NaN)).join(' | ')} |`,
    );
  }
  const served = r.systems.served;
  const slots = served?.slotsBySource ?? {};
  const hits = served?.hitsBySource ?? {};
  const bySource = [...new Set([...Object.keys(hits), ...Object.keys(slots)])]
    .map((s): [string, number] => [s, hits[s] ?? 0])
    .sort((a, b) => b[1] - a[1])
    .map(([s, n]) => {
      const m = slots[s] ?? 0;
      return m ? `${s} ${n} in ${m} slots (${((100 * n) / m).toFixed(2)}%)` : `${s} ${n}`;
    })
    .join(', ');
  const s = r.served;
  out.push(
    '',
    `Served hits by source: ${bySource || 'none'}.`,
    `Feed latency (client round trip) p50 ${ms(s.latencyMs.p50)}, p99 ${ms(s.latencyMs.p99)}; ` +
      `server's own p50 ${ms(s.serverLatencyMs.p50)}, p99 ${ms(s.serverLatencyMs.p99)}. ` +
      `Freshness (publish -> features applied) p50 ${ms(s.freshnessMs.p50)}, p99 ${ms(s.freshnessMs.p99)}.`,
    `Feed errors ${s.feedErrors}, events not applied in time ${s.applyTimeouts}; ` +
      `model versions served: ${Object.keys(s.modelVersions).join(', ') || 'none'}.`,
    `Steps: ${Object.entries(r.stepsMs)
      .map(([name, t]) => `${name} ${(t / 1000).toFixed(1)} s`)
      .join(', ')}.`,
    '',
  );
  return out.join('\n');
}

/** Writes `replay-<dataset>-<time>.json` and `.md` under `dir`; returns their paths. */
export async function writeReport(
  dir: string,
  r: ReplayReport,
): Promise<{ json: string; markdown: string }> {
  await mkdir(dir, { recursive: true });
  const stamp = r.startedAt.replace(/[:.]/g, '-');
  const base = join(dir, `replay-${r.dataset.replace(/[^A-Za-z0-9_.-]/g, '_')}-${stamp}`);
  const json = `${base}.json`;
  const markdown = `${base}.md`;
  await writeFile(json, JSON.stringify(r, null, 2) + '\n');
  await writeFile(markdown, markdownReport(r));
  return { json, markdown };
}
