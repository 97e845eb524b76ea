/**
 * The Python side of the batch (LightGBM training, ONNX export, MLflow) runs in a virtual
 * environment the project creates itself: `ensurePythonEnv` makes `<venv>` with the system
 * python3 and installs `batch/python/requirements.txt` into it, once per content of that file
 * (its hash is kept in `<venv>/.requirements.sha256`), so a changed pin reinstalls and an
 * unchanged one costs a file read. The Spark engine's extra (`requirements-spark.txt`, PySpark)
 * is installed on top only when asked (`{ spark: true }`), with its own hash file
 * (`<venv>/.requirements-spark.sha256`), so only the Spark engine pays for it.
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

export interface PythonEnvOptions {
  /** Also install `requirements-spark.txt` (PySpark) for the Spark batch engine. */
  spark?: boolean;
}

const sha256 = async (file: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(file))
    .digest('hex');

export async function ensurePythonEnv(
  venv: string,
  log: Logger,
  options: PythonEnvOptions = {},
): Promise<PythonEnv> {
  const dir = join(repoRoot(), 'batch', 'python');
  const requirements = join(dir, 'requirements.txt');
  const wanted = await sha256(requirements);
  const stamp = join(venv, '.requirements.sha256');
  const env: PythonEnv = { venv, bin: (name) => join(venv, 'bin', name) };
  const have = await readFile(stamp, 'utf8').catch(() => '');
  if (have.trim() !== wanted || !existsSync(env.bin('python'))) {
    const t0 = Date.now();
    log.info({ venv }, 'creating the Python environment (first use or changed requirements)');
    await rm(venv, { recursive: true, force: true });
    await mkdir(dirname(venv), { recursive: true });
    await runCommand('python3', ['-m', 'venv', venv], { log });
    await runCommand(env.bin('python'), ['-m', 'pip', 'install', '--quiet', '--upgrade', 'pip'], {
      log,
    });
    await pipInstall(env, requirements, log);
    await writeFile(stamp, wanted + '\n');
    log.info({ venv, seconds: Math.round((Date.now() - t0) / 1000) }, 'Python environment ready');
  }
  if (options.spark) await ensureExtra(env, join(dir, 'requirements-spark.txt'), 'spark', log);
  return env;
}

/** Installs an extra requirements file into the venv, once per content (its own hash file). */
async function ensureExtra(env: PythonEnv, file: string, name: string, log: Logger): Promise<void> {
  const wanted = await sha256(file);
  const stamp = join(env.venv, `.requirements-${name}.sha256`);
  if ((await readFile(stamp, 'utf8').catch(() => '')).trim() === wanted) return;
  const t0 = Date.now();
  log.info({ venv: env.venv, extra: name }, 'installing the Python extra (first use or changed)');
  await pipInstall(env, file, log);
  await writeFile(stamp, wanted + '\n');
  log.info({ extra: name, seconds: Math.round((Date.now() - t0) / 1000) }, 'Python extra ready');
}

function pipInstall(env: PythonEnv, requirements: string, log: Logger): Promise<unknown> {
  return runCommand(
    env.bin('python'),
    ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', requirements],
    { log, timeoutMs: 20 * 60_000 },
  );
}
