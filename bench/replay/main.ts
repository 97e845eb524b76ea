/**
 * `npm run eval:replay -- --dataset movielens-100k` (or `--file <log> [--items u.item]`): how
 * the running stack would do on an interaction log, measured prequentially through the product
 * itself, against two baselines learnt online on the same events.
 *
 * Method:
 *   1. Load the log (CSV, MovieLens u.data / ratings.dat, OTTO JSON Lines: `loaders.ts`, which
 *      also says how types and ratings map: rating >= 4 -> like, else view) and the catalog
 *      (MovieLens u.item: first genre -> categoryL1; a CSV category column; else none).
 *   2. Sort by time (ties keep file order) and re-time linearly into the ingest window, ending
 *      now (`plan.ts`). The first `--history` share (0.8) is the history; the next `--events`
 *      (20,000) events are replayed; later events are not used.
 *   3. Start an isolated copy of the product on the backbone (`stack.ts`: own topics, groups,
 *      Redis db `--db` (3), lake/batch/registry in a temporary directory, own ports) with the
 *      stream roles ingest, features, lake and impressions.
 *   4. Catalog: written to `<batchDir>/catalog.jsonl` and loaded into Redis with the catalog
 *      CLI (`catalog load` does not write the batch's copy, so both are done).
 *   5. History through `POST /v1/events` in batches, except its newest `--warm` events (20,000,
 *      at most a quarter of it); wait until the feature and lake groups committed it; run the
 *      batch (`node dist/batch/main.js`); start serving. Then the warm-up: the held-back history
 *      events go through the loop of step 6, not scored, with every feed logging its candidates
 *      and features (`RECSYS_FEED_LOG_FEATURES_SHARE=1`), and the batch runs again: it trains
 *      the reranker on those logged feeds, as a deployed stack learns from its own traffic.
 *   6. Replay (`replay.ts`): per event, the user's feed (K = `--k`, 20) with the user's token,
 *      the rank of the event's item (0-based) or a miss; then the event published (MQTT as the
 *      user by default, `--via http`); then a wait until the user's features count it.
 *      Events start in time order with at most `--concurrency` in flight, one user's in order.
 *   7. Baselines (`baselines.ts`): popularity and co-visitation of the user's last 3 items
 *      (window 3), each also with the user's consumed items left out, learnt on the history and
 *      then each replayed event after it is ranked, in time order.
 *   8. Report (`metrics.ts`, `report.ts`): HR/MRR/NDCG@K, catalog coverage (distinct items
 *      shown / catalog size, or distinct items of the log without a catalog), share of slots
 *      holding an item the user already consumed, cold (no history) vs warm users, HR by the
 *      user's Nth replayed event, served hits by candidate source, feed latency and freshness
 *      (publish -> features applied) p50/p99. `bench/results/replay-<dataset>-<time>.json`
 *      and `.md`; the markdown is printed.
 * Everything the run made is removed at the end, also on failure and SIGINT (`stack.ts`).
 *
 * Over MQTT each replayed user needs an account (`cli.js mqtt-user`, made at the start): the
 * broker must be the one `npm run stack -- up` manages from RECSYS_LOCAL_DIR.
 */
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { loadConfig } from '../../core/index.js';
import { runBaselines, BASELINES } from './baselines.js';
import { datasetDir, findDataset } from './data.js';
import { parseLog, parseMovieLensItems, type LogFormat, type ParsedLog } from './loaders.js';
import { percentiles, summarize, type Outcome, type SystemReport } from './metrics.js';
import { byUser, makePlan, wireEvent, type Plan, type PlannedEvent } from './plan.js';
import { replayServed, type ServedResult, type UserStart } from './replay.js';
import { markdownReport, writeReport, type ReplayReport } from './report.js';
import { ReplayStack } from './stack.js';
import { applyLocalSecrets } from '../../deploy/local/secrets.js';

export interface ReplayArgs {
  dataset: string;
  file: string;
  items: string | null;
  format?: LogFormat;
  historyShare: number;
  maxReplay: number;
  k: number;
  via: 'mqtt' | 'http';
  concurrency: number;
  db: number;
  maxMinutes: number;
  out: string;
  userPrefix: string;
  /** History events (its newest) replayed through the served feed before the last batch. */
  warm: number;
}

const USAGE = `usage: npm run eval:replay -- (--dataset movielens-100k|otto-sample|retailrocket | --file <log>)
  [--items <u.item>] [--format csv|movielens-tab|movielens-dat|otto-jsonl] [--history 0.8]
  [--events 20000] [--k 20] [--via mqtt|http] [--concurrency 32] [--db 3] [--max-minutes 60]
  [--out bench/results] [--user-prefix replay.] [--warm 20000]`;

export function parseReplayArgs(argv: string[]): ReplayArgs {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      dataset: { type: 'string' },
      file: { type: 'string' },
      items: { type: 'string' },
      format: { type: 'string' },
      history: { type: 'string', default: '0.8' },
      events: { type: 'string', default: '20000' },
      k: { type: 'string', default: '20' },
      via: { type: 'string', default: 'mqtt' },
      concurrency: { type: 'string', default: '32' },
      db: { type: 'string', default: '3' },
      'max-minutes': { type: 'string', default: '60' },
      out: { type: 'string', default: 'bench/results' },
      'user-prefix': { type: 'string', default: 'replay.' },
      warm: { type: 'string', default: '20000' },
    },
  });
  const num = (name: string, raw: string, ok: (n: number) => boolean): number => {
    const n = Number(raw);
    if (!ok(n)) throw new Error(`--${name}: bad value "${raw}"\n${USAGE}`);
    return n;
  };
  let file = v.file;
  let items = v.items ?? null;
  let dataset = v.dataset ?? '';
  if (dataset) {
    const d = findDataset(dataset);
    if (!d) throw new Error(`unknown dataset "${dataset}"\n${USAGE}`);
    file ??= `${datasetDir(d.name)}/${d.log}`;
    if (d.items) items ??= `${datasetDir(d.name)}/${d.items}`;
  }
  if (!file) throw new Error(USAGE);
  dataset ||= (file.split('/').pop() ?? 'log').replace(/\.[^.]*$/, '');
  if (v.via !== 'mqtt' && v.via !== 'http') throw new Error(`--via: mqtt or http\n${USAGE}`);
  const formats = ['csv', 'movielens-tab', 'movielens-dat', 'otto-jsonl'];
  if (v.format !== undefined && !formats.includes(v.format)) {
    throw new Error(`--format: one of ${formats.join(', ')}`);
  }
  return {
    dataset,
    file,
    items,
    ...(v.format ? { format: v.format as LogFormat } : {}),
    historyShare: num('history', v.history, (n) => n >= 0 && n < 1),
    maxReplay: num('events', v.events, (n) => Number.isInteger(n) && n > 0),
    k: num('k', v.k, (n) => Number.isInteger(n) && n > 0 && n <= 100),
    via: v.via,
    concurrency: num('concurrency', v.concurrency, (n) => Number.isInteger(n) && n > 0),
    db: num('db', v.db, (n) => Number.isInteger(n) && n >= 1 && n <= 15),
    maxMinutes: num('max-minutes', v['max-minutes'], (n) => n > 0),
    out: v.out,
    userPrefix: v['user-prefix'],
    warm: num('warm', v.warm, (n) => Number.isInteger(n) && n >= 0),
  };
}

/** Per-user state after `history`: consumed items and applied-event count. */
function userStarts(history: readonly PlannedEvent[]): Map<string, UserStart> {
  const out = new Map<string, UserStart>();
  for (const e of history) {
    let s = out.get(e.userId);
    if (!s) out.set(e.userId, (s = { consumed: new Set(), applied: 0 }));
    s.consumed.add(e.itemId);
    s.applied++;
  }
  return out;
}

async function loadInputs(args: ReplayArgs): Promise<{
  log: ParsedLog;
  catalog: Map<string, string>;
  catalogSource: string;
}> {
  const log = parseLog(await readFile(args.file, 'utf8'), args.file, args.format);
  if (log.events.length === 0) throw new Error(`${args.file}: no events`);
  if (args.items) {
    const catalog = parseMovieLensItems(await readFile(args.items, 'latin1'));
    return { log, catalog, catalogSource: `${args.items} (first genre)` };
  }
  if (log.categories.size > 0) return { log, catalog: log.categories, catalogSource: 'CSV column' };
  return { log, catalog: new Map(), catalogSource: 'none: coverage over the log items' };
}

export async function runReplay(
  args: ReplayArgs,
  say: (line: string) => void,
  onStack: (stack: ReplayStack) => void = () => undefined,
): Promise<{ report: ReplayReport; paths: { json: string; markdown: string } }> {
  const startedAt = new Date();
  const stepsMs: Record<string, number> = {};
  const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    say(`[${name}] ...`);
    const r = await fn();
    stepsMs[name] = Math.round(performance.now() - t0);
    say(`[${name}] done in ${(stepsMs[name] / 1000).toFixed(1)} s`);
    return r;
  };
  const { log, catalog, catalogSource } = await step('load', () => loadInputs(args));
  const config = loadConfig(process.env);
  // An hour of margin inside the ingest window, for the run's own duration.
  const windowMs = Math.max(config.ingest.maxPastMs - 3_600_000, config.ingest.maxPastMs / 2);
  const plan = makePlan(log.events, {
    historyShare: args.historyShare,
    maxReplay: args.maxReplay,
    userPrefix: args.userPrefix,
    endTs: startedAt.getTime() - 60_000,
    windowMs,
  });
  const items = new Set(log.events.map((e) => e.item));
  const catalogSize = catalog.size > 0 ? new Set([...catalog.keys(), ...items]).size : items.size;
  say(
    `${log.events.length} events (${log.skipped} rows skipped), ${items.size} items; history ${plan.history.length}, replay ${plan.replay.length} (${plan.usersReplayed} users), time x${plan.scale.toFixed(4)}`,
  );

  const baselines = await step('baselines', async () =>
    runBaselines(
      plan.history.map((e) => ({ user: e.userId, item: e.itemId })),
      plan.replay.map((e) => ({ user: e.userId, item: e.itemId, nth: e.nth, cold: e.cold })),
      { k: args.k, window: 3, lastItems: 3 },
    ),
  );

  // An item enters the catalog at its first event (re-timed): the items first seen in the
  // replayed part are the new items a feed explores (RECSYS_FEED_EXPLORE_SHARE) while they are
  // younger than the replayed span.
  const firstSeen = new Map<string, number>();
  for (const e of [...plan.history, ...plan.replay]) {
    if (!firstSeen.has(e.itemId)) firstSeen.set(e.itemId, e.ts);
  }
  const replayFrom = plan.replay[0]?.ts ?? Date.now();
  const stack = await ReplayStack.create({
    db: args.db,
    say,
    env: {
      RECSYS_FEED_NEW_ITEM_AGE_MS: String(Math.max(1000, Date.now() - replayFrom + 60_000)),
      // Every feed carries its training rows: the warm-up's feeds are what the last batch learns.
      RECSYS_FEED_LOG_FEATURES_SHARE: '1',
    },
  });
  onStack(stack);
  try {
    await step('stream', () => stack.startStream());
    if (catalog.size > 0) {
      const first = plan.history[0]?.ts ?? replayFrom;
      await step('catalog', () =>
        stack.loadCatalog(catalog, (itemId) => firstSeen.get(itemId) ?? first),
      );
    }
    // The newest `--warm` history events (at most a quarter) go through the served feed like
    // the replayed ones (not scored): the stack's own logged feeds, which the last batch trains on.
    const warmCount = Math.min(args.warm, Math.floor(plan.history.length / 4));
    const bulk = plan.history.slice(0, plan.history.length - warmCount);
    const warm = plan.history.slice(bulk.length);
    const { groups } = stack.config.consumer;
    await step('history', async () => {
      await stack.postEvents(bulk.map(wireEvent));
      await stack.waitCommitted([groups.features, groups.lake], bulk.length, 600_000);
    });
    await step('batch', () => stack.runBatch());
    const notReady = await step('serving', () => stack.startServing());
    if (Object.keys(notReady).length > 0) {
      say(`  serving answers but is not ready: ${JSON.stringify(notReady)}`);
    }
    const password = randomBytes(12).toString('hex');
    if (args.via === 'mqtt') {
      await step('mqtt accounts', () =>
        addAccounts(stack, [...byUser([...warm, ...plan.replay]).keys()], password),
      );
    }
    const replayOptions = {
      k: args.k,
      concurrency: args.concurrency,
      via: args.via,
      mqttPassword: password,
      deadline: Date.now() + args.maxMinutes * 60_000,
      applyTimeoutMs: 30_000,
      progressEvery: 1000,
    };
    if (warm.length > 0) {
      await step('warm-up', () =>
        replayServed(stack, warm, userStarts(bulk), {
          ...replayOptions,
          progress: (done, total) => say(`  warm-up ${done} of ${total}`),
        }),
      );
      await stack.waitCommitted([groups.features, groups.lake], plan.history.length, 600_000);
      await step('batch on the logged feeds', () => stack.runBatch());
    }
    // The server polls the registry every RECSYS_MODEL_POLL_MS (1 s here).
    const model = await stack.waitServingModel();
    say(
      model === 'blend'
        ? '  the heuristic blend ranks the feeds'
        : `  model ${model} ranks the feeds`,
    );
    const served = await step('replay', () =>
      replayServed(stack, plan.replay, userStarts(plan.history), {
        ...replayOptions,
        progress: (done, total) => say(`  replayed ${done} of ${total}`),
      }),
    );
    const report = assembleReport({
      args,
      stackId: stack.id,
      startedAt,
      notReady,
      log,
      catalogSize,
      catalogSource,
      plan,
      baselines,
      served,
      stepsMs,
    });
    const paths = await writeReport(args.out, report);
    return { report, paths };
  } finally {
    await stack.cleanup.run();
  }
}

interface ReportInputs {
  args: ReplayArgs;
  stackId: string;
  startedAt: Date;
  notReady: Record<string, unknown>;
  log: ParsedLog;
  catalogSize: number;
  catalogSource: string;
  plan: Plan;
  baselines: ReturnType<typeof runBaselines>;
  served: ServedResult;
  stepsMs: Record<string, number>;
}

/** The report of a finished replay: every system summarised over the same replayed events. */
function assembleReport(r: ReportInputs): ReplayReport {
  const { args, log, plan, baselines, served, catalogSize, catalogSource, stepsMs } = r;
  const items = new Set(log.events.map((e) => e.item));
  const systems: Record<string, SystemReport> = {
    served: summarize(served.outcomes, args.k, served.shown.size, catalogSize),
  };
  // Baselines over the same events the served feed was measured on (a deadline cuts some).
  const replayed = served.outcomes.length;
  for (const name of BASELINES) {
    const b = baselines[name];
    const outcomes = served.indices.map((i) => b.outcomes[i] as Outcome);
    const shown = new Set(served.indices.flatMap((i) => b.lists[i] ?? []));
    systems[name] = summarize(outcomes, args.k, shown.size, catalogSize);
  }
  const types: Record<string, number> = {};
  for (const e of log.events) types[e.type] = (types[e.type] ?? 0) + 1;
  const report: ReplayReport = {
    dataset: args.dataset,
    file: args.file,
    startedAt: r.startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    options: { ...args, stackId: r.stackId, covisWindow: 3, covisLastItems: 3 },
    servingNotReady: r.notReady,
    log: {
      events: log.events.length,
      skippedRows: log.skipped,
      users: new Set(log.events.map((e) => e.user)).size,
      items: items.size,
      catalogSize,
      catalogSource,
      types,
    },
    plan: {
      history: plan.history.length,
      replayPlanned: plan.replay.length,
      replayed,
      skippedAtDeadline: served.skipped,
      unused: plan.unused,
      usersInHistory: plan.usersInHistory,
      usersReplayed: plan.usersReplayed,
      timeScale: plan.scale,
    },
    systems,
    served: {
      latencyMs: percentiles(served.latencyMs),
      serverLatencyMs: percentiles(served.serverLatencyMs),
      freshnessMs: percentiles(served.freshnessMs),
      modelVersions: served.modelVersions,
      feedErrors: served.feedErrors,
      applyTimeouts: served.applyTimeouts,
    },
    stepsMs,
    ranks: Object.fromEntries([
      ['served', served.outcomes.map((o) => o.rank)],
      ...BASELINES.map((b) => [
        b,
        served.indices.map((i) => baselines[b].outcomes[i]?.rank ?? null),
      ]),
    ]),
    eventIds: served.indices.map((i) => plan.replay[i]?.eventId ?? ''),
  };
  return report;
}

/** MQTT accounts for `users` (eight CLI calls at a time; each waits for Mosquitto's reload). */
async function addAccounts(stack: ReplayStack, users: string[], password: string): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < users.length) {
      const user = users[next++] as string;
      await stack.addMqttUser(user, password);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

async function main(): Promise<void> {
  const say = (line: string): void => void process.stderr.write(line + '\n');
  const args = parseReplayArgs(process.argv.slice(2));
  let stack: ReplayStack | null = null;
  const stop = (signal: string): void => {
    say(`${signal}: stopping and cleaning up ...`);
    void (stack?.cleanup.run() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  const t0 = performance.now();
  const { report, paths } = await runReplay(args, say, (s) => (stack = s));
  process.stdout.write(markdownReport(report) + '\n');
  say(
    `wrote ${paths.json} and ${paths.markdown} (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
}

const entry = process.argv[1] ?? '';
if (entry.endsWith('replay/main.js') || entry.endsWith('replay/main.ts')) {
  // The local stack's secrets (the bridge's MQTT password, the JWT secret) unless set.
  applyLocalSecrets(process.cwd())
    .then(main)
    .then(
      () => process.exit(0),
      (err: Error) => {
        process.stderr.write(`eval:replay: ${err.message}\n`);
        process.exit(1);
      },
    );
}
