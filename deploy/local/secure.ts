/**
 * The secure backbone (`RECSYS_SECURE_BACKBONE=1`): Redis with ACL users and Kafka with
 * SASL/SCRAM and ACLs, the credentials made per checkout in `.local/secrets/` (0600) like the
 * ingest token (`secrets.ts`). The processes `deploy/local` starts get the application's logins
 * through the usual variables (`backboneLoginEnv`); `npm run -s stack -- credentials` prints
 * them for a shell.
 *
 * Accounts: Redis `recsys` (every key and channel; no admin or dangerous commands but INFO) and
 * `admin` (everything), the default user off. Kafka `recsys` (every topic and group, creates
 * topics; no cluster changes, no ACLs) and `admin` (super user, the broker's own login between
 * its listeners; the controller listener takes only it, over PLAIN).
 *
 * @example
 *   const creds = await backboneCredentials(ctx); // null unless RECSYS_SECURE_BACKBONE=1
 *   const config = withCredentials(ctx.config, creds);
 */
import { createHash, pbkdf2Sync, randomBytes } from 'node:crypto';
import kafkajs from 'kafkajs';
import { parseRedisUrl, type Config } from '../../core/index.js';
import { createKafka } from '../../stream/index.js';
import { localSecret } from './secrets.js';
import type { StackContext } from './service-def.js';

export const APP_USER = 'recsys';
export const ADMIN_USER = 'admin';
/** The SCRAM mechanism of the client listener, in kafkajs' spelling. */
export const SCRAM_MECHANISM = 'scram-sha-256';
/** Kafka's default (and minimum) for SCRAM-SHA-256. */
const SCRAM_ITERATIONS = 4096;

/** The files in `.local/secrets/` that hold the passwords. */
export const secretNames = {
  app: ['kafka-password', 'redis-password'],
  admin: ['kafka-admin-password', 'redis-admin-password'],
} as const;

export interface BackboneCredentials {
  kafka: { password: string; adminPassword: string };
  redis: { password: string; adminPassword: string };
}

/** The secure backbone's passwords (made on first use), or null on the plain backbone. */
export async function backboneCredentials(
  ctx: Pick<StackContext, 'config' | 'localDir'>,
): Promise<BackboneCredentials | null> {
  if (!ctx.config.local.secureBackbone) return null;
  const [kafka, redis, kafkaAdmin, redisAdmin] = await Promise.all(
    [...secretNames.app, ...secretNames.admin].map((name) => localSecret(ctx, name)),
  );
  return {
    kafka: { password: kafka as string, adminPassword: kafkaAdmin as string },
    redis: { password: redis as string, adminPassword: redisAdmin as string },
  };
}

/**
 * `url` with `user:password@` (and its path, the database, kept). A Redis Cluster URL
 * (`redis-cluster://h1:p1,h2:p2`, which `new URL` cannot parse) gets the login before its seeds;
 * it applies to every node.
 */
export function redisUrlWith(url: string, user: string, password: string): string {
  const login = `${encodeURIComponent(user)}:${encodeURIComponent(password)}@`;
  const cluster = /^(rediss?-cluster:\/\/)(?:[^@/]*@)?(.*)$/.exec(url);
  if (cluster) return `${cluster[1]}${login}${cluster[2]}`.replace(/\/$/, '');
  const u = new URL(url);
  u.username = encodeURIComponent(user);
  u.password = encodeURIComponent(password);
  return u.toString().replace(/\/$/, '');
}

/** `config` logging in as the application's accounts; `config` itself without credentials. */
export function withCredentials(
  config: Readonly<Config>,
  creds: BackboneCredentials | null,
): Readonly<Config> {
  if (!creds) return config;
  return Object.freeze({
    ...config,
    // Parsed again: a cluster's seeds carry the login in `cluster` too.
    redis: Object.freeze(
      parseRedisUrl(redisUrlWith(config.redis.url, APP_USER, creds.redis.password)),
    ),
    kafka: Object.freeze({
      ...config.kafka,
      sasl: Object.freeze({
        mechanism: SCRAM_MECHANISM,
        username: APP_USER,
        password: creds.kafka.password,
      }),
    }),
  });
}

/** `config` as Kafka's admin account (the ACLs are made with it). */
export function asKafkaAdmin(config: Readonly<Config>, creds: BackboneCredentials): Config {
  return {
    ...config,
    kafka: {
      ...config.kafka,
      sasl: {
        mechanism: SCRAM_MECHANISM,
        username: ADMIN_USER,
        password: creds.kafka.adminPassword,
      },
    },
  };
}

/**
 * The variables that hand `config`'s backbone logins to a child process; none on the plain
 * backbone (the child reads the same defaults as its parent).
 */
export function backboneLoginEnv(config: Readonly<Config>): Record<string, string> {
  const env: Record<string, string> = {};
  if (!config.local.secureBackbone) return env;
  env.RECSYS_REDIS_URL = config.redis.url;
  if (config.kafka.sasl) {
    env.RECSYS_KAFKA_SASL_MECHANISM = config.kafka.sasl.mechanism;
    env.RECSYS_KAFKA_USERNAME = config.kafka.sasl.username;
    env.RECSYS_KAFKA_PASSWORD = config.kafka.sasl.password;
  }
  return env;
}

// ---------------------------------------------------------------- redis

/**
 * The ACL file: passwords stored as SHA-256 (`#<hex>`), as Redis itself would save them. The
 * application may run every data, scripting and pub/sub command on every key and channel, and
 * INFO (its memory gauges), but no admin or dangerous command (CONFIG, FLUSHALL, KEYS, ACL,
 * DEBUG, SHUTDOWN...).
 */
export function redisAclFile(creds: BackboneCredentials): string {
  const hash = (pw: string): string => createHash('sha256').update(pw).digest('hex');
  return [
    'user default off',
    `user ${APP_USER} on #${hash(creds.redis.password)} ~* &* +@all -@admin -@dangerous +info`,
    `user ${ADMIN_USER} on #${hash(creds.redis.adminPassword)} ~* &* +@all`,
    '',
  ].join('\n');
}

// ---------------------------------------------------------------- kafka

const jaas = (module: string, user: string, password: string, extra = ''): string =>
  `org.apache.kafka.common.security.${module} required username="${user}" password="${password}"${extra};`;

/**
 * server.properties lines of the secure broker: the client listener SASL_PLAINTEXT with
 * SCRAM-SHA-256 (also between the broker's own parts, as admin), the controller listener
 * SASL_PLAINTEXT with PLAIN (SCRAM credentials live in the metadata the controller serves, so
 * it cannot check them itself) that knows only admin, and the standard authorizer: nothing is
 * allowed without an ACL but to admin. The file holds passwords: written 0600.
 */
export function kafkaSecureProps(
  host: string,
  port: number,
  controller: number,
  creds: BackboneCredentials,
): string[] {
  const admin = creds.kafka.adminPassword;
  return [
    `listeners=SASL_PLAINTEXT://${host}:${port},CONTROLLER://${host}:${controller}`,
    `advertised.listeners=SASL_PLAINTEXT://${host}:${port}`,
    'listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT',
    'inter.broker.listener.name=SASL_PLAINTEXT',
    'sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256',
    'sasl.mechanism.controller.protocol=PLAIN',
    'listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-256',
    'listener.name.controller.sasl.enabled.mechanisms=PLAIN',
    `listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=${jaas('scram.ScramLoginModule', ADMIN_USER, admin)}`,
    `listener.name.controller.plain.sasl.jaas.config=${jaas('plain.PlainLoginModule', ADMIN_USER, admin, ` user_${ADMIN_USER}="${admin}"`)}`,
    'authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer',
    `super.users=User:${ADMIN_USER}`,
    'allow.everyone.if.no.acl.found=false',
  ];
}

/**
 * `kafka-storage format` arguments that create both SCRAM accounts. They carry the salted
 * password (what the broker stores anyway), never the password itself: a command line is
 * readable by every user of the machine (`ps`).
 */
export function scramFormatArgs(creds: BackboneCredentials): string[] {
  return [
    [APP_USER, creds.kafka.password],
    [ADMIN_USER, creds.kafka.adminPassword],
  ].flatMap(([name, password]) => {
    const salt = randomBytes(24);
    const salted = pbkdf2Sync(password as string, salt, SCRAM_ITERATIONS, 32, 'sha256');
    return [
      '--add-scram',
      `SCRAM-SHA-256=[name=${name},salt="${salt.toString('base64')}",` +
        `saltedpassword="${salted.toString('base64')}",iterations=${SCRAM_ITERATIONS}]`,
    ];
  });
}

/** What the data directory's marker holds: which passwords its SCRAM accounts were made with. */
export function scramMarker(creds: BackboneCredentials): string {
  const digest = createHash('sha256')
    .update(`${creds.kafka.password}\n${creds.kafka.adminPassword}`)
    .digest('hex');
  return `${digest}\n`;
}

/**
 * The application account's ACLs (idempotent; made on every start): all operations on every
 * topic and consumer group, and on the cluster only creating topics, idempotent writes and
 * describing it. It cannot change broker configs, ACLs or SCRAM credentials.
 */
export async function ensureKafkaAcls(
  ctx: Pick<StackContext, 'config' | 'log'>,
  creds: BackboneCredentials,
): Promise<void> {
  const { AclOperationTypes: Op, AclPermissionTypes, AclResourceTypes: Res } = kafkajs;
  const { ResourcePatternTypes } = kafkajs;
  const allow = (resourceType: number, resourceName: string, operation: number) => ({
    resourceType,
    resourceName,
    resourcePatternType: ResourcePatternTypes.LITERAL,
    principal: `User:${APP_USER}`,
    host: '*',
    operation,
    permissionType: AclPermissionTypes.ALLOW,
  });
  const admin = createKafka(asKafkaAdmin(ctx.config, creds).kafka, ctx.log, 'local-acls', {
    logLevel: kafkajs.logLevel.NOTHING,
  }).admin();
  await admin.connect();
  try {
    await admin.createAcls({
      acl: [
        allow(Res.TOPIC, '*', Op.ALL),
        allow(Res.GROUP, '*', Op.ALL),
        allow(Res.CLUSTER, 'kafka-cluster', Op.CREATE),
        allow(Res.CLUSTER, 'kafka-cluster', Op.IDEMPOTENT_WRITE),
        allow(Res.CLUSTER, 'kafka-cluster', Op.DESCRIBE),
      ],
    });
  } finally {
    await admin.disconnect();
  }
}
