/**
 * Per-machine secrets of the local stack, made on first use and kept in `.local/secrets/`
 * (git-ignored, mode 0600): nothing secret is committed, and each checkout has its own. The
 * ingest service token is the first: `up` passes it to the stream process in
 * RECSYS_INGEST_TOKENS, and the printed `curl` sends it.
 *
 * @example
 *   const token = await localSecret(ctx, 'ingest-token'); // the same string on every call
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { StackContext } from './service-def.js';

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

/** RECSYS_INGEST_TOKENS for a local stream process: the caller's tokens plus the local one. */
export async function localIngestTokens(ctx: Pick<StackContext, 'localDir'>): Promise<string> {
  const given = process.env.RECSYS_INGEST_TOKENS ?? '';
  const local = await localSecret(ctx, 'ingest-token');
  return given ? `${given},${local}` : local;
}
