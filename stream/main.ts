/**
 * The ingest process: `node dist/stream/main.js`. Reads config, builds the HTTP server
 * (health, readiness, metrics, POST /v1/events) and the MQTT bridge, and stops gracefully on
 * SIGTERM/SIGINT (in-flight Kafka writes finish and are acknowledged before exit).
 */
import { createLogger, createMetricsRegistry, loadConfig } from '../core/index.js';
import { createHttpServer } from '../serving/index.js';
import { startIngest } from './bridge.js';

const config = loadConfig(process.env);
const log = createLogger(config.logLevel, 'recsys-ingest');
const metrics = createMetricsRegistry('ingest');

let ingest: ReturnType<typeof startIngest> | null = null;
let stopping = false;
const server = createHttpServer({
  host: config.http.host,
  port: config.http.port,
  log,
  metrics,
  readiness: () => (ingest ? ingest.readiness() : Promise.resolve({ ok: false, checks: {} })),
});
ingest = startIngest({ config, log, metrics, app: server.app });
// Dependencies that are down are retried for as long as it takes; what rejects here is a
// refusal no retry can fix (the broker rejects our credentials or subscription).
ingest.ready.catch((err: Error) => {
  if (stopping) return;
  log.fatal({ err: err.message }, 'ingest cannot start');
  process.exit(1);
});
await server.listen();

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    server.close();
    ingest
      ?.stop()
      .then(() => process.exit(0))
      .catch((err: Error) => {
        log.error({ err: err.message }, 'unclean stop');
        process.exit(1);
      });
  });
}
