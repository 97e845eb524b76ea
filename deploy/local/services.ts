/**
 * The five backbone services as `deploy/local` runs them without Docker (Kafka in `kafka.ts`,
 * Mosquitto in `mosquitto.ts`, the secure backbone's accounts in `secure.ts`): how each is installed into the shared cache, how it
 * is configured and started on loopback, and how readiness is probed. Ports and credentials come
 * from the typed config, so the stack and the code that talks to it cannot disagree.
 */
import { connect } from 'node:net';
import { chmod, cp, mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { redactRedisUrl, type RedisTarget } from '../../core/index.js';
import { elasticAuthHeaders } from '../../stream/index.js';
import { VERSIONS } from './versions.js';
import { installArchive, javaHome } from './install.js';
import { backboneCredentials, redisAclFile } from './secure.js';
import {
  type BackboneName,
  dataDir,
  redisStorageArgs,
  type ServiceDef,
  type StackContext,
} from './service-def.js';
import { kafka } from './kafka.js';
import { mosquitto } from './mosquitto.js';

function urlPort(url: string, fallback: number): number {
  const u = new URL(url);
  return u.port ? Number(u.port) : fallback;
}

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

/** One Redis node to PING: where, and the ACL login ('' for none). */
export interface RedisPingTarget {
  host: string;
  port: number;
  username: string;
  password: string;
}

/**
 * The nodes the readiness probe PINGs for RECSYS_REDIS_URL: its one node, or every seed of a
 * Redis Cluster (`redis-cluster://h1:p1,h2:p2`, which `new URL` cannot parse).
 */
export function redisPingTargets(target: RedisTarget): RedisPingTarget[] {
  if (target.cluster) {
    const { username, password } = target.cluster;
    return target.cluster.nodes.map((n) => ({ ...n, username, password }));
  }
  const url = new URL(target.url);
  return [
    {
      host: url.hostname,
      port: url.port ? Number(url.port) : 6379,
      username: decodeURIComponent(url.username),
      password: decodeURIComponent(url.password),
    },
  ];
}

/** Whether the node answers PING with PONG (after AUTH when a password is given) within 1 s. */
export function pingRedis(node: RedisPingTarget): Promise<boolean> {
  // RESP arrays: a password may hold any byte.
  const resp = (...args: string[]): string =>
    `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  const auth = node.password ? resp('AUTH', node.username || 'default', node.password) : '';
  return new Promise<boolean>((resolve) => {
    const socket = connect({ host: node.host, port: node.port });
    let answer = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => resolve(false));
    socket.on('connect', () => socket.write(`${auth}${resp('PING')}`));
    socket.on('data', (d) => {
      answer += d.toString();
      if (/^-/m.test(answer)) done(false);
      else if (answer.includes('+PONG')) done(true);
    });
  });
}

/**
 * The single-node Redis. When RECSYS_REDIS_URL names a Redis Cluster this service does not apply:
 * its probe reports the cluster ready when every seed answers (so `up` and `status` take a running
 * cluster as external), and it refuses to start a lone node in its place, saying how to run one.
 */
const redis: ServiceDef = {
  name: 'redis',
  memory: 'maxmemory 1gb',
  port: (ctx) => (redisPingTargets(ctx.config.redis)[0] as RedisPingTarget).port,
  async install() {
    // Debian package, see ensureDebianPackages.
  },
  async prepare(ctx) {
    if (ctx.config.redis.cluster) {
      throw new Error(
        `RECSYS_REDIS_URL names a Redis Cluster (${redactRedisUrl(ctx.config.redis.url)}), which the ` +
          'single-node "redis" service cannot start and none of whose seeds answers PING; ' +
          'start the cluster profile (up redis --profile cluster) or unset RECSYS_REDIS_URL',
      );
    }
    const dir = dataDir(ctx, 'redis');
    await mkdir(dir, { recursive: true });
    const host = new URL(ctx.config.redis.url).hostname;
    // The secure backbone's users (secure.ts), written on every start from .local/secrets.
    const creds = await backboneCredentials(ctx);
    const acl: string[] = [];
    if (creds) {
      const confDir = join(ctx.localDir, 'conf', 'redis');
      await mkdir(confDir, { recursive: true });
      const file = join(confDir, 'users.acl');
      await writeFile(file, redisAclFile(creds), { mode: 0o600 });
      await chmod(file, 0o600);
      acl.push('--aclfile', file);
    }
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
        ...redisStorageArgs('1gb'),
        ...acl,
      ],
      marker: 'redis-server',
    };
  },
  async probe(ctx) {
    // A cluster is ready when every seed answers (a client starts from any of them).
    const answers = await Promise.all(redisPingTargets(ctx.config.redis).map(pingRedis));
    return answers.every(Boolean);
  },
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
        headers: elasticAuthHeaders(ctx.config.elasticsearch),
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
