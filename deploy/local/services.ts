/**
 * The five backbone services as `deploy/local` runs them without Docker: how each is installed
 * into the shared cache, how it is configured and started on loopback, and how readiness is
 * probed. Ports and credentials come from the typed config, so the stack and the code that
 * talks to it cannot disagree.
 */
import { connect } from 'node:net';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import kafkajs from 'kafkajs';
import { withFileLock } from '../../core/index.js';
import { canConnectMqtt } from '../../stream/index.js';
import { VERSIONS } from './versions.js';
import { installArchive, javaHome, once, sh } from './install.js';
import type { BackboneName, ServiceDef, StackContext } from './service-def.js';

/** Account the readiness probes and compose healthcheck use; may only read `$SYS`. */
export const HEALTHCHECK_MQTT = { username: 'healthcheck', password: 'healthcheck-local-secret' };

export const dataDir = (ctx: StackContext, name: BackboneName): string =>
  join(ctx.localDir, 'data', name);

function hostPort(hostport: string): { host: string; port: number } {
  const u = new URL(hostport.includes('://') ? hostport : `tcp://${hostport}`);
  return { host: u.hostname, port: Number(u.port) };
}

function urlPort(url: string, fallback: number): number {
  const u = new URL(url);
  return u.port ? Number(u.port) : fallback;
}

// ---------------------------------------------------------------- kafka

const kafkaHome = (ctx: StackContext): string =>
  join(ctx.cacheDir, `kafka_${VERSIONS.kafkaScala}-${VERSIONS.kafka}`);

const kafka: ServiceDef = {
  name: 'kafka',
  memory: 'heap 512m',
  port: (ctx) => hostPort(ctx.config.kafka.brokers[0] ?? '127.0.0.1:9092').port,
  async install(ctx) {
    // The broker and its runtime dependencies, resolved by Maven from Maven Central: the same
    // jars as the binary distribution's libs/ folder.
    await once(kafkaHome(ctx), async (tmp) => {
      const pom = `<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>local.recsys</groupId><artifactId>kafka-dist</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_${VERSIONS.kafkaScala}</artifactId><version>${VERSIONS.kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies></project>\n`;
      await writeFile(join(tmp, 'pom.xml'), pom);
      ctx.log.info({ version: VERSIONS.kafka }, 'kafka: resolving broker jars with Maven');
      await sh(
        'mvn',
        [
          '-B',
          '-q',
          'dependency:copy-dependencies',
          '-DincludeScope=runtime',
          `-DoutputDirectory=${join(tmp, 'libs')}`,
        ],
        { cwd: tmp },
      );
    });
  },
  async prepare(ctx) {
    const home = kafkaHome(ctx);
    const dir = dataDir(ctx, 'kafka');
    const confDir = join(ctx.localDir, 'conf', 'kafka');
    await mkdir(confDir, { recursive: true });
    const { host, port } = hostPort(ctx.config.kafka.brokers[0] ?? '127.0.0.1:9092');
    const controller = port + 1;
    const props = [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@${host}:${controller}`,
      `listeners=PLAINTEXT://${host}:${port},CONTROLLER://${host}:${controller}`,
      `advertised.listeners=PLAINTEXT://${host}:${port}`,
      'controller.listener.names=CONTROLLER',
      'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
      'inter.broker.listener.name=PLAINTEXT',
      `log.dirs=${dir}`,
      `num.partitions=${ctx.config.kafka.partitions}`,
      // Topics are created by the code that owns them (with their partition count), as in
      // docker-compose.yml; a typo in a topic name fails instead of creating a new topic.
      'auto.create.topics.enable=false',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=10',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      'num.network.threads=2',
      'num.io.threads=4',
      'log.retention.hours=168',
    ];
    const propsFile = join(confDir, 'server.properties');
    await writeFile(propsFile, props.join('\n') + '\n');
    const log4j = join(confDir, 'log4j.properties');
    await writeFile(
      log4j,
      [
        'log4j.rootLogger=INFO, stdout',
        'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
        'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
        'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
        'log4j.logger.kafka.request.logger=WARN',
        'log4j.logger.org.apache.kafka.controller=WARN',
        'log4j.logger.state.change.logger=WARN',
      ].join('\n') + '\n',
    );
    const java = join(await javaHome(), 'bin', 'java');
    const cp = `${join(home, 'libs')}/*`;
    const jvm = [
      '-Xms256m',
      '-Xmx512m',
      '-XX:+UseG1GC',
      '-XX:MaxGCPauseMillis=20',
      `-Dlog4j.configuration=file:${log4j}`,
    ];
    if (!existsSync(join(dir, 'meta.properties'))) {
      // KRaft storage is formatted once with a cluster id kept beside the data.
      await mkdir(dir, { recursive: true });
      // Base64url of a random UUID; one starting with '-' would be read as an option by the
      // tool's argument parser (1 in 64 runs failed), so, like Kafka's own Uuid, redraw it.
      let clusterId = '-';
      while (clusterId.startsWith('-')) {
        clusterId = Buffer.from(randomUUID().replaceAll('-', ''), 'hex').toString('base64url');
      }
      await sh(java, [
        ...jvm,
        '-cp',
        cp,
        'kafka.tools.StorageTool',
        'format',
        '-t',
        clusterId,
        '-c',
        propsFile,
      ]);
    }
    return {
      command: java,
      args: [...jvm, '-cp', cp, 'kafka.Kafka', propsFile],
      marker: 'kafka.Kafka',
    };
  },
  async probe(ctx) {
    const client = new kafkajs.Kafka({
      clientId: 'recsys-local-probe',
      brokers: ctx.config.kafka.brokers,
      logLevel: kafkajs.logLevel.NOTHING,
      connectionTimeout: 1000,
      retry: { retries: 0 },
    });
    const admin = client.admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      return cluster.brokers.length > 0 && cluster.controller !== null;
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  },
};

// ---------------------------------------------------------------- schema registry

const registryHome = (ctx: StackContext): string =>
  join(ctx.cacheDir, `apicurio-registry-${VERSIONS.apicurio}`);

const registry: ServiceDef = {
  name: 'registry',
  memory: 'heap 384m',
  port: (ctx) => urlPort(ctx.config.registry.url, 80),
  install: (ctx) =>
    installArchive(
      ctx.config.local.mavenUrl,
      registryHome(ctx),
      `io/apicurio/apicurio-registry-app/${VERSIONS.apicurio}/apicurio-registry-app-${VERSIONS.apicurio}-all.tar.gz`,
      ctx.log,
    ),
  async prepare(ctx) {
    const dir = dataDir(ctx, 'registry');
    await mkdir(dir, { recursive: true });
    const java = join(await javaHome(), 'bin', 'java');
    const host = new URL(ctx.config.registry.url).hostname;
    return {
      command: java,
      args: [
        '-Xms64m',
        '-Xmx384m',
        '-XX:+UseSerialGC',
        `-Dquarkus.http.host=${host}`,
        `-Dquarkus.http.port=${registry.port(ctx)}`,
        // Schemas survive restarts (the Kafka log refers to their ids), in an H2 file.
        `-Dapicurio.datasource.url=jdbc:h2:file:${join(dir, 'registry')};DB_CLOSE_ON_EXIT=FALSE`,
        '-Dquarkus.log.console.json=false',
        '-jar',
        join(registryHome(ctx), `apicurio-registry-app-${VERSIONS.apicurio}-runner.jar`),
      ],
      cwd: dir,
      marker: 'apicurio-registry-app',
    };
  },
  async probe(ctx) {
    const origin = new URL(ctx.config.registry.url).origin;
    const res = await fetch(`${origin}/health/ready`, { signal: AbortSignal.timeout(1500) });
    if (!res.ok) return false;
    const subjects = await fetch(`${ctx.config.registry.url}/subjects`, {
      signal: AbortSignal.timeout(1500),
    });
    return subjects.ok;
  },
};

// ---------------------------------------------------------------- redis

const redis: ServiceDef = {
  name: 'redis',
  memory: 'maxmemory 1gb',
  port: (ctx) => urlPort(ctx.config.redis.url, 6379),
  async install() {
    // Debian package, see ensureDebianPackages.
  },
  async prepare(ctx) {
    const dir = dataDir(ctx, 'redis');
    await mkdir(dir, { recursive: true });
    const host = new URL(ctx.config.redis.url).hostname;
    return {
      command: 'redis-server',
      args: [
        '--bind',
        host,
        '--port',
        String(redis.port(ctx)),
        '--dir',
        dir,
        '--daemonize',
        'no',
        // Session features are rebuilt from Kafka, but an append-only file makes a restart cheap.
        '--appendonly',
        'yes',
        '--appendfsync',
        'everysec',
        '--save',
        '',
        '--maxmemory',
        '1gb',
        '--maxmemory-policy',
        'noeviction',
        // A user's features are one small hash (store/keys.ts); its recent-items and dedup
        // values pass the default 64-byte listpack limit, and a hash over the limit is stored
        // as a hashtable at several times the memory.
        '--hash-max-listpack-value',
        '512',
      ],
      marker: 'redis-server',
    };
  },
  async probe(ctx) {
    const { hostname } = new URL(ctx.config.redis.url);
    return new Promise<boolean>((resolve) => {
      const socket = connect({ host: hostname, port: redis.port(ctx) });
      socket.setTimeout(1000, () => {
        socket.destroy();
        resolve(false);
      });
      socket.on('error', () => resolve(false));
      socket.on('connect', () => socket.write('PING\r\n'));
      socket.on('data', (d) => {
        socket.destroy();
        resolve(d.toString().startsWith('+PONG'));
      });
    });
  },
};

// ---------------------------------------------------------------- mosquitto

/** Adds or updates an MQTT account in the local password file. */
export async function setMqttPassword(
  ctx: StackContext,
  username: string,
  password: string,
): Promise<void> {
  const file = join(ctx.localDir, 'conf', 'mosquitto', 'passwd');
  await mkdir(join(ctx.localDir, 'conf', 'mosquitto'), { recursive: true });
  if (!existsSync(file)) await writeFile(file, '', { mode: 0o600 });
  // mosquitto_passwd rewrites the file in place without a lock: two at once lose accounts.
  await withFileLock(
    `${file}.lock`,
    () => sh('mosquitto_passwd', ['-b', file, username, password]),
    {
      staleMs: 10_000,
      timeoutMs: 30_000,
    },
  );
}

const mosquitto: ServiceDef = {
  name: 'mosquitto',
  memory: 'no cap',
  port: (ctx) => urlPort(ctx.config.mqtt.url, 1883),
  async install() {
    // Debian package.
  },
  async prepare(ctx) {
    const confDir = join(ctx.localDir, 'conf', 'mosquitto');
    const dir = dataDir(ctx, 'mosquitto');
    await mkdir(confDir, { recursive: true });
    await mkdir(dir, { recursive: true });
    await setMqttPassword(ctx, ctx.config.mqtt.username, ctx.config.mqtt.password);
    await setMqttPassword(ctx, HEALTHCHECK_MQTT.username, HEALTHCHECK_MQTT.password);
    // The ACL is the one docker-compose mounts, with the configured bridge account name.
    const acl = (await readFile(join(ctx.root, 'deploy', 'mosquitto', 'acl'), 'utf8')).replace(
      /^user bridge$/m,
      `user ${ctx.config.mqtt.username}`,
    );
    await writeFile(join(confDir, 'acl'), acl);
    // Broker policy is shared with docker-compose through deploy/mosquitto/conf.d; only the
    // listener and file paths differ.
    const host = new URL(ctx.config.mqtt.url).hostname;
    const conf = [
      '# generated by deploy/local; policy in deploy/mosquitto/conf.d',
      `listener ${mosquitto.port(ctx)} ${host}`,
      `password_file ${join(confDir, 'passwd')}`,
      `acl_file ${join(confDir, 'acl')}`,
      `persistence_location ${dir}/`,
      // Started as root, Mosquitto would switch to the `mosquitto` user, which may not be able
      // to read the checkout; keep the invoking user.
      'user root',
      `include_dir ${join(ctx.root, 'deploy', 'mosquitto', 'conf.d')}`,
      '',
    ].join('\n');
    const file = join(confDir, 'mosquitto.conf');
    await writeFile(file, conf);
    return { command: 'mosquitto', args: ['-c', file], marker: 'mosquitto' };
  },
  probe: (ctx) =>
    canConnectMqtt(ctx.config.mqtt.url, HEALTHCHECK_MQTT.username, HEALTHCHECK_MQTT.password, 1000),
};

// ---------------------------------------------------------------- elasticsearch

const esHome = (ctx: StackContext): string =>
  join(ctx.cacheDir, `elasticsearch-${VERSIONS.elasticsearch}`);

const elasticsearch: ServiceDef = {
  name: 'elasticsearch',
  memory: 'heap 512m',
  port: (ctx) => urlPort(ctx.config.elasticsearch.url, 9200),
  install: (ctx) =>
    installArchive(
      ctx.config.local.mavenUrl,
      esHome(ctx),
      `org/elasticsearch/distribution/integ-test-zip/elasticsearch/${VERSIONS.elasticsearch}/elasticsearch-${VERSIONS.elasticsearch}.zip`,
      ctx.log,
    ),
  async prepare(ctx) {
    const home = join(esHome(ctx), `elasticsearch-${VERSIONS.elasticsearch}`);
    const dir = dataDir(ctx, 'elasticsearch');
    const confDir = join(ctx.localDir, 'conf', 'elasticsearch');
    const tmpDir = join(ctx.localDir, 'tmp', 'elasticsearch');
    const logDir = join(ctx.localDir, 'logs', 'elasticsearch');
    for (const d of [dir, tmpDir, logDir]) await mkdir(d, { recursive: true });
    if (!existsSync(join(confDir, 'jvm.options')))
      await cp(join(home, 'config'), confDir, { recursive: true });
    const host = new URL(ctx.config.elasticsearch.url).hostname;
    const settings = {
      'cluster.name': 'recsys',
      'node.name': 'recsys-local',
      'discovery.type': 'single-node',
      'network.host': host,
      'http.port': String(elasticsearch.port(ctx)),
      'path.data': dir,
      'path.logs': logDir,
      'xpack.security.enabled': 'false',
      // Shared machines run with little free disk; do not turn indices read-only for it.
      'cluster.routing.allocation.disk.threshold_enabled': 'false',
      'action.auto_create_index': 'true',
    };
    // Elasticsearch refuses to run as root. Rather than creating a system user (and making the
    // cache and checkout readable to it), run it in a user namespace where root appears as an
    // ordinary uid; outside, file access is still the invoking user's.
    const asRoot = process.getuid?.() === 0;
    const bin = join(home, 'bin', 'elasticsearch');
    const esArgs = Object.entries(settings).flatMap(([k, v]) => ['-E', `${k}=${v}`]);
    return {
      command: asRoot ? 'unshare' : bin,
      args: asRoot ? ['--user', '--map-user=1000', '--map-group=1000', bin, ...esArgs] : esArgs,
      env: {
        ...process.env,
        ES_JAVA_HOME: await javaHome(),
        ES_JAVA_OPTS: '-Xms256m -Xmx512m',
        ES_PATH_CONF: confDir,
        ES_TMPDIR: tmpDir,
      },
      cwd: dir,
      marker: 'elasticsearch',
    };
  },
  async probe(ctx) {
    const res = await fetch(
      `${ctx.config.elasticsearch.url}/_cluster/health?wait_for_status=yellow&timeout=1s`,
      {
        signal: AbortSignal.timeout(2500),
      },
    );
    return res.ok;
  },
};

export const BACKBONE: Readonly<Record<BackboneName, ServiceDef>> = {
  kafka,
  registry,
  redis,
  mosquitto,
  elasticsearch,
};
