/**
 * Mosquitto as `deploy/local` runs it: two listeners with their own accounts
 * (`per_listener_settings`). Devices connect to the device listener (RECSYS_MQTT_URL), where
 * `use_username_as_clientid` makes each client's id its username: a device can hold no other
 * client id, so it cannot take over the bridge's session or anyone else's. The bridge connects to
 * its own listener (RECSYS_MQTT_BRIDGE_URL, on loopback), whose password file holds the bridge
 * account alone. Passwords are hashed by mosquitto_passwd (PBKDF2-SHA512); the broker policy
 * shared with docker-compose is `deploy/mosquitto/conf.d`.
 */
import { connect } from 'node:net';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { withFileLock } from '../../core/index.js';
import { canConnectMqtt } from '../../stream/index.js';
import { sh } from './install.js';
import { localSecret } from './secrets.js';
import { dataDir, type ServiceDef, type StackContext } from './service-def.js';

/**
 * The account the readiness probes and the compose healthcheck log in with on the device
 * listener; it may only read `$SYS`. Its password is a local secret.
 */
export const HEALTHCHECK_MQTT_USER = 'healthcheck';
export const healthcheckMqttPassword = (ctx: Pick<StackContext, 'localDir'>): Promise<string> =>
  localSecret(ctx, 'mqtt-healthcheck-password');

function urlPort(url: string, fallback: number): number {
  const u = new URL(url);
  return u.port ? Number(u.port) : fallback;
}

/**
 * PBKDF2-HMAC-SHA512 iterations of the password hashes mosquitto_passwd writes (its `-I`; the
 * broker reads the count from each hash). mosquitto_passwd 2.0 uses 101, which makes a stolen
 * password file cheap to brute-force; 210,000 is OWASP's figure for PBKDF2-HMAC-SHA512. The
 * broker pays it once per CONNECT: about 0.2 s of its single thread on the 2-core development
 * machine (measured: 6 ms per mosquitto_pub at 101, 135 ms at 100,000, 225 ms at 210,000).
 */
export const MQTT_HASH_ITERATIONS = 210_000;

/** The device listener's accounts (devices, healthcheck) or the bridge listener's (the bridge). */
export type MqttListener = 'devices' | 'bridge';

const mosquittoConfDir = (ctx: Pick<StackContext, 'localDir'>): string =>
  join(ctx.localDir, 'conf', 'mosquitto');

function passwordFile(ctx: Pick<StackContext, 'localDir'>, listener: MqttListener): string {
  return join(mosquittoConfDir(ctx), listener === 'bridge' ? 'bridge-passwd' : 'passwd');
}

/** Runs `edit` on a password file under its lock: mosquitto_passwd rewrites it in place. */
async function withPasswordFile(
  ctx: Pick<StackContext, 'localDir'>,
  listener: MqttListener,
  edit: (file: string) => Promise<unknown>,
): Promise<void> {
  const file = passwordFile(ctx, listener);
  await mkdir(mosquittoConfDir(ctx), { recursive: true });
  if (!existsSync(file)) await writeFile(file, '', { mode: 0o600 });
  // Two mosquitto_passwd at once lose accounts.
  await withFileLock(`${file}.lock`, () => edit(file), { staleMs: 10_000, timeoutMs: 30_000 });
}

/** Adds or updates an MQTT account in a listener's password file (hashed by mosquitto_passwd). */
export async function setMqttPassword(
  ctx: Pick<StackContext, 'localDir'>,
  username: string,
  password: string,
  listener: MqttListener = 'devices',
): Promise<void> {
  await withPasswordFile(ctx, listener, (file) =>
    sh('mosquitto_passwd', ['-I', String(MQTT_HASH_ITERATIONS), '-b', file, username, password]),
  );
}

/** Removes an account from a listener's password file if it is there. */
async function dropMqttAccount(
  ctx: Pick<StackContext, 'localDir'>,
  username: string,
  listener: MqttListener,
): Promise<void> {
  await withPasswordFile(ctx, listener, async (file) => {
    const lines = (await readFile(file, 'utf8')).split('\n');
    const kept = lines.filter((l) => !l.startsWith(`${username}:`));
    if (kept.length !== lines.length) await writeFile(file, kept.join('\n'), { mode: 0o600 });
  });
}

/** Whether something accepts TCP connections at `url`'s host and port. */
function listening(url: string, timeoutMs: number): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port) || 1883 });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export const mosquitto: ServiceDef = {
  name: 'mosquitto',
  memory: 'no cap',
  port: (ctx) => urlPort(ctx.config.mqtt.url, 1883),
  async install() {
    // Debian package.
  },
  async prepare(ctx) {
    const confDir = mosquittoConfDir(ctx);
    const dir = dataDir(ctx, 'mosquitto');
    await mkdir(confDir, { recursive: true });
    await mkdir(dir, { recursive: true });
    const bridgeUser = ctx.config.mqtt.username;
    await setMqttPassword(ctx, bridgeUser, ctx.config.mqtt.password, 'bridge');
    // Stacks made before the bridge had its own listener kept its account with the devices'.
    await dropMqttAccount(ctx, bridgeUser, 'devices');
    await setMqttPassword(ctx, HEALTHCHECK_MQTT_USER, await healthcheckMqttPassword(ctx));
    // The ACLs are the ones docker-compose mounts, the bridge's with the configured account.
    const shipped = join(ctx.root, 'deploy', 'mosquitto');
    await cp(join(shipped, 'acl'), join(confDir, 'acl'));
    const bridgeAcl = (await readFile(join(shipped, 'bridge-acl'), 'utf8')).replace(
      /^user bridge$/m,
      `user ${bridgeUser}`,
    );
    await writeFile(join(confDir, 'bridge-acl'), bridgeAcl);
    // Broker policy is shared with docker-compose through deploy/mosquitto/conf.d; only the
    // listeners and file paths differ (as in deploy/mosquitto/compose.conf).
    const devices = new URL(ctx.config.mqtt.url);
    const bridge = new URL(ctx.config.mqtt.bridgeUrl);
    const conf = [
      '# generated by deploy/local; policy in deploy/mosquitto/conf.d',
      'per_listener_settings true',
      `persistence_location ${dir}/`,
      // Started as root, Mosquitto would switch to the `mosquitto` user, which may not be able
      // to read the checkout; keep the invoking user.
      'user root',
      '',
      '# Devices: the client id is the username.',
      `listener ${mosquitto.port(ctx)} ${devices.hostname}`,
      'use_username_as_clientid true',
      'allow_anonymous false',
      `password_file ${passwordFile(ctx, 'devices')}`,
      `acl_file ${join(confDir, 'acl')}`,
      '',
      '# The ingest bridge, alone.',
      `listener ${urlPort(ctx.config.mqtt.bridgeUrl, 1884)} ${bridge.hostname}`,
      'allow_anonymous false',
      `password_file ${passwordFile(ctx, 'bridge')}`,
      `acl_file ${join(confDir, 'bridge-acl')}`,
      '',
      `include_dir ${join(ctx.root, 'deploy', 'mosquitto', 'conf.d')}`,
      '',
    ].join('\n');
    const file = join(confDir, 'mosquitto.conf');
    await writeFile(file, conf);
    return { command: 'mosquitto', args: ['-c', file], marker: 'mosquitto' };
  },
  probe: async (ctx) =>
    (await canConnectMqtt(
      ctx.config.mqtt.url,
      HEALTHCHECK_MQTT_USER,
      await healthcheckMqttPassword(ctx),
      // The broker hashes the password first (MQTT_HASH_ITERATIONS): slow on a loaded machine.
      5000,
    )) && (await listening(ctx.config.mqtt.bridgeUrl, 1000)),
};
