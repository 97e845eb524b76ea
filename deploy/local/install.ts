/**
 * One-time installation of the servers into a cache shared by checkouts. Every step is
 * idempotent: a finished install leaves a `.complete` marker and is never redone; a half-done
 * one (killed download, failed unpack) is cleaned up and retried.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { type Logger, RecsysError, retry } from '../../core/index.js';

const run = promisify(execFile);

export class InstallError extends RecsysError {
  readonly service: string;
  constructor(service: string, message: string, cause?: unknown) {
    super('RECSYS_LOCAL_INSTALL_FAILED', `${service}: ${message}`, { cause });
    this.service = service;
  }
}

/** Runs `work` into `dir` unless `dir/.complete` exists; a failed attempt leaves nothing behind. */
export async function once(dir: string, work: (tmp: string) => Promise<void>): Promise<boolean> {
  if (existsSync(join(dir, '.complete'))) return false;
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    await work(tmp);
    await writeFile(join(tmp, '.complete'), new Date().toISOString() + '\n');
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    return true;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Downloads a Maven Central file and checks it against the published SHA-1. */
export async function downloadFromCentral(
  mavenUrl: string,
  path: string,
  dest: string,
  log: Logger,
): Promise<void> {
  const url = `${mavenUrl}/${path}`;
  log.info({ url }, 'downloading');
  await retry(
    async () => {
      const expected = (await fetchText(`${url}.sha1`)).trim().split(/\s+/)[0];
      const res = await fetch(url);
      if (!res.ok || !res.body) throw new Error(`GET ${url}: HTTP ${res.status}`);
      const hash = createHash('sha1');
      const body = Readable.fromWeb(res.body as unknown as WebReadableStream);
      body.on('data', (chunk: Buffer) => hash.update(chunk));
      await pipeline(body, createWriteStream(dest));
      const actual = hash.digest('hex');
      if (expected && actual !== expected) {
        throw new Error(`${url}: SHA-1 ${actual} does not match published ${expected}`);
      }
    },
    {
      attempts: 4,
      initialDelayMs: 1000,
      onRetry: (err) => log.warn({ err: String(err), url }, 'download failed, retrying'),
    },
  );
}

/** Downloads a `.tar.gz` or `.zip` from Maven Central and unpacks it into `dir`, once. */
export async function installArchive(
  mavenUrl: string,
  dir: string,
  centralPath: string,
  log: Logger,
): Promise<void> {
  await once(dir, async (tmp) => {
    const zip = centralPath.endsWith('.zip');
    const archive = join(tmp, zip ? 'archive.zip' : 'archive.tar.gz');
    await downloadFromCentral(mavenUrl, centralPath, archive, log);
    if (zip) await sh('unzip', ['-q', archive, '-d', tmp]);
    else await sh('tar', ['xzf', archive, '-C', tmp]);
    await rm(archive);
  });
}

async function fetchText(url: string): Promise<string> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return res.text();
}

export async function sh(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  const { stdout } = await run(cmd, args, { ...opts, maxBuffer: 64 << 20 });
  return stdout;
}

export function onPath(binary: string): boolean {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d && existsSync(join(d, binary)));
}

/**
 * Debian packages the stack runs or tests with. Installed with apt when a binary is missing;
 * without root the error says what to install.
 */
export const DEBIAN_PACKAGES: Readonly<Record<string, string>> = {
  'redis-server': 'redis-server',
  'redis-cli': 'redis-tools',
  mosquitto: 'mosquitto',
  mosquitto_pub: 'mosquitto-clients',
  mosquitto_sub: 'mosquitto-clients',
  mosquitto_passwd: 'mosquitto',
  kcat: 'kcat',
  unzip: 'unzip',
  curl: 'curl',
  unshare: 'util-linux',
  // Headless browser of the serving page's test (driven by playwright-core).
  chromium: 'chromium',
  // Monitoring (monitoring.ts), with the rule and config checkers the tests run.
  prometheus: 'prometheus',
  promtool: 'prometheus',
  'prometheus-alertmanager': 'prometheus-alertmanager',
  amtool: 'prometheus-alertmanager',
};

export async function ensureDebianPackages(log: Logger): Promise<void> {
  const missing = [
    ...new Set(
      Object.entries(DEBIAN_PACKAGES)
        .filter(([bin]) => !onPath(bin))
        .map(([, pkg]) => pkg),
    ),
  ];
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new InstallError(
      'debian',
      `missing packages ${missing.join(' ')}; install them: sudo apt-get install -y ${missing.join(' ')}`,
    );
  }
  log.info({ packages: missing }, 'installing Debian packages');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    await sh('apt-get', ['update', '-qq'], { env });
    await sh('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env });
  } catch (err) {
    throw new InstallError(
      'debian',
      `apt-get install ${missing.join(' ')} failed: ${(err as Error).message}`,
      err,
    );
  }
}

/**
 * A Go command built from its module with `go install` (through the Go module proxy) into
 * `<cacheDir>/go-tools/<name>-<version>/`, once; returns the binary's path.
 *
 * @example
 *   const vegeta = await ensureGoTool(config.local.cacheDir, 'vegeta', 'github.com/tsenart/vegeta/v12', '12.13.0', log);
 */
export async function ensureGoTool(
  cacheDir: string,
  name: string,
  module: string,
  version: string,
  log: Logger,
): Promise<string> {
  const dir = join(cacheDir, 'go-tools', `${name}-${version}`);
  await once(dir, async (tmp) => {
    if (!onPath('go')) throw new InstallError(name, 'no `go` on PATH to build it with');
    log.info({ module, version }, `building ${name} with go install`);
    try {
      await sh('go', ['install', `${module}@v${version}`], {
        env: { ...process.env, GOBIN: tmp, CGO_ENABLED: '0' },
      });
    } catch (err) {
      throw new InstallError(name, `go install ${module}@v${version} failed`, err);
    }
  });
  return join(dir, name);
}

/** The Java home of the `java` on PATH, checked to be 17 or newer. */
export async function javaHome(): Promise<string> {
  let out: string;
  try {
    const { stderr } = await run('java', ['-XshowSettings:properties', '-version']);
    out = stderr;
  } catch (err) {
    throw new InstallError(
      'java',
      'no `java` on PATH; Kafka, the registry and Elasticsearch need Java 17+',
      err,
    );
  }
  const home = /java\.home = (.+)/.exec(out)?.[1]?.trim();
  const major = Number(/java\.specification\.version = (\d+)/.exec(out)?.[1]);
  if (!home || !(major >= 17))
    throw new InstallError('java', `need Java 17 or newer, found ${major || 'unknown'}`);
  return home;
}
