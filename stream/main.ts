/**
 * Stream processes: `node dist/stream/main.js [role ...]`, roles `ingest` (MQTT and HTTP into
 * Kafka), `features` (session features and trending in Redis), `catalog` (items topic into
 * Redis), `indexer` (Elasticsearch), `lake` (Parquet), `impressions` (served feeds into
 * per-user impression counts) and `attribution` (online CTR and hit rate per model version), or
 * `all`. Default: `ingest`. Every
 * process serves `/healthz`, `/readyz` (all its roles' dependencies) and `/metrics` on
 * RECSYS_STREAM_PORT (8090; RECSYS_HTTP_PORT overrides it), and stops gracefully on SIGTERM/SIGINT
 * within RECSYS_SHUTDOWN_TIMEOUT_MS (`core/shutdown.ts`): the listen socket closes, then every
 * role stops at once: consumers finish the chunk in hand, commit what is durable and leave their
 * group; the bridge stops reading MQTT, flushes its queue to Kafka and disconnects, leaving what
 * it did not acknowledge to its broker session. Exit 0 clean, 1 a role failed to stop, 124 out of
 * time (work handed back).
 */
import {
  assertPortFree,
  createHttpServer,
  createLogger,
  createMetricsRegistry,
  ABANDONED,
  type HealthReport,
  listenPort,
  loadConfigOrExit,
  onShutdown,
  type RoleDeps,
  type StreamRole,
} from '../core/index.js';
import { startAttribution } from './roles/attribution.js';
import { startIngest } from './roles/ingest.js';
import { startCatalog } from './roles/catalog.js';
import { startFeatures } from './roles/features.js';
import { startImpressions } from './roles/impressions.js';
import { startIndexer } from './roles/indexer.js';
import { startLake } from './roles/lake.js';

const ROLES = [
  'ingest',
  'features',
  'catalog',
  'indexer',
  'lake',
  'impressions',
  'attribution',
] as const;
type RoleName = (typeof ROLES)[number];

const args = process.argv.slice(2);
const names: RoleName[] = args.length === 0 ? ['ingest'] : args.includes('all') ? [...ROLES] : [];
for (const a of args) {
  if (a === 'all') continue;
  if (!(ROLES as readonly string[]).includes(a)) {
    process.stderr.write(`unknown role "${a}"; expected one of: ${ROLES.join(', ')}, all\n`);
    process.exit(2);
  }
  if (!names.includes(a as RoleName)) names.push(a as RoleName);
}

const config = loadConfigOrExit(process.env);
const log = createLogger(config.logLevel, `recsys-${names.join('+')}`);
const metrics = createMetricsRegistry(names.join('+'));
const roles = new Map<RoleName, StreamRole>();

const { port, variable: portVariable } = listenPort(config, 'stream');
// Before any role starts: a second bridge with this one's MQTT client id would take over its
// session. The listen below binds exclusively as well.
await assertPortFree(config.http.host, port, portVariable).catch((err: Error) => {
  log.fatal({ err: err.message }, 'cannot start');
  process.exit(1);
});
const server = createHttpServer({
  host: config.http.host,
  port,
  portVariable,
  log,
  metrics,
  readiness: async () => {
    // One report for the process: each role's checks, prefixed with the role when several run.
    const reports = await Promise.all(
      [...roles].map(async ([name, role]) => [name, await role.readiness()] as const),
    );
    const merged: HealthReport = { ok: reports.length === names.length, checks: {} };
    for (const [name, report] of reports) {
      merged.ok &&= report.ok;
      for (const [check, r] of Object.entries(report.checks)) {
        merged.checks[names.length > 1 ? `${name}.${check}` : check] = r;
      }
    }
    return merged;
  },
});

const shutdown = onShutdown({
  log,
  timeoutMs: config.shutdownTimeoutMs,
  steps: () => [
    { name: 'http listener', run: () => server.close() },
    {
      name: 'roles',
      run: async (budget) => {
        const outcomes = await Promise.all(
          [...roles].map(async ([name, role]) => {
            const outcome = await role.stop(budget);
            log.info({ role: name, outcome: outcome ?? 'done' }, 'role stopped');
            return outcome;
          }),
        );
        return outcomes.includes(ABANDONED) ? ABANDONED : undefined;
      },
    },
  ],
});

const deps: RoleDeps = { config, log, metrics };
for (const name of names) {
  let role: StreamRole;
  if (name === 'ingest') {
    const ingest = startIngest({ ...deps, app: server.app });
    role = { ...ingest, failed: ingest.ready.then(() => new Promise<never>(() => undefined)) };
  } else if (name === 'features') role = startFeatures(deps);
  else if (name === 'catalog') role = startCatalog(deps);
  else if (name === 'indexer') role = startIndexer(deps);
  else if (name === 'impressions') role = startImpressions(deps);
  else if (name === 'attribution') role = startAttribution(deps);
  else role = startLake(deps);
  roles.set(name, role);
  // Dependencies that are down are retried for as long as it takes; what rejects here is a
  // refusal no retry can fix (credentials, a programming error). Exit non-zero: nothing was
  // committed past what is durable, so a restart loses nothing.
  for (const p of [role.ready, role.failed]) {
    p.catch((err: Error) => {
      if (shutdown.stopping) return;
      log.fatal({ role: name, err: err.message }, 'role cannot continue');
      process.exit(1);
    });
  }
}
await server.listen().catch((err: Error) => {
  log.fatal({ err: err.message }, 'cannot start');
  process.exit(1);
});
