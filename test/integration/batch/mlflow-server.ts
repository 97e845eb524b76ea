/**
 * A real MLflow tracking server for the registry tests, from PyPI: the project's venv
 * (`ensurePythonEnv`, which installs `batch/python/requirements.txt` on first use, ~50 s) runs
 * `mlflow server` on a free loopback port with a throw-away SQLite store and artifact root,
 * proxying artifacts (`--serve-artifacts`), one uvicorn worker. `stop()` ends the process group
 * (mlflow forks uvicorn) and removes the directory.
 *
 * MLflow 3.x's security middleware allows loopback Host headers by default, so no
 * `--allowed-hosts` or `--disable-security-middleware` is needed on 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensurePythonEnv } from '../../../batch/python-env.js';
import { sleep } from '../../../core/index.js';
import { config, log } from '../harness.js';
import { freePort } from '../ingest/bridge-process.js';

export interface MlflowServer {
  url: string;
  /** Time from spawn to the first healthy answer, ms. */
  startMs: number;
  stop(): Promise<void>;
}

export async function startMlflowServer(
  options: { startTimeoutMs?: number } = {},
): Promise<MlflowServer> {
  const py = await ensurePythonEnv(config.batch.pythonVenv, log);
  const dir = await mkdtemp(join(tmpdir(), 'recsys-mlflow-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logFile = join(dir, 'server.log');
  const t0 = Date.now();
  const out = openSync(logFile, 'a');
  const child: ChildProcess = spawn(
    py.bin('mlflow'),
    [
      'server',
      '--backend-store-uri',
      `sqlite:///${join(dir, 'mlflow.db')}`,
      '--artifacts-destination',
      join(dir, 'artifacts'),
      '--serve-artifacts',
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--workers',
      '1',
    ],
    // Its own process group, so stop() reaches the uvicorn child too.
    { cwd: dir, detached: true, stdio: ['ignore', out, out] },
  );
  closeSync(out); // the child holds its own copy
  let exited: number | string | null = null;
  child.on('exit', (code, signal) => {
    exited = code ?? signal ?? 'exit';
  });

  const stop = async (): Promise<void> => {
    if (exited === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      for (let i = 0; i < 100 && exited === null; i++) await sleep(100);
      if (exited === null) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = t0 + (options.startTimeoutMs ?? 120_000);
  while (Date.now() < deadline) {
    if (exited !== null) break;
    const ok = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { url, startMs: Date.now() - t0, stop };
    await sleep(200);
  }
  const tail = (await readFile(logFile, 'utf8').catch(() => '')).slice(-3000);
  await stop();
  throw new Error(
    `mlflow server ${exited === null ? 'did not answer /health in time' : `exited (${exited})`}:\n${tail}`,
  );
}
