/**
 * The lake sink as a process of its own, for the crash tests: `node sink-process.js` with the
 * stack's environment. Prints one JSON line `{"msg":"lake sink ready"}` (pino's, at info level)
 * once it consumes, stops gracefully on SIGTERM (rolls and commits what it took) and exits 1 when
 * the role fails.
 */
import { createLogger, createMetricsRegistry, loadConfig } from '../../../core/index.js';
import { startLake } from '../../../stream/roles/lake.js';

const config = loadConfig(process.env);
const log = createLogger(config.logLevel, 'lake-sink');
const role = startLake({ config, log, metrics: createMetricsRegistry('lake') });
let stopping = false;
for (const p of [role.ready, role.failed]) {
  p.catch((err: Error) => {
    if (stopping) return;
    log.fatal({ err: err.message }, 'lake sink failed');
    process.exit(1);
  });
}
process.once('SIGTERM', () => {
  stopping = true;
  role.stop().then(
    () => process.exit(0),
    (err: Error) => {
      log.error({ err: err.message }, 'unclean stop');
      process.exit(1);
    },
  );
});
