/**
 * Published secrets stop the real processes (issue 16 item 2): each entry point, started as
 * `npm` starts it but with one secret left at its published development default or set to a
 * change-me placeholder, exits at once with RECSYS_CONFIG_PUBLISHED_SECRET naming the variable;
 * with RECSYS_ENV=development the defaults are accepted (a token minted with the default secret
 * verifies with it). deploy/local's CLI makes the per-machine secrets of a fresh local folder
 * (directory 0700, files 0600) and its device accounts' passwords, which mosquitto_pub uses.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { TokenVerifier } from '../../../core/auth.js';
import { loadConfig } from '../../../core/config.js';
import { VARIABLES } from '../../../core/config-variables.js';
import { LOCAL_SECRET_FILES, mqttUserSecret } from '../../../deploy/local/secrets.js';
import { CLI, config, requireServices, run, uniq } from '../harness.js';

const node = process.execPath;
const dist = (script: string): string => join(process.cwd(), 'dist', script);
const DEFAULTS = Object.fromEntries(VARIABLES.map((v) => [v.name, v.default]));

/** The test run's environment (secrets from the stack) without RECSYS_ENV, with `changes`. */
function envWith(changes: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, RECSYS_LOG_LEVEL: 'warn' };
  delete env.RECSYS_ENV;
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

describe('published secrets', () => {
  const entries: [string, string[]][] = [
    ['stream', [dist('stream/main.js'), 'ingest']],
    ['serving', [dist('serving/main.js')]],
    ['batch --serve', [dist('batch/main.js'), '--serve']],
    ['token', [dist('serving/token-cli.js'), 'alice']],
    ['catalog', [dist('stream/catalog-cli.js'), 'load', '/nonexistent']],
  ];
  const cases: [string, Record<string, string | undefined>][] = [
    ['RECSYS_JWT_SECRET', { RECSYS_JWT_SECRET: undefined }],
    ['RECSYS_MQTT_PASSWORD', { RECSYS_MQTT_PASSWORD: DEFAULTS.RECSYS_MQTT_PASSWORD }],
    ['RECSYS_RETRAIN_TOKEN', { RECSYS_RETRAIN_TOKEN: 'change-me' }],
    ['RECSYS_INGEST_TOKENS', { RECSYS_INGEST_TOKENS: 'change-me-to-24-or-more-random-characters' }],
  ];

  test(
    'every entry point refuses a published secret, naming it',
    { timeout: 120_000 },
    async () => {
      // The secrets the run has are the stack's own (harness): the control starts the config.
      assert.equal(loadConfig(envWith({})).environment, 'production');
      for (const [name, args] of entries) {
        for (const [variable, changes] of cases) {
          const res = await run(node, args, { env: envWith(changes), timeoutMs: 30_000 });
          assert.equal(res.code, 1, `${name} with a published ${variable}: exit ${res.code}`);
          assert.match(
            res.stderr,
            new RegExp(`RECSYS_CONFIG_PUBLISHED_SECRET: ${variable}: `),
            `${name}: ${res.stderr}`,
          );
          assert.doesNotMatch(res.stderr, /\n\s+at /, `${name}: a stack trace instead of a line`);
        }
      }
    },
  );

  test('RECSYS_ENV=development accepts the development defaults', { timeout: 60_000 }, async () => {
    const env = envWith({ RECSYS_ENV: 'development', RECSYS_JWT_SECRET: undefined });
    const res = await run(node, [dist('serving/token-cli.js'), 'alice'], { env });
    assert.equal(res.code, 0, res.stderr);
    const verifier = new TokenVerifier({
      jwtSecret: DEFAULTS.RECSYS_JWT_SECRET as string,
      jwtIssuer: config.serving.jwtIssuer,
    });
    assert.equal((await verifier.verify(res.stdout.trim())).userId, 'alice');
    // Not with the stack's secret: the default signed it.
    await assert.rejects(new TokenVerifier(config.serving).verify(res.stdout.trim()));
  });
});

describe("deploy/local's secrets", () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test('the CLI makes per-machine secrets, private, and passes them on', async () => {
    const localDir = await mkdtemp(join(tmpdir(), 'local-secrets-'));
    dirs.push(localDir);
    // `status` of one service builds the stack context: the secrets exist after it.
    const env = envWith({ RECSYS_LOCAL_DIR: localDir });
    for (const v of Object.keys(LOCAL_SECRET_FILES)) delete env[v];
    await run(node, [CLI, 'status', 'redis'], { env, timeoutMs: 30_000 });
    assert.equal((await stat(join(localDir, 'secrets'))).mode & 0o777, 0o700);
    const values = new Set<string>();
    for (const [variable, file] of Object.entries(LOCAL_SECRET_FILES)) {
      const path = join(localDir, 'secrets', file);
      assert.equal((await stat(path)).mode & 0o777, 0o600, `${file}: mode`);
      const value = (await readFile(path, 'utf8')).trim();
      assert.ok(value.length >= 40, `${file}: ${value.length} characters`);
      assert.notEqual(value, DEFAULTS[variable], `${file}: a published value`);
      values.add(value);
    }
    assert.equal(values.size, Object.keys(LOCAL_SECRET_FILES).length, 'one value per secret');
    // The npm scripts' launcher hands them to the process: a token verifies with the file's.
    const token = await run(
      node,
      [dist('deploy/local/with-secrets.js'), dist('serving/token-cli.js'), 'bob'],
      { env },
    );
    assert.equal(token.code, 0, token.stderr);
    const jwtSecret = (await readFile(join(localDir, 'secrets', 'jwt-secret'), 'utf8')).trim();
    const verifier = new TokenVerifier({ jwtSecret, jwtIssuer: config.serving.jwtIssuer });
    assert.equal((await verifier.verify(token.stdout.trim())).userId, 'bob');
  });

  test('mqtt-user without a password makes one and mosquitto_pub publishes with it', async (t) => {
    if (!(await requireServices(t, 'mosquitto'))) return;
    const user = uniq('dev');
    const res = await run(node, [CLI, 'mqtt-user', user], { timeoutMs: 30_000 });
    assert.equal(res.code, 0, res.stderr);
    const file = join(config.local.dir, 'secrets', mqttUserSecret(user));
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.ok(res.stdout.includes(`$(cat ${relative(process.cwd(), file)})`), res.stdout);
    const password = (await readFile(file, 'utf8')).trim();
    const { hostname, port } = new URL(config.mqtt.url);
    const pub = await run('mosquitto_pub', [
      ...['-h', hostname, '-p', port || '1883', '-V', 'mqttv5', '-q', '1'],
      ...['-u', user, '-P', password, '-t', `${config.mqtt.topicPrefix}/${user}`, '-m', '{}'],
    ]);
    assert.equal(pub.code, 0, pub.stderr);
    const wrong = await run('mosquitto_pub', [
      ...['-h', hostname, '-p', port || '1883', '-V', 'mqttv5', '-q', '1'],
      ...['-u', user, '-P', `${password}x`, '-t', `${config.mqtt.topicPrefix}/${user}`, '-m', '{}'],
    ]);
    assert.notEqual(wrong.code, 0, 'a wrong password was accepted');
    // Names that are no userId, or the stack's own accounts, are refused.
    for (const bad of ['a/b', config.mqtt.username, 'healthcheck']) {
      const refused = await run(node, [CLI, 'mqtt-user', bad], { timeoutMs: 30_000 });
      assert.notEqual(refused.code, 0, `mqtt-user ${bad} was accepted`);
    }
  });
});
