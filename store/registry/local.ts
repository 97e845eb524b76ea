/**
 * The embedded model registry: a directory, the default when no MLflow URL is configured.
 *
 *   <root>/<model>/versions/<n>/model.onnx   the bytes, never changed after registration
 *   <root>/<model>/versions/<n>/meta.json    metrics, params, tags, created, sha256
 *   <root>/<model>/aliases.json              { "champion": "<n>" }
 *   <root>/<model>/.lock                     held while aliases change (O_EXCL create)
 *
 * Why it is safe with several writers:
 * - a version number is claimed with a non-recursive `mkdir`, which exactly one process wins;
 *   the loser tries the next number, so numbers only grow and are never shared;
 * - `meta.json` is written last (temp file + rename), so a version without it is a registration
 *   that died half-way: `versions()` skips it and its number is never reused;
 * - aliases change under the lock (read, decide, write temp + rename), so two concurrent
 *   `promoteIfBetter` calls cannot both win against the same old champion.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { type Logger, withFileLock } from '../../core/index.js';
import {
  CHAMPION_ALIAS,
  checkRegisterInput,
  decidePromotion,
  REGISTRY_ERRORS,
  RegistryError,
  stringifyParams,
  type Champion,
  type ModelRegistry,
  type ModelVersion,
  type PromoteOptions,
  type PromoteResult,
  type RegisterInput,
} from './registry.js';

export interface LocalRegistryOptions {
  /** Directory holding one folder per model name. */
  root: string;
  modelName: string;
  log: Logger;
  /** Longest wait for the alias lock, ms. @default 10000 */
  lockTimeoutMs?: number;
  /** A lock older than this was left by a dead process and is broken, ms. @default 60000 */
  staleLockMs?: number;
}

interface Meta {
  version: string;
  metrics: Record<string, number>;
  params: Record<string, string>;
  tags: Record<string, string>;
  createdMs: number;
  sha256: string;
  bytes: number;
}

const MODEL_FILE = 'model.onnx';
const META_FILE = 'meta.json';

/** `file://.local/models` (relative to the working directory) or `file:///abs/dir`. */
export function localRootFromUrl(url: string): string {
  const path = decodeURIComponent(url.replace(/^file:\/\//, ''));
  return resolve(path === '' ? '.' : path);
}

export class LocalModelRegistry implements ModelRegistry {
  readonly kind = 'local';
  readonly #dir: string;
  readonly #versionsDir: string;
  readonly #log: Logger;
  readonly #lockTimeoutMs: number;
  readonly #staleLockMs: number;

  constructor(options: LocalRegistryOptions) {
    if (!/^[A-Za-z0-9._-]+$/.test(options.modelName) || options.modelName.startsWith('.')) {
      throw new RegistryError(
        REGISTRY_ERRORS.badInput,
        `model name "${options.modelName}" must be letters, digits, '.', '_' or '-'`,
      );
    }
    this.#dir = join(options.root, options.modelName);
    this.#versionsDir = join(this.#dir, 'versions');
    this.#log = options.log.child({ component: 'registry-local', dir: this.#dir });
    this.#lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    this.#staleLockMs = options.staleLockMs ?? 60_000;
  }

  async register(input: RegisterInput): Promise<{ version: string }> {
    checkRegisterInput(input);
    const source = await stat(input.onnxPath).catch((err: unknown) => {
      throw new RegistryError(REGISTRY_ERRORS.badInput, `cannot read ${input.onnxPath}`, {
        cause: err,
      });
    });
    if (!source.isFile()) {
      throw new RegistryError(REGISTRY_ERRORS.badInput, `${input.onnxPath} is not a file`);
    }
    await mkdir(this.#versionsDir, { recursive: true });
    const { version, dir } = await this.#claimVersion();
    try {
      await atomicCopy(input.onnxPath, join(dir, MODEL_FILE));
      const sha256 = await sha256File(join(dir, MODEL_FILE));
      const meta: Meta = {
        version,
        metrics: { ...input.metrics },
        params: stringifyParams(input.params),
        tags: { ...input.tags },
        createdMs: Date.now(),
        sha256,
        bytes: source.size,
      };
      await atomicWrite(join(dir, META_FILE), JSON.stringify(meta, null, 2) + '\n');
      this.#log.info({ version, metrics: meta.metrics }, 'model version registered');
      return { version };
    } catch (err) {
      // Leave the claimed (empty) number behind: reusing it could hand one number to two models.
      await rm(join(dir, MODEL_FILE), { force: true }).catch(() => undefined);
      throw err;
    }
  }

  async champion(): Promise<Champion | null> {
    const version = (await this.#aliases())[CHAMPION_ALIAS];
    if (version === undefined) return null;
    const meta = await this.#meta(version);
    const onnxPath = join(this.#versionsDir, version, MODEL_FILE);
    const size = await stat(onnxPath).then(
      (s) => s.size,
      () => -1,
    );
    if (size !== meta.bytes) {
      throw new RegistryError(
        REGISTRY_ERRORS.corrupt,
        `champion ${version}: ${onnxPath} has ${size} bytes, ${meta.bytes} were registered`,
      );
    }
    return { version, metrics: meta.metrics, onnxPath };
  }

  async setChampion(version: string): Promise<void> {
    await this.#meta(version); // must exist
    await this.#withLock(async () => {
      const aliases = await this.#aliases();
      aliases[CHAMPION_ALIAS] = version;
      await this.#writeAliases(aliases);
    });
    this.#log.info({ version }, 'champion set');
  }

  async retireChampion(version: string): Promise<boolean> {
    const removed = await this.#withLock(async () => {
      const aliases = await this.#aliases();
      if (aliases[CHAMPION_ALIAS] !== version) return false;
      delete aliases[CHAMPION_ALIAS];
      await this.#writeAliases(aliases);
      return true;
    });
    if (removed) this.#log.info({ version }, 'champion retired');
    return removed;
  }

  async versions(): Promise<ModelVersion[]> {
    const names = await readdir(this.#versionsDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const aliases = await this.#aliases();
    const out: ModelVersion[] = [];
    for (const name of names.filter((n) => /^[1-9][0-9]*$/.test(n))) {
      const meta = await this.#meta(name).catch(() => null);
      if (meta === null) continue; // a registration in progress or one that died half-way
      out.push({
        version: meta.version,
        metrics: meta.metrics,
        params: meta.params,
        tags: meta.tags,
        createdMs: meta.createdMs,
        aliases: Object.keys(aliases).filter((a) => aliases[a] === meta.version),
      });
    }
    return out.sort((a, b) => Number(a.version) - Number(b.version));
  }

  async promoteIfBetter(
    version: string,
    metrics: Record<string, number>,
    options: PromoteOptions,
  ): Promise<PromoteResult> {
    await this.#meta(version); // must exist
    const result = await this.#withLock(async () => {
      const aliases = await this.#aliases();
      const current = aliases[CHAMPION_ALIAS];
      const champion =
        current === undefined
          ? null
          : { version: current, metrics: (await this.#meta(current)).metrics };
      const decision = decidePromotion({ version, metrics }, champion, options);
      if (decision.promoted) {
        aliases[CHAMPION_ALIAS] = version;
        await this.#writeAliases(aliases);
      }
      return decision;
    });
    this.#log.info({ version, ...result }, 'champion gate');
    return result;
  }

  async close(): Promise<void> {}

  /** Claims the next free number with an exclusive mkdir; retries past numbers others won. */
  async #claimVersion(): Promise<{ version: string; dir: string }> {
    const names = await readdir(this.#versionsDir);
    let n = names.reduce((max, name) => Math.max(max, /^\d+$/.test(name) ? Number(name) : 0), 0);
    for (;;) {
      n += 1;
      const dir = join(this.#versionsDir, String(n));
      try {
        await mkdir(dir);
        return { version: String(n), dir };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
  }

  async #meta(version: string): Promise<Meta> {
    if (!/^[1-9][0-9]*$/.test(version)) {
      throw new RegistryError(REGISTRY_ERRORS.versionNotFound, `no version "${version}"`);
    }
    let text: string;
    try {
      text = await readFile(join(this.#versionsDir, version, META_FILE), 'utf8');
    } catch (err) {
      throw new RegistryError(REGISTRY_ERRORS.versionNotFound, `no version ${version}`, {
        cause: err,
      });
    }
    try {
      return JSON.parse(text) as Meta;
    } catch (err) {
      throw new RegistryError(REGISTRY_ERRORS.corrupt, `meta.json of ${version} is not JSON`, {
        cause: err,
      });
    }
  }

  async #aliases(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await readFile(join(this.#dir, 'aliases.json'), 'utf8')) as Record<
        string,
        string
      >;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new RegistryError(REGISTRY_ERRORS.corrupt, 'aliases.json is unreadable', {
        cause: err,
      });
    }
  }

  async #writeAliases(aliases: Record<string, string>): Promise<void> {
    await atomicWrite(join(this.#dir, 'aliases.json'), JSON.stringify(aliases, null, 2) + '\n');
  }

  /**
   * Runs `fn` holding `<model>/.lock`, created with O_EXCL (`wx`). Waits with a short poll; a
   * lock older than `staleLockMs` belonged to a process that died holding it and is removed.
   */
  async #withLock<T>(fn: () => Promise<T>): Promise<T> {
    await mkdir(this.#dir, { recursive: true });
    const lock = join(this.#dir, '.lock');
    return withFileLock(lock, fn, {
      staleMs: this.#staleLockMs,
      timeoutMs: this.#lockTimeoutMs,
      onStale: (ageMs) =>
        this.#log.warn({ lock, ageMs: Math.round(ageMs) }, 'breaking a stale registry lock'),
      timeoutError: () =>
        new RegistryError(REGISTRY_ERRORS.locked, `${lock} is held by another process`),
    });
  }
}

function tempName(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

async function atomicWrite(path: string, text: string): Promise<void> {
  const tmp = tempName(path);
  const handle = await open(tmp, 'wx');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}

async function atomicCopy(from: string, to: string): Promise<void> {
  const tmp = tempName(to);
  await copyFile(from, tmp);
  const handle = await open(tmp, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, to);
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolvePromise(hash.digest('hex')));
  });
}
