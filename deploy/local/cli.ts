/**
 * deploy/local: the backbone without Docker.
 *
 *   node dist/deploy/local/cli.js up [service...] [--profile single|cluster] [--started-file F]
 *   node dist/deploy/local/cli.js down [service...] [--profile single|cluster]
 *   node dist/deploy/local/cli.js status [--profile single|cluster]
 *   node dist/deploy/local/cli.js help       (commands, services and ports of both profiles)
 *   node dist/deploy/local/cli.js cluster-env  (the cluster profile's variables as `export` lines)
 *   node dist/deploy/local/cli.js product [--profile cluster]   (`npm run up`: the whole product, see product.ts)
 *   node dist/deploy/local/cli.js mqtt-user <username> [password]   (a device account)
 *   node dist/deploy/local/cli.js credentials  (the secure backbone's logins as `export` lines)
 *   node dist/deploy/local/cli.js env        (every variable with its default)
 *   node dist/deploy/local/cli.js errors     (every error code, as docs/errors.md's table)
 *
 * Services: kafka, registry, redis, mosquitto, elasticsearch, prometheus, alertmanager (default:
 * RECSYS_LOCAL_SERVICES), and the product's processes stream and serving (`app.ts`). The cluster
 * profile (`profile.ts`) runs kafka-1..3 and redis-1..6 instead of kafka and redis.
 * Downloads are cached in RECSYS_CACHE_DIR; data, logs and pid files go to RECSYS_LOCAL_DIR.
 * Secrets the caller does not set come from RECSYS_LOCAL_DIR/secrets/ (`secrets.ts`), made on
 * first use; the processes `up` starts inherit them.
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, ERROR_CODES, loadConfig, VARIABLES } from '../../core/index.js';
import {
  APP_NAMES,
  KAFKA_NODE_NAMES,
  REDIS_NODE_NAMES,
  SERVICE_NAMES,
  type ServiceName,
  type StackContext,
} from './service-def.js';
import { addDeviceAccount, upProduct } from './product.js';
import {
  clusterEnv,
  clusterPorts,
  expandNames,
  parseProfile,
  type Profile,
  profileServices,
} from './profile.js';
import { describeRedisCluster, ensureRedisCluster, redisClusterState } from './redis-cluster.js';
import { applyLocalSecrets } from './secrets.js';
import { down, running, SERVICES, status, up } from './stack.js';
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

const HELP = `deploy/local: the stack without Docker (npm run stack -- <command>)

  up [service...] [--profile single|cluster] [--started-file F]
  down [service...] [--profile single|cluster]   (no names, no profile: everything)
  status [service...] [--profile single|cluster]
  product [--profile single|cluster]   the whole product (npm run up [-- --profile cluster])
  mqtt-user <username> [password]
  credentials             the secure backbone's logins as export lines
  cluster-env             the cluster profile's variables as export lines
  env | errors            every variable with its default | every error code

Profiles: single (the default) runs one Kafka broker and one Redis; cluster runs 3 Kafka
brokers (KRaft, each also a controller) and a Redis Cluster of 3 masters with a replica each in
their place, beside the same other services. In the cluster profile "kafka" and "redis" stand
for their nodes (kafka-1..3, redis-1..6).`;

/** Prints the command lines, the services and their ports in both profiles. */
function printHelp(ctx: StackContext): number {
  console.log(HELP);
  console.log('\nPorts (single profile; variables in `env`):');
  for (const name of ctx.config.local.services as ServiceName[])
    if (SERVICES[name]) console.log(`  ${name.padEnd(12)} :${SERVICES[name].port(ctx)}`);
  console.log('Ports (cluster profile, instead of kafka and redis):');
  for (const line of clusterPorts(ctx)) console.log(`  ${line}`);
  return 0;
}

function profileOf(flags: Map<string, string>, ctx: StackContext): Profile {
  const profile = parseProfile(flags.get('profile'));
  if (profile === 'cluster' && ctx.config.local.secureBackbone)
    throw new Error('the cluster profile runs a plain backbone; unset RECSYS_SECURE_BACKBONE');
  return profile;
}

/** The cluster profile's state after `up` or in `status`: the Redis Cluster and the exports. */
async function reportCluster(ctx: StackContext, form: boolean): Promise<boolean> {
  for (const line of clusterPorts(ctx)) console.log(line);
  let ok = true;
  const nodesUp = (await running(ctx, REDIS_NODE_NAMES)).length === REDIS_NODE_NAMES.length;
  if (form && nodesUp) {
    const outcome = await ensureRedisCluster(ctx);
    console.log(`redis cluster  ${outcome}`);
  }
  if (nodesUp) {
    const state = await redisClusterState(ctx);
    ok = state.state === 'ok';
    console.log(`redis cluster  ${describeRedisCluster(state)}`);
  } else {
    console.log('redis cluster  not all six nodes run');
  }
  console.log('use it with:   eval "$(npm run -s stack -- cluster-env)"');
  for (const [k, v] of Object.entries(clusterEnv(ctx))) console.log(`  ${k}=${v}`);
  return ok;
}

async function upCommand(
  ctx: StackContext,
  profile: Profile,
  positional: string[],
  flags: Map<string, string>,
): Promise<number> {
  const names =
    positional.length > 0 ? expandNames(profile, positional) : profileServices(ctx.config, profile);
  const t0 = Date.now();
  const results = await up(ctx, names);
  const started = results.filter((r) => r.state === 'started').map((r) => r.name);
  const startedFile = flags.get('started-file');
  if (startedFile) await writeFile(startedFile, started.map((name) => `${name}\n`).join(''));
  for (const r of results)
    console.log(`${r.name.padEnd(14)} ${r.state.padEnd(8)} ready after ${r.readyMs} ms`);
  if (profile === 'cluster')
    await reportCluster(
      ctx,
      names.some((n) => n.startsWith('redis-')),
    );
  console.log(`all ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return 0;
}

async function statusCommand(
  ctx: StackContext,
  profile: Profile,
  positional: string[],
): Promise<number> {
  // By default the profile's services, the cluster's nodes when they run, and the product's
  // processes when they run.
  const extra =
    positional.length > 0
      ? []
      : await running(ctx, [...APP_NAMES, ...KAFKA_NODE_NAMES, ...REDIS_NODE_NAMES]);
  const names = [
    ...new Set([
      ...(positional.length > 0
        ? expandNames(profile, positional)
        : profileServices(ctx.config, profile)),
      ...extra,
    ]),
  ];
  const rows = await status(ctx, names);
  for (const r of rows) {
    const rss = r.rssBytes ? `${(r.rssBytes / 2 ** 20).toFixed(0)} MiB RSS` : '';
    const who = r.ours ? `pid ${r.pid}` : r.ready ? 'external' : 'stopped';
    console.log(
      `${r.name.padEnd(14)} ${(r.ready ? 'ready' : 'DOWN').padEnd(6)} :${String(r.port).padEnd(6)} ${who.padEnd(12)} ${rss.padEnd(14)} (${r.memory})`,
    );
  }
  const clusterOk =
    profile === 'cluster' || names.some((n) => n.startsWith('redis-'))
      ? await reportCluster(ctx, false)
      : true;
  return rows.every((r) => r.ready) && clusterOk ? 0 : 1;
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
    case 'up':
      return upCommand(ctx, profileOf(flags, ctx), positional, flags);
    case 'down': {
      const profile = parseProfile(flags.get('profile'));
      const names =
        positional.length > 0
          ? expandNames(profile, positional)
          : flags.has('profile')
            ? profileServices(config, profile)
            : [...SERVICE_NAMES];
      await down(ctx, names);
      return 0;
    }
    case 'status':
      return statusCommand(ctx, parseProfile(flags.get('profile')), positional);
    case 'help':
    case '--help':
    case '-h':
      return printHelp(ctx);
    case 'cluster-env': {
      for (const [k, v] of Object.entries(clusterEnv(ctx))) console.log(`export ${k}='${v}'`);
      return 0;
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
      await upProduct(ctx, profileOf(flags, ctx));
      return 0;
    }
    default:
      console.error(`unknown command "${command}"\n\n${HELP}`);
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
