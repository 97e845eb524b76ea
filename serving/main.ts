/**
 * The serving process: `node dist/serving/main.js` (`npm run serve`). With
 * RECSYS_SERVING_WORKERS > 1 it only supervises: it forks that many workers (`worker.ts`), each
 * listening on the same port (uWS sets SO_REUSEPORT, the kernel spreads connections), restarts
 * one that dies, passes SIGTERM on, and aggregates the workers' metrics for /metrics. With one
 * worker it is the worker.
 */
import cluster from 'node:cluster';
import { assertPortFree, createLogger, listenPort, loadConfig } from '../core/index.js';
import { startMetricsAggregator } from './cluster-metrics.js';

const config = loadConfig(process.env);
const log = createLogger(config.logLevel, 'recsys-serving');

if (config.serving.workers > 1 && cluster.isPrimary) {
  // The workers bind with SO_REUSEPORT, which would let them join another server already on
  // the port; check first that nothing holds it.
  const { port, variable } = listenPort(config, 'serving');
  try {
    await assertPortFree(config.http.host, port, variable);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'cannot start');
    process.exit(1);
  }
  // Two V8 options for the workers, each unless already given (in execArgv or NODE_OPTIONS):
  // 8 MB young-generation semi-spaces (a feed's garbage is all short-lived; less resident
  // memory), and one V8 platform thread (on a small host the workers' helper threads only
  // competed with the workers for cores). Measurements: bench/README.md.
  const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].join(' ');
  const defaults = ['--max-semi-space-size=8', '--v8-pool-size=1'].filter(
    (flag) => !given.includes(flag.split('=')[0] as string),
  );
  if (defaults.length > 0) cluster.setupPrimary({ execArgv: [...process.execArgv, ...defaults] });
  let stopping = false;
  const fork = (): void => {
    cluster.fork().once('exit', (code, signal) => {
      if (stopping) return;
      log.error({ code, signal }, 'serving worker died; starting another');
      setTimeout(fork, 500);
    });
  };
  startMetricsAggregator(log);
  for (let i = 0; i < config.serving.workers; i++) fork();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(sig);
      const check = setInterval(() => {
        if (Object.keys(cluster.workers ?? {}).length === 0) {
          clearInterval(check);
          process.exit(0);
        }
      }, 50);
    });
  }
} else {
  // Imported here: a supervising primary never loads ONNX Runtime, uWS or the Kafka client.
  const { runWorker } = await import('./worker.js');
  await runWorker(config, log).catch((err: Error) => {
    log.fatal({ err: err.message }, 'cannot start');
    process.exit(1);
  });
}
