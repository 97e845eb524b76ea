/**
 * Per-machine secrets of the local stack, made on first use and kept in `.local/secrets/`
 * (git-ignored, directory 0700, files 0600): nothing secret is committed, and each checkout has
 * its own. They are:
 * - the secrets the processes read (`LOCAL_SECRET_FILES`: the JWT secret, the bridge's MQTT
 *   password, the retrain token): {@link withLocalSecrets} fills them into the environment of
 *   the `deploy/local` CLI (so `up` writes the bridge's account with it, and the processes it
 *   starts inherit them), of the npm scripts (`with-secrets.ts`) and of the tests (harness);
 * - the ingest service token, which `up` passes to the stream process in RECSYS_INGEST_TOKENS;
 * - the MQTT passwords of the healthcheck account and of device accounts made without one.
 * A variable the caller set wins: an operator's own secret is never replaced.
 *
 * @example
 *   const token = await localSecret({ localDir }, 'ingest-token'); // the same string on every call
 *   await applyLocalSecrets(root); // process.env gets the secrets it does not set itself
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { reader } from '../../core/config-reader.js';
import type { StackContext } from './service-def.js';

/** The secret variables the local stack generates, and the file each is kept in. */
export const LOCAL_SECRET_FILES = {
  RECSYS_JWT_SECRET: 'jwt-secret',
  RECSYS_MQTT_PASSWORD: 'mqtt-bridge-password',
  RECSYS_RETRAIN_TOKEN: 'retrain-token',
} as const;

/** The file a local secret lives in. */
export function secretPath(ctx: Pick<StackContext, 'localDir'>, name: string): string {
  return join(ctx.localDir, 'secrets', name);
}

/** The secret `name`, created (32 random bytes, base64url) when it does not exist yet. */
export async function localSecret(
  ctx: Pick<StackContext, 'localDir'>,
  name: string,
): Promise<string> {
  const file = secretPath(ctx, name);
  const existing = await readFile(file, 'utf8').catch(() => '');
  if (existing.trim()) return existing.trim();
  await mkdir(join(ctx.localDir, 'secrets'), { recursive: true, mode: 0o700 });
  const secret = randomBytes(32).toString('base64url');
  // Written whole under a private name, then linked into place: link() fails if the file
  // exists, so of two processes racing the first one's secret wins and nobody reads it half
  // written.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, `${secret}\n`, { mode: 0o600 });
  try {
    await link(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlink(tmp);
  }
  return (await readFile(file, 'utf8')).trim();
}

/**
 * The variables of {@link LOCAL_SECRET_FILES} that `env` leaves unset (or empty), each with
 * this checkout's secret from `localDir`: merge the result into the environment before
 * `loadConfig`.
 */
export async function withLocalSecrets(
  localDir: string,
  env: NodeJS.ProcessEnv,
): Promise<Record<string, string>> {
  const filled: Record<string, string> = {};
  for (const [variable, file] of Object.entries(LOCAL_SECRET_FILES)) {
    if (!env[variable]) filled[variable] = await localSecret({ localDir }, file);
  }
  return filled;
}

/** This checkout's local folder as `env` names it (RECSYS_LOCAL_DIR, relative to `root`). */
export function localDirOf(root: string, env: NodeJS.ProcessEnv): string {
  return resolve(root, reader(env).str('RECSYS_LOCAL_DIR'));
}

/** {@link withLocalSecrets} merged into `env` (by default this process's) in place. */
export async function applyLocalSecrets(
  root: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<void> {
  Object.assign(env, await withLocalSecrets(localDirOf(root, env), env));
}

/** RECSYS_INGEST_TOKENS for a local stream process: the caller's tokens plus the local one. */
export async function localIngestTokens(ctx: Pick<StackContext, 'localDir'>): Promise<string> {
  const given = process.env.RECSYS_INGEST_TOKENS ?? '';
  const local = await localSecret(ctx, 'ingest-token');
  return given ? `${given},${local}` : local;
}

/** Where a device account made by `mqtt-user <username>` without a password keeps it. */
export const mqttUserSecret = (username: string): string => `mqtt-user-${username}`;
