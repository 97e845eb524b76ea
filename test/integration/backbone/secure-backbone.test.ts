/**
 * The secure backbone (RECSYS_SECURE_BACKBONE=1, issue 16 item 6) as `deploy/local` starts it:
 * its own Kafka (SASL/SCRAM, ACLs) and Redis (ACL users) on spare ports in a private directory,
 * beside the plain stack `npm test` runs (whose registry and Mosquitto this test shares: neither
 * stores anything in Kafka or Redis). Proved with the real clients: redis-cli and kcat without
 * credentials are refused, and an event published with mosquitto_pub goes through the bridge
 * into Kafka with SCRAM, through the features role into Redis as the ACL user, and into the feed
 * that serving answers. The stack is stopped and its directory removed afterwards.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../../../core/config.js';
import { sleep } from '../../../core/retry.js';
import { mintToken } from '../../../core/auth.js';
import { CatalogStore } from '../../../store/catalog.js';
import { COUNT_FIELDS, USER_FIELDS, userFeaturesKey } from '../../../store/keys.js';
import { TrendingStore } from '../../../store/trending.js';
import type { UserEvent } from '../../../schemas/types.js';
import {
  addMqttUser,
  AvroReader,
  freePort,
  mosquittoPub,
  parseKcat,
  purgeMqttSession,
  validEvent,
} from '../ingest/bridge-process.js';
import {
  CLI,
  kcatArgs,
  productEnv,
  requireServices,
  run,
  runBytes,
  testKafka,
  uniq,
} from '../harness.js';

/** Two free consecutive ports: Kafka's broker and its controller (broker + 1). */
async function freePortPair(): Promise<number> {
  const free = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  for (let i = 0; i < 50; i++) {
    const port = await freePort();
    if (port < 65535 && (await free(port + 1))) return port;
  }
  throw new Error('no two consecutive free ports');
}

async function startChild(
  args: string[],
  env: NodeJS.ProcessEnv,
  url: string,
): Promise<ChildProcess> {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8000)));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${args[0]} exited ${child.exitCode}: ${err}`);
    if (
      await fetch(url).then(
        (r) => r.status === 200,
        () => false,
      )
    )
      return child;
    if (Date.now() > deadline) throw new Error(`${args[0]} not ready in 60 s: ${err}`);
    await sleep(200);
  }
}

describe('secure backbone: Redis ACL users, Kafka SASL/SCRAM', { timeout: 300_000 }, () => {
  let dir = '';
  /** The environment deploy/local runs with (its own directory and ports, secure). */
  let stackEnv: NodeJS.ProcessEnv = {};
  /** The application's logins as `credentials` prints them. */
  const login: Record<string, string> = {};
  let secure: Readonly<Config>;
  let broker = '';
  let redisPort = 0;
  const children: ChildProcess[] = [];
  const bridgeId = uniq('secbb');

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'secure-backbone-'));
    const kafkaPort = await freePortPair();
    redisPort = await freePort();
    broker = `127.0.0.1:${kafkaPort}`;
    stackEnv = {
      ...process.env,
      RECSYS_LOCAL_DIR: dir,
      RECSYS_SECURE_BACKBONE: '1',
      RECSYS_KAFKA_BROKERS: broker,
      RECSYS_REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      RECSYS_KAFKA_SASL_MECHANISM: '',
      RECSYS_KAFKA_USERNAME: '',
      RECSYS_KAFKA_PASSWORD: '',
    };
    const up = await run('node', [CLI, 'up', 'kafka', 'redis'], {
      env: stackEnv,
      timeoutMs: 240_000,
    });
    assert.equal(up.code, 0, `deploy/local up failed:\n${up.stdout}\n${up.stderr}`);
    const printed = await run('node', [CLI, 'credentials'], { env: stackEnv });
    for (const m of printed.stdout.matchAll(/^export (\w+)='([^']*)'$/gm)) {
      login[m[1] as string] = m[2] as string;
    }
    secure = loadConfig({ ...stackEnv, ...login });
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await purgeMqttSession(`${bridgeId}-bridge`).catch(() => undefined);
    for (const topic of [`${bridgeId}.events`, `${bridgeId}.dlq`]) {
      const subject = `${loadConfig(process.env).registry.url}/subjects/${topic}-value`;
      for (const url of [subject, `${subject}?permanent=true`])
        await fetch(url, { method: 'DELETE' }).catch(() => undefined);
    }
    if (dir) {
      const down = await run('node', [CLI, 'down', 'kafka', 'redis'], { env: stackEnv });
      assert.equal(down.code, 0, down.stderr);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps the credentials in .local/secrets (0600), off the command lines', async () => {
    assert.equal(login.RECSYS_KAFKA_SASL_MECHANISM, 'scram-sha-256');
    assert.equal(login.RECSYS_KAFKA_USERNAME, 'recsys');
    assert.match(login.RECSYS_REDIS_URL ?? '', /^redis:\/\/recsys:[\w-]{40,}@127\.0\.0\.1:\d+$/);
    const secrets = [
      'kafka-password',
      'kafka-admin-password',
      'redis-password',
      'redis-admin-password',
    ];
    const values: string[] = [];
    for (const name of secrets) {
      const file = join(dir, 'secrets', name);
      assert.equal((await stat(file)).mode & 0o777, 0o600, `${name} mode`);
      values.push((await readFile(file, 'utf8')).trim());
    }
    for (const file of ['conf/kafka/server.properties', 'conf/redis/users.acl'])
      assert.equal((await stat(join(dir, file))).mode & 0o777, 0o600, `${file} mode`);
    for (const service of ['kafka', 'redis']) {
      const { pid } = JSON.parse(await readFile(join(dir, 'run', `${service}.pid`), 'utf8')) as {
        pid: number;
      };
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
      for (const v of values)
        assert.ok(!cmdline.includes(v), `a password on ${service}'s command line`);
    }
  });

  it('refuses redis-cli without the password (NOAUTH) and the app account admin commands', async () => {
    const base = ['-h', '127.0.0.1', '-p', String(redisPort)];
    const anonymous = await run('redis-cli', [...base, 'GET', 'anything']);
    assert.match(anonymous.stdout, /^NOAUTH Authentication required/);
    const wrong = await run('redis-cli', [
      ...base,
      '--user',
      'recsys',
      '--pass',
      'wrong',
      '--no-auth-warning',
      'PING',
    ]);
    assert.match(wrong.stderr + wrong.stdout, /WRONGPASS/);
    const app = ['-u', login.RECSYS_REDIS_URL as string, '--no-auth-warning'];
    assert.equal((await run('redis-cli', [...app, 'ACL', 'WHOAMI'])).stdout.trim(), 'recsys');
    assert.match(
      (await run('redis-cli', [...app, 'CONFIG', 'GET', 'maxmemory'])).stdout,
      /^NOPERM/,
    );
    assert.match((await run('redis-cli', [...app, 'FLUSHALL'])).stdout, /^NOPERM/);
  });

  it('refuses kcat without SASL credentials or with a wrong password, and the app account ACL changes', async () => {
    const wrongPassword = kcatArgs({
      ...secure,
      kafka: { ...secure.kafka, sasl: { ...secure.kafka.sasl!, password: 'wrong' } },
    });
    // The controller listener (broker port + 1) takes no client account either.
    const controller = `127.0.0.1:${Number(broker.split(':')[1]) + 1}`;
    const kcatL = (args: string[]) =>
      run('kcat', [...args, '-L', '-m', '3'], { timeoutMs: 20_000 });
    const [plain, wrong, ctl] = await Promise.all([
      kcatL(['-b', broker]),
      kcatL(wrongPassword),
      kcatL(kcatArgs(secure).map((a) => (a === broker ? controller : a))),
    ]);
    assert.notEqual(plain.code, 0, `kcat without SASL listed the broker:\n${plain.stdout}`);
    assert.match(plain.stderr, /Failed to acquire metadata/);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /Authentication failed/);
    assert.notEqual(ctl.code, 0, 'the controller listener took the app account');
    const ok = await run('kcat', [...kcatArgs(secure), '-L', '-J', '-m', '10'], {
      timeoutMs: 20_000,
    });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((JSON.parse(ok.stdout) as { brokers: unknown[] }).brokers.length, 1);
    // Authenticated is not all-powerful: the app account cannot grant itself more.
    const admin = testKafka('secure-test', secure).admin();
    await admin.connect();
    try {
      await assert.rejects(
        admin.createAcls({
          acl: [
            {
              resourceType: 4, // CLUSTER
              resourceName: 'kafka-cluster',
              resourcePatternType: 3, // LITERAL
              principal: 'User:recsys',
              host: '*',
              operation: 2, // ALL
              permissionType: 3, // ALLOW
            },
          ],
        }),
        /authoriz/i,
      );
    } finally {
      await admin.disconnect();
    }
  });

  it('carries an MQTT event through the bridge, Kafka (SCRAM), the features role, Redis (ACL) into the feed', async (t) => {
    if (!(await requireServices(t, 'registry', 'mosquitto'))) return;
    const env = productEnv(dir, bridgeId, 0, {
      ...login,
      RECSYS_KAFKA_BROKERS: broker,
      RECSYS_TOPIC_PARTITIONS: '2',
    });
    const config = loadConfig(env);
    // A catalog and trending counts, written as the application (it-1 trends most).
    const redis = new Redis(config.redis.url, { maxRetriesPerRequest: 2 });
    try {
      await new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 }).upsert(
        Array.from({ length: 6 }, (_, i) => ({
          itemId: `it-${i + 1}`,
          categoryL1: `c${i % 2}`,
          categoryL2: null,
          price: 10 + i,
          isAvailable: true,
          createdAt: Date.now() - 86_400_000,
        })),
      );
      await new TrendingStore(redis, config.trending).apply(
        'secure-test',
        0,
        [1, 2, 3].flatMap((n) =>
          Array.from({ length: 7 - 2 * n }, (_, k) => ({
            itemId: `it-${n}`,
            category: `c${(n - 1) % 2}`,
            ts: Date.now(),
            offset: String(n * 10 + k),
          })),
        ),
      );
    } finally {
      redis.disconnect();
    }

    const streamPort = await freePort();
    const servePort = await freePort();
    children.push(
      await startChild(
        [join(process.cwd(), 'dist/stream/main.js'), 'ingest', 'features'],
        { ...env, RECSYS_HTTP_PORT: String(streamPort) },
        `http://127.0.0.1:${streamPort}/readyz`,
      ),
    );
    children.push(
      await startChild(
        [join(process.cwd(), 'dist/serving/main.js')],
        { ...env, RECSYS_HTTP_PORT: String(servePort) },
        `http://127.0.0.1:${servePort}/healthz`,
      ),
    );

    const user = uniq('secu').replace(/[^A-Za-z0-9_.:@-]/g, '');
    const token = await mintToken(config.serving, user, 600);
    const feedItems = async (): Promise<string[]> => {
      const res = await fetch(`http://127.0.0.1:${servePort}/v1/users/${user}/feed?limit=5`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 200, await res.clone().text());
      return ((await res.json()) as { items: { itemId: string }[] }).items.map((i) => i.itemId);
    };
    assert.ok((await feedItems()).includes('it-1'), 'the most trending item is in the feed');

    await addMqttUser(user, 'pw-secure');
    const event = validEvent(user, { itemId: 'it-1', type: 'purchase' });
    const pub = await mosquittoPub(JSON.stringify(event), {
      username: user,
      password: 'pw-secure',
    });
    assert.equal(pub.code, 0, pub.stderr);

    // Serving drops the purchased item once the features role has recorded it.
    const deadline = Date.now() + 20_000;
    let items = await feedItems();
    while (items.includes('it-1') && Date.now() < deadline) {
      await sleep(250);
      items = await feedItems();
    }
    assert.ok(!items.includes('it-1'), `it-1 still in the feed: ${items.join(' ')}`);

    // kcat with the SCRAM account reads the record the bridge wrote.
    const read = await runBytes(
      'kcat',
      [
        ...kcatArgs(config),
        '-C',
        '-t',
        config.kafka.topics.events,
        '-o',
        'beginning',
        '-e',
        '-q',
      ].concat(['-f', '%p %o %K %S\\n%k%s\\n']),
      { timeoutMs: 30_000 },
    );
    assert.equal(read.code, 0, read.stderr);
    const mine = parseKcat(read.stdout).filter((r) => r.key?.toString() === user);
    assert.equal(mine.length, 1);
    const decoded = await new AvroReader().decode<UserEvent>(mine[0]?.value as Buffer);
    assert.equal(decoded.eventId, event.eventId);

    // redis-cli as the application reads the features; the writers logged in as `recsys`.
    const cli = ['-u', config.redis.url, '--no-auth-warning'];
    const key = userFeaturesKey(user);
    assert.equal(
      (await run('redis-cli', [...cli, 'HGET', key, COUNT_FIELDS.purchase])).stdout.trim(),
      '1',
    );
    assert.equal(
      (await run('redis-cli', [...cli, 'HGET', key, USER_FIELDS.consumed])).stdout.trim(),
      'it-1',
    );
    const adminUrl = config.redis.url.replace(
      /^redis:\/\/recsys:[^@]+@/,
      `redis://admin:${(await readFile(join(dir, 'secrets', 'redis-admin-password'), 'utf8')).trim()}@`,
    );
    const clients = (
      await run('redis-cli', ['-u', adminUrl, '--no-auth-warning', 'CLIENT', 'LIST'])
    ).stdout;
    const named = clients.split('\n').filter((l) => / name=recsys-(features|serving)/.test(l));
    assert.ok(
      named.some((l) => / name=recsys-features /.test(l)),
      clients,
    );
    for (const line of named) assert.match(line, / user=recsys /);
  });
});
