/**
 * The serving process: `node dist/serving/main.js` (`npm run serve`). With
 * RECSYS_SERVING_WORKERS > 1 it only supervises: it forks that many workers (`worker.ts`), each
 * listening on the same port (uWS sets SO_REUSEPORT, the kernel spreads connections), restarts
 * one that dies, and aggregates the workers' metrics for /metrics. With one worker it is the
 * worker.
 *
 * On SIGTERM/SIGINT (`core/shutdown.ts`) the primary passes SIGTERM to every worker, which drains
 * within a slightly shorter budget of its own (`worker.ts`), and waits for them within
 * RECSYS_SHUTDOWN_TIMEOUT_MS; a worker still there at the deadline is killed. Exit 0 when every
 * worker stopped cleanly, 1 when one did not, 124 out of time.
 */
import cluster, { type Worker } from 'node:cluster';
import {
  ABANDONED,
  assertPortFree,
  createLogger,
  EXIT_DEADLINE,
  listenPort,
  loadConfigOrExit,
  onShutdown,
} from '../core/index.js';
import { startMetricsAggregator } from './cluster-metrics.js';

const config = loadConfigOrExit(process.env);
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
  const shutdown = onShutdown({
    log,
    timeoutMs: config.shutdownTimeoutMs,
    steps: [{ name: 'workers', run: (budget) => stopWorkers(budget.signal) }],
  });
  const fork = (): void => {
    if (shutdown.stopping) return;
    cluster.fork().once('exit', (code, signal) => {
      if (shutdown.stopping) return;
      log.error({ code, signal }, 'serving worker died; starting another');
      setTimeout(fork, 500);
    });
  };
  startMetricsAggregator(log);
  for (let i = 0; i < config.serving.workers; i++) fork();
} else {
  // Imported here: a supervising primary never loads ONNX Runtime, uWS or the Kafka client.
  const { runWorker } = await import('./worker.js');
  await runWorker(config, log).catch((err: Error) => {
    log.fatal({ err: err.message }, 'cannot start');
    process.exit(1);
  });
}

/**
 * SIGTERM to every worker; resolves once all exited (ABANDONED if one ran out of its time), and
 * rejects if one failed. When `deadline` aborts, the workers left are killed (the primary exits
 * right after).
 */
async function stopWorkers(deadline: AbortSignal): Promise<typeof ABANDONED | undefined> {
  const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w);
  const exits = workers.map(
    (w) =>
      new Promise<{ pid: number | undefined; code: number | null; signal: string | null }>(
        (resolve) => {
          if (w.isDead())
            return resolve({ pid: w.process.pid, code: w.process.exitCode, signal: null });
          w.once('exit', (code, signal) => resolve({ pid: w.process.pid, code, signal }));
        },
      ),
  );
  const kill = (): void => {
    for (const w of workers) if (!w.isDead()) w.process.kill('SIGKILL');
  };
  deadline.addEventListener('abort', kill, { once: true });
  for (const w of workers) w.process.kill('SIGTERM');
  const results = await Promise.all(exits);
  deadline.removeEventListener('abort', kill);
  const failed = results.filter((r) => r.code !== 0 && r.code !== EXIT_DEADLINE);
  if (failed.length > 0) throw new Error(`workers failed to stop: ${JSON.stringify(failed)}`);
  return results.some((r) => r.code === EXIT_DEADLINE) ? ABANDONED : undefined;
}
