/**
 * Child processes of the benchmarks: a free loopback port, a project entry point started until
 * its `/readyz` answers 200, and a graceful stop.
 *
 * @example
 *   const port = await freePort();
 *   const server = await startReady('dist/serving/main.js', [], env, port);
 *   await stopProcess(server);
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { sleep } from '../core/index.js';

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Runs `node <script> <args>` from the project root with `env` (and RECSYS_HTTP_PORT=`port`),
 * resolving once its `/readyz` (or `readyPath`) answers 200; it is killed if it is not ready
 * within `timeoutMs`.
 */
export async function startReady(
  script: string,
  args: string[],
  env: Record<string, string>,
  port: number,
  options: {
    nodeArgs?: string[];
    timeoutMs?: number;
    readyPath?: string;
    /** Gets the child at once, so a caller can stop it while it is still starting. */
    onSpawn?: (child: ChildProcess) => void;
    /** A file descriptor for the child's stdout and stderr. @default stdout ignored, stderr inherited */
    outputFd?: number;
  } = {},
): Promise<ChildProcess> {
  const root = process.cwd();
  const child = spawn(
    process.execPath,
    [...(options.nodeArgs ?? []), join(root, script), ...args],
    {
      cwd: root,
      env: { ...process.env, ...env, RECSYS_HTTP_PORT: String(port) },
      stdio:
        options.outputFd === undefined
          ? ['ignore', 'ignore', 'inherit']
          : ['ignore', options.outputFd, options.outputFd],
    },
  );
  options.onSpawn?.(child);
  const timeoutMs = options.timeoutMs ?? 90_000;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${script} exited ${child.exitCode}`);
    const ok = await fetch(`http://127.0.0.1:${port}${options.readyPath ?? '/readyz'}`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return child;
    await sleep(200);
  }
  child.kill('SIGKILL');
  throw new Error(`${script} ${args.join(' ')} not ready within ${timeoutMs / 1000} s`);
}

/** SIGTERM, then SIGKILL if the process has not exited 15 s later. */
export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(15_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
}
