/**
 * `npm run up`: the whole product on this machine in one command. It starts the backbone and
 * Prometheus with Alertmanager, then
 * the stream process (the ingest bridge and every stream role); when no batch output is live
 * (a fresh stack) it runs the batch once over a small generated demo catalog and history, which
 * publishes candidates and registers the first model; then it starts the feed server and waits
 * until it is ready, and prints the live page's URL with a token (in the fragment, which the
 * browser never sends), and how to publish an event that changes the feed. `npm run down` stops it all.
 *
 * `npm run up -- --profile cluster` does the same on the cluster profile (`profile.ts`): 3 Kafka
 * brokers and a Redis Cluster in place of one each, the Redis Cluster formed, and the product's
 * processes (and the first batch) given the profile's variables (`cluster-env`).
 */
import { spawn } from 'node:child_process';
import { join, relative } from 'node:path';
import { createRedis } from '../../store/redis.js';
import { CandidateStore } from '../../store/candidates.js';
import { mintToken } from '../../core/auth.js';
import { canConnectMqtt } from '../../stream/index.js';
import { userIdFromTopic } from '../../schemas/index.js';
import { loadConfig, sleep } from '../../core/index.js';
import { APP_PORTS } from './app.js';
import { localSecret, mqttUserSecret, secretPath } from './secrets.js';
import { backboneLoginEnv } from './secure.js';
import { isOurs, readPidFile } from './process.js';
import { prometheusPort } from './monitoring.js';
import { BACKBONE_NAMES, MONITOR_NAMES, type StackContext } from './service-def.js';
import { HEALTHCHECK_MQTT_USER, setMqttPassword } from './mosquitto.js';
import { servicePaths, up } from './stack.js';
import { clusterEnv, expandNames, type Profile } from './profile.js';
import { ensureRedisCluster } from './redis-cluster.js';

/** Events the demo history holds (some 10 s of batch on 2 cores). */
const DEMO_EVENTS = 200_000;
/** The user the printed page and commands are for (the generator's users are u0, u1, ...). */
const DEMO_USER = 'u1';

/**
 * Adds (or updates) an MQTT account and waits until Mosquitto accepts it: it re-reads its
 * password file on SIGHUP, a moment later.
 */
export async function addMqttUser(
  ctx: StackContext,
  username: string,
  password: string,
): Promise<void> {
  await setMqttPassword(ctx, username, password);
  const record = await readPidFile(servicePaths(ctx, 'mosquitto').pidFile);
  if (!record || !isOurs(record)) return;
  // Mosquitto reloads on SIGHUP; a signal that arrives while it reloads for another account is
  // lost (it clears its flag after the reload), so the signal is repeated until ours is in.
  // Each probe costs the broker a PBKDF2 hash (MQTT_HASH_ITERATIONS): patient, few probes.
  const deadline = Date.now() + 30_000;
  for (let attempt = 0; ; attempt++) {
    if (attempt % 8 === 0) process.kill(record.pid, 'SIGHUP');
    if (await canConnectMqtt(ctx.config.mqtt.url, username, password, 10_000)) return;
    if (Date.now() > deadline) {
      throw new Error(`mosquitto did not accept ${username} within 30 s of reloading`);
    }
    await sleep(250);
  }
}

/** A shell word for `path`: relative to the working directory when it lies inside it. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel.startsWith('..') ? path : rel;
}

/**
 * `mqtt-user <username> [password]`: a device account on the device listener. The username is
 * the userId (the ACL lets it publish to its own topic only); without a password, a random one
 * is made and kept in `.local/secrets/mqtt-user-<username>`. Returns how to publish with it.
 */
export async function addDeviceAccount(
  ctx: StackContext,
  username: string,
  password?: string,
): Promise<string> {
  const prefix = ctx.config.mqtt.topicPrefix;
  if (userIdFromTopic(`${prefix}/${username}`, prefix) !== username) {
    throw new Error(`"${username}" is not a userId, so it can be no device account`);
  }
  if (username === HEALTHCHECK_MQTT_USER || username === ctx.config.mqtt.username) {
    throw new Error(`"${username}" is an account of the stack itself`);
  }
  const secret = password ?? (await localSecret(ctx, mqttUserSecret(username)));
  await addMqttUser(ctx, username, secret);
  const mqtt = new URL(ctx.config.mqtt.url);
  const pass = password
    ? '<password>'
    : `"$(cat ${shown(secretPath(ctx, mqttUserSecret(username)))})"`;
  return [
    `device account ${username} set${password ? '' : `; its password: ${pass}`}`,
    `  mosquitto_pub -h ${mqtt.hostname} -p ${mqtt.port || 1883} -V mqttv5 -q 1 -u ${username} -P ${pass} -t ${prefix}/${username} -m '<event>'`,
  ].join('\n');
}

/** Runs `node dist/batch/main.js args...` with its output shown; rejects on a non-zero exit. */
function runBatch(ctx: StackContext, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ctx.root, 'dist/batch/main.js'), ...args], {
      cwd: ctx.root,
      env: { ...process.env, ...backboneLoginEnv(ctx.config) },
      stdio: 'inherit',
    });
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`batch exited with code ${code}`)),
    );
  });
}

/**
 * The context of the cluster profile's product: the Redis Cluster formed, and the profile's
 * variables in this process's environment, which every process it starts inherits (`app.ts`).
 */
async function onCluster(ctx: StackContext): Promise<StackContext> {
  console.log(`redis cluster ${await ensureRedisCluster(ctx)}; the product uses:`);
  const vars = clusterEnv(ctx);
  for (const [k, v] of Object.entries(vars)) console.log(`  ${k}=${v}`);
  Object.assign(process.env, vars);
  return { ...ctx, config: loadConfig(process.env) };
}

async function liveVersion(ctx: StackContext): Promise<number | null> {
  const redis = createRedis(ctx.config.redis.url, 'recsys-up');
  try {
    return await new CandidateStore(redis).currentVersion();
  } finally {
    redis.disconnect();
  }
}

export async function upProduct(base: StackContext, profile: Profile = 'single'): Promise<void> {
  const say = (line: string): void => console.log(line);
  const t0 = Date.now();
  say(
    `starting the backbone${profile === 'cluster' ? ' (cluster profile)' : ''} (first run installs it: some minutes) ...`,
  );
  await up(base, expandNames(profile, [...BACKBONE_NAMES, ...MONITOR_NAMES]));
  const ctx = profile === 'cluster' ? await onCluster(base) : base;
  say('starting the stream process (ingest bridge and stream roles) ...');
  await up(ctx, ['stream']);
  if ((await liveVersion(ctx)) === null) {
    say(`no batch output yet: a demo catalog and ${DEMO_EVENTS} events, then the batch ...`);
    await runBatch(ctx, ['--generate', String(DEMO_EVENTS)]);
  }
  say('starting the feed server (ready once a model is loaded and its caches are warm) ...');
  await up(ctx, ['serving']);
  await addDeviceAccount(ctx, DEMO_USER);
  const password = `"$(cat ${shown(secretPath(ctx, mqttUserSecret(DEMO_USER)))})"`;
  const token = await mintToken(ctx.config.serving, DEMO_USER, 86_400);
  const servingPort = APP_PORTS.serving(ctx);
  const topic = `${ctx.config.mqtt.topicPrefix}/${DEMO_USER}`;
  const mqtt = new URL(ctx.config.mqtt.url);
  say(`
The product runs (${((Date.now() - t0) / 1000).toFixed(0)} s).

  Live feed of ${DEMO_USER}:  http://127.0.0.1:${servingPort}/#token=${token}

Publish an event for ${DEMO_USER}; the page shows a new feed within a moment:

  mosquitto_pub -h ${mqtt.hostname} -p ${mqtt.port || 1883} -V mqttv5 -q 1 -u ${DEMO_USER} -P ${password} -t ${topic} \\
    -m '{"eventId":"'$(cat /proc/sys/kernel/random/uuid)'","userId":"${DEMO_USER}","itemId":"i42","type":"purchase","ts":'$(date +%s%3N)'}'

or over HTTP (the local service token; or the user's own token):
  curl -s -XPOST localhost:${APP_PORTS.stream(ctx)}/v1/events -H 'content-type: application/json' \
    -H "authorization: Bearer $(cat ${shown(secretPath(ctx, 'ingest-token'))})" -d '[{...}]'

A token for any user:  npm run -s token -- <userId>
The feed as JSON:      curl -s -H "authorization: Bearer $(npm run -s token -- ${DEMO_USER})" localhost:${servingPort}/v1/users/${DEMO_USER}/feed
A device account:      npm run stack -- mqtt-user <userId>   (its password goes to .local/secrets/)
Prometheus:            http://127.0.0.1:${prometheusPort(ctx)}/targets (alerts: /alerts)
Status and stop:       npm run stack -- status; npm run down${
    profile === 'cluster'
      ? `
Cluster profile:       for your own commands: eval "$(npm run -s stack -- cluster-env)"`
      : ''
  }
`);
}
