/**
 * Kafka as `deploy/local` runs it: one KRaft process that is broker and controller, its jars
 * resolved by Maven from Maven Central, the controller listener on the broker port + 1. Plain
 * by default; with RECSYS_SECURE_BACKBONE=1 both listeners take SASL only and an authorizer
 * guards the broker (`secure.ts`: accounts, ACLs, why PLAIN on the controller listener).
 */
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import kafkajs from 'kafkajs';
import { createKafka } from '../../stream/index.js';
import { VERSIONS } from './versions.js';
import { javaHome, once, sh } from './install.js';
import { dataDir, type ServiceDef, type StackContext } from './service-def.js';
import {
  backboneCredentials,
  type BackboneCredentials,
  ensureKafkaAcls,
  kafkaSecureProps,
  scramFormatArgs,
  scramMarker,
} from './secure.js';

export function hostPort(hostport: string): { host: string; port: number } {
  const u = new URL(hostport.includes('://') ? hostport : `tcp://${hostport}`);
  return { host: u.hostname, port: Number(u.port) };
}

export const kafkaHome = (ctx: StackContext): string =>
  join(ctx.cacheDir, `kafka_${VERSIONS.kafkaScala}-${VERSIONS.kafka}`);

/** Beside the data: the SCRAM accounts the storage was formatted with (`scramMarker`). */
const SCRAM_MARKER = 'recsys-scram';

function listenerProps(
  host: string,
  port: number,
  controller: number,
  creds: BackboneCredentials | null,
): string[] {
  if (creds) return kafkaSecureProps(host, port, controller, creds);
  return [
    `listeners=PLAINTEXT://${host}:${port},CONTROLLER://${host}:${controller}`,
    `advertised.listeners=PLAINTEXT://${host}:${port}`,
    'listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
    'inter.broker.listener.name=PLAINTEXT',
  ];
}

/** A KRaft cluster id: base64url of a random UUID. */
export function newClusterId(): string {
  // One starting with '-' would be read as an option by the tool's argument parser (1 in 64
  // runs failed), so, like Kafka's own Uuid, redraw it.
  let clusterId = '-';
  while (clusterId.startsWith('-')) {
    clusterId = Buffer.from(randomUUID().replaceAll('-', ''), 'hex').toString('base64url');
  }
  return clusterId;
}

/**
 * Formats the KRaft storage once, with a cluster id kept beside the data and, on the secure
 * backbone, the SCRAM accounts. A storage formatted without them (or with other passwords)
 * cannot take the secure backbone's logins: that is an error naming the way out, not a broker
 * nobody can log in to.
 */
async function formatStorage(
  dir: string,
  tool: string[],
  propsFile: string,
  creds: BackboneCredentials | null,
  sharedClusterId?: string,
): Promise<void> {
  const marker = join(dir, SCRAM_MARKER);
  if (existsSync(join(dir, 'meta.properties'))) {
    if (!creds) return;
    const made = await readFile(marker, 'utf8').catch(() => '');
    if (made === scramMarker(creds)) return;
    throw new Error(
      `${dir} was formatted ${made ? 'with other SCRAM passwords' : 'without SCRAM accounts'}; ` +
        'start without RECSYS_SECURE_BACKBONE, or remove that directory (its topics go with it)',
    );
  }
  await mkdir(dir, { recursive: true });
  const clusterId = sharedClusterId ?? newClusterId();
  await sh(tool[0] as string, [
    ...tool.slice(1),
    'format',
    '-t',
    clusterId,
    '-c',
    propsFile,
    ...(creds ? scramFormatArgs(creds) : []),
  ]);
  if (creds) await writeFile(marker, scramMarker(creds), { mode: 0o600 });
}

/** The broker and its runtime dependencies, resolved by Maven from Maven Central, once. */
export async function installKafka(ctx: StackContext): Promise<void> {
  // The same jars as the binary distribution's libs/ folder.
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
}

/** The JVM command line of a Kafka main class (a broker, or a tool such as ConfigCommand). */
export async function kafkaJava(
  ctx: StackContext,
  jvm: string[],
): Promise<{ java: string; args: string[] }> {
  const java = join(await javaHome(), 'bin', 'java');
  return { java, args: [...jvm, '-cp', `${join(kafkaHome(ctx), 'libs')}/*`] };
}

export interface BrokerLaunch {
  /** Data (log.dirs) and configuration folders of this broker. */
  dir: string;
  confDir: string;
  /** server.properties without log.dirs. */
  props: string[];
  heap: { min: string; max: string };
  creds: BackboneCredentials | null;
  /** Brokers of one cluster are formatted with the same id; absent: a new one. */
  clusterId?: string;
}

/** Writes a broker's configuration, formats its storage once, and says how to start it. */
export async function launchBroker(
  ctx: StackContext,
  b: BrokerLaunch,
): Promise<{ command: string; args: string[]; marker: string }> {
  await mkdir(b.confDir, { recursive: true });
  const propsFile = join(b.confDir, 'server.properties');
  // The secure broker's file holds the admin password: only the owner reads it (chmod too,
  // as writeFile's mode applies only to a new file).
  await writeFile(propsFile, [...b.props, `log.dirs=${b.dir}`].join('\n') + '\n', {
    mode: 0o600,
  });
  await chmod(propsFile, 0o600);
  const log4j = join(b.confDir, 'log4j.properties');
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
  const { java, args } = await kafkaJava(ctx, [
    `-Xms${b.heap.min}`,
    `-Xmx${b.heap.max}`,
    '-XX:+UseG1GC',
    '-XX:MaxGCPauseMillis=20',
    `-Dlog4j.configuration=file:${log4j}`,
  ]);
  await formatStorage(
    b.dir,
    [java, ...args, 'kafka.tools.StorageTool'],
    propsFile,
    b.creds,
    b.clusterId,
  );
  return { command: java, args: [...args, 'kafka.Kafka', propsFile], marker: 'kafka.Kafka' };
}

/** One probe: `brokers` answer metadata with a controller (and, when given, name `nodeId`). */
export async function kafkaAnswers(
  ctx: StackContext,
  brokers: string[],
  nodeId?: number,
): Promise<boolean> {
  const client = createKafka({ ...ctx.config.kafka, brokers }, ctx.log, 'local-probe', {
    logLevel: kafkajs.logLevel.NOTHING,
    connectionTimeout: 1000,
    retry: { retries: 0 },
  });
  const admin = client.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    if (cluster.controller === null || cluster.brokers.length === 0) return false;
    return nodeId === undefined || cluster.brokers.some((b) => b.nodeId === nodeId);
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

export const kafka: ServiceDef = {
  name: 'kafka',
  memory: 'heap 512m',
  port: (ctx) => hostPort(ctx.config.kafka.brokers[0] ?? '127.0.0.1:9092').port,
  install: installKafka,
  async prepare(ctx) {
    const creds = await backboneCredentials(ctx);
    const { host, port } = hostPort(ctx.config.kafka.brokers[0] ?? '127.0.0.1:9092');
    const controller = port + 1;
    return launchBroker(ctx, {
      dir: dataDir(ctx, 'kafka'),
      confDir: join(ctx.localDir, 'conf', 'kafka'),
      heap: { min: '256m', max: '512m' },
      creds,
      props: [
        'process.roles=broker,controller',
        'node.id=1',
        `controller.quorum.voters=1@${host}:${controller}`,
        ...listenerProps(host, port, controller, creds),
        'controller.listener.names=CONTROLLER',
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
      ],
    });
  },
  probe: (ctx) => kafkaAnswers(ctx, [...ctx.config.kafka.brokers]),
  async afterReady(ctx) {
    const creds = await backboneCredentials(ctx);
    if (creds) await ensureKafkaAcls(ctx, creds);
  },
};
