/**
 * The Python side of the batch (LightGBM training, ONNX export, MLflow) runs in a virtual
 * environment the project creates itself: `ensurePythonEnv` makes `<venv>` with the system
 * python3 and installs `batch/python/requirements.txt` into it, once per content of that file
 * (its hash is kept in `<venv>/.requirements.sha256`), so a changed pin reinstalls and an
 * unchanged one costs a file read.
 *
 * @example
 *   const py = await ensurePythonEnv(config.batch.pythonVenv, log);
 *   await runPython(py, ['batch/python/train.py', '--data', file]);
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Logger, RecsysError } from '../core/index.js';

export class PythonStepError extends RecsysError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('RECSYS_PYTHON_FAILED', message, options);
  }
}

export interface PythonEnv {
  venv: string;
  /** Path of an executable in the venv, e.g. `bin('mlflow')`. */
  bin(name: string): string;
}

/** The checkout root (where package.json is), from this module in the tree or in dist/. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir)
      throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

/** Runs a command to completion; rejects with its exit code and output tail. */
export function runCommand(
  cmd: string,
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    log?: Logger;
    timeoutMs?: number;
    /** Kills the command (SIGTERM) when it aborts. */
    signal?: AbortSignal;
  } = {},
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: options.cwd ?? repoRoot(),
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
    });
    const timer = options.timeoutMs
      ? setTimeout(() => child.kill('SIGKILL'), options.timeoutMs)
      : null;
    let aborted = false;
    child.on('error', (err) => {
      // Aborted: the child was sent SIGTERM; settle once it is gone (and reaped), below.
      if (err.name === 'AbortError') aborted = true;
      else reject(new PythonStepError(`${cmd}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (aborted) {
        const reason: unknown = options.signal?.reason;
        return reject(reason instanceof Error ? reason : new PythonStepError(`${cmd}: aborted`));
      }
      if (code === 0) return resolve({ stdout, stderr });
      reject(
        new PythonStepError(
          `${cmd} ${args.join(' ')} exited ${code ?? signal}:\n${stderr.slice(-4000) || stdout.slice(-4000)}`,
        ),
      );
    });
  });
}

export async function ensurePythonEnv(venv: string, log: Logger): Promise<PythonEnv> {
  const requirements = join(repoRoot(), 'batch', 'python', 'requirements.txt');
  const wanted = createHash('sha256')
    .update(await readFile(requirements))
    .digest('hex');
  const stamp = join(venv, '.requirements.sha256');
  const env: PythonEnv = { venv, bin: (name) => join(venv, 'bin', name) };
  const have = await readFile(stamp, 'utf8').catch(() => '');
  if (have.trim() === wanted && existsSync(env.bin('python'))) return env;

  const t0 = Date.now();
  log.info({ venv }, 'creating the Python environment (first use or changed requirements)');
  await rm(venv, { recursive: true, force: true });
  await mkdir(dirname(venv), { recursive: true });
  await runCommand('python3', ['-m', 'venv', venv], { log });
  await runCommand(env.bin('python'), ['-m', 'pip', 'install', '--quiet', '--upgrade', 'pip'], {
    log,
  });
  await runCommand(
    env.bin('python'),
    ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', requirements],
    { log, timeoutMs: 20 * 60_000 },
  );
  await writeFile(stamp, wanted + '\n');
  log.info({ venv, seconds: Math.round((Date.now() - t0) / 1000) }, 'Python environment ready');
  return env;
}
