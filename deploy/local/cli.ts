/**
 * deploy/local: the backbone without Docker.
 *
 *   node dist/deploy/local/cli.js up [service...] [--started-file F]
 *   node dist/deploy/local/cli.js down [service...]
 *   node dist/deploy/local/cli.js status
 *   node dist/deploy/local/cli.js product    (`npm run up`: the whole product, see product.ts)
 *   node dist/deploy/local/cli.js mqtt-user <username> [password]   (a device account)
 *   node dist/deploy/local/cli.js credentials  (the secure backbone's logins as `export` lines)
 *   node dist/deploy/local/cli.js env        (every variable with its default)
 *   node dist/deploy/local/cli.js errors     (every error code, as docs/errors.md's table)
 *
 * Services: kafka, registry, redis, mosquitto, elasticsearch, prometheus, alertmanager (default:
 * RECSYS_LOCAL_SERVICES), and the product's processes stream and serving (`app.ts`).
 * Downloads are cached in RECSYS_CACHE_DIR; data, logs and pid files go to RECSYS_LOCAL_DIR.
 * Secrets the caller does not set come from RECSYS_LOCAL_DIR/secrets/ (`secrets.ts`), made on
 * first use; the processes `up` starts inherit them.
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, ERROR_CODES, loadConfig, VARIABLES } from '../../core/index.js';
import { APP_NAMES, SERVICE_NAMES, type ServiceName, type StackContext } from './service-def.js';
import { addDeviceAccount, upProduct } from './product.js';
import { applyLocalSecrets } from './secrets.js';
import { down, running, status, up } from './stack.js';
import { backboneCredentials, backboneLoginEnv, secretNames, withCredentials } from './secure.js';

function checkoutRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the checkout root (package.json)');
    dir = parent;
  }
  return dir;
}

function pickServices(args: string[], defaults: readonly string[]): ServiceName[] {
  const chosen = args.length > 0 ? args : defaults;
  for (const name of chosen) {
    if (!(SERVICE_NAMES as readonly string[]).includes(name)) {
      throw new Error(`unknown service "${name}"; known: ${SERVICE_NAMES.join(', ')}`);
    }
  }
  return chosen as ServiceName[];
}

async function main(argv: string[]): Promise<number> {
  const [command = 'status', ...rest] = argv;
  if (command === 'errors' || command === 'env') return printTable(command);
  const root = checkoutRoot();
  await applyLocalSecrets(root);
  const env = loadConfig(process.env);
  const log = createLogger(env.logLevel, 'deploy-local');
  const localDir = resolve(root, env.local.dir);
  // On the secure backbone every probe and process logs in as the application's accounts.
  const config = withCredentials(env, await backboneCredentials({ config: env, localDir }));
  const ctx: StackContext = {
    config,
    root,
    localDir,
    cacheDir: resolve(root, config.local.cacheDir),
    log,
  };
  const flags = new Map<string, string>();
  const positional: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] as string;
    if (arg.startsWith('--')) flags.set(arg.slice(2), rest[++i] ?? '');
    else positional.push(arg);
  }

  switch (command) {
    case 'up': {
      const names = pickServices(positional, config.local.services);
      const t0 = Date.now();
      const results = await up(ctx, names);
      const started = results.filter((r) => r.state === 'started').map((r) => r.name);
      const startedFile = flags.get('started-file');
      if (startedFile) await writeFile(startedFile, started.map((name) => `${name}\n`).join(''));
      for (const r of results)
        console.log(`${r.name.padEnd(14)} ${r.state.padEnd(8)} ready after ${r.readyMs} ms`);
      console.log(`all ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      return 0;
    }
    case 'down': {
      await down(ctx, pickServices(positional, SERVICE_NAMES));
      return 0;
    }
    case 'status': {
      // By default the backbone, and the product's processes when they run.
      const apps = positional.length > 0 ? [] : await running(ctx, APP_NAMES);
      const rows = await status(ctx, [...pickServices(positional, config.local.services), ...apps]);
      for (const r of rows) {
        const rss = r.rssBytes ? `${(r.rssBytes / 2 ** 20).toFixed(0)} MiB RSS` : '';
        const who = r.ours ? `pid ${r.pid}` : r.ready ? 'external' : 'stopped';
        console.log(
          `${r.name.padEnd(14)} ${(r.ready ? 'ready' : 'DOWN').padEnd(6)} :${String(r.port).padEnd(6)} ${who.padEnd(12)} ${rss.padEnd(14)} (${r.memory})`,
        );
      }
      return rows.every((r) => r.ready) ? 0 : 1;
    }
    case 'mqtt-user': {
      const [username, password] = positional;
      if (!username) throw new Error('usage: mqtt-user <username> [password]');
      console.log(await addDeviceAccount(ctx, username, password));
      return 0;
    }
    case 'credentials': {
      // For a shell: eval "$(npm run -s stack -- credentials)" (the plain backbone: nothing).
      const quote = (v: string): string => `'${v.replaceAll("'", "'\\''")}'`;
      for (const [k, v] of Object.entries(backboneLoginEnv(config)))
        console.log(`export ${k}=${quote(v)}`);
      if (config.local.secureBackbone)
        console.log(
          `# admin passwords: ${secretNames.admin.map((n) => join(localDir, 'secrets', n)).join(' ')}`,
        );
      return 0;
    }
    case 'product': {
      await upProduct(ctx);
      return 0;
    }
    default:
      console.error(
        `unknown command "${command}"; use up, down, status, product, mqtt-user, credentials, env or errors`,
      );
      return 2;
  }
}

/** `errors` (docs/errors.md's table is this output) and `env`: no stack needed. */
function printTable(command: 'errors' | 'env'): number {
  if (command === 'env') {
    for (const v of VARIABLES) console.log(`${v.name}=${v.default}  # ${v.doc}`);
    return 0;
  }
  console.log('| code | HTTP status | retriable | meaning |\n| --- | ---: | :---: | --- |');
  for (const [code, info] of Object.entries(ERROR_CODES)) {
    console.log(
      `| \`${code}\` | ${info.status} | ${info.retriable ? 'yes' : 'no'} | ${info.doc} |`,
    );
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`deploy/local: ${err.message}`);
    process.exit(1);
  },
);
