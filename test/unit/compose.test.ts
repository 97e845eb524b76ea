/**
 * Holds docker-compose.yml to the rest of the repo: the images run the versions deploy/local
 * installs (VERSIONS), the published ports are the defaults in core/config.ts, every service has a
 * healthcheck, the JVMs have heap limits, and the Mosquitto config the service starts with exists.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

import { loadConfig } from '../../core/config.js';
import { VERSIONS } from '../../deploy/local/versions.js';

interface Service {
  image?: unknown;
  command?: unknown;
  environment?: unknown;
  ports?: unknown;
  volumes?: unknown;
  healthcheck?: { test?: unknown; disable?: unknown };
}

interface PortMapping {
  hostIp: string | undefined;
  published: number;
  target: number;
}

/** The checkout root: the nearest ancestor holding the package.json named "recsys". */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      const { name } = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown };
      if (name === 'recsys') return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('no package.json named "recsys" above this test');
    dir = parent;
  }
}

const root = repoRoot();
const compose = parse(readFileSync(join(root, 'docker-compose.yml'), 'utf8')) as {
  version?: unknown;
  services?: Record<string, Service>;
  volumes?: Record<string, unknown>;
};
const services = compose.services ?? {};
const config = loadConfig({});

function service(name: string): Service {
  const s = services[name];
  assert.ok(s, `docker-compose.yml has no service "${name}"`);
  return s;
}

/** Splits `registry/path/name:tag` into name and tag (a registry port is not a tag). */
function imageTag(image: string): { name: string; tag: string | undefined } {
  const slash = image.lastIndexOf('/');
  const colon = image.lastIndexOf(':');
  if (colon <= slash) return { name: image, tag: undefined };
  return { name: image.slice(0, colon), tag: image.slice(colon + 1) };
}

function tagOf(name: string): string | undefined {
  const image = service(name).image;
  assert.equal(typeof image, 'string', `${name}: image`);
  return imageTag(image as string).tag;
}

function environment(name: string): Record<string, string> {
  const env = service(name).environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((entry) => {
        const text = String(entry);
        const eq = text.indexOf('=');
        return eq < 0 ? [text, ''] : [text.slice(0, eq), text.slice(eq + 1)];
      }),
    );
  }
  return Object.fromEntries(
    Object.entries(env as Record<string, unknown>).map(([k, v]) => [k, String(v)]),
  );
}

/** Port mappings in short (`[ip:]host:container`) or long (`{published, target}`) syntax. */
function ports(name: string): PortMapping[] {
  const list = service(name).ports ?? [];
  assert.ok(Array.isArray(list), `${name}: ports must be a list`);
  return list.map((entry: unknown): PortMapping => {
    if (typeof entry === 'object' && entry !== null) {
      const p = entry as { host_ip?: unknown; published?: unknown; target?: unknown };
      return {
        hostIp: p.host_ip === undefined ? undefined : String(p.host_ip),
        published: Number(p.published),
        target: Number(p.target),
      };
    }
    const parts = String(entry)
      .replace(/\/(tcp|udp)$/, '')
      .split(':');
    const target = Number(parts.pop());
    const published = Number(parts.pop());
    return { hostIp: parts.length > 0 ? parts.join(':') : undefined, published, target };
  });
}

/** The container port published on the given host port (asserts that exactly one is). */
function publishedTarget(name: string, hostPort: number): number {
  const matches = ports(name).filter((p) => p.published === hostPort);
  assert.equal(
    matches.length,
    1,
    `${name} must publish host port ${hostPort}; publishes ${JSON.stringify(ports(name))}`,
  );
  return (matches[0] as PortMapping).target;
}

function urlPort(url: string): number {
  const parsed = new URL(url);
  assert.notEqual(parsed.port, '', `${url} must name its port`);
  return Number(parsed.port);
}

/** `host:port` as in RECSYS_KAFKA_BROKERS. */
function brokerPort(broker: string): number {
  return urlPort(`tcp://${broker}`);
}

/** Each listener of a Kafka `NAME://host:port,...` list, by name. */
function listeners(value: string | undefined): Map<string, { host: string; port: number }> {
  const out = new Map<string, { host: string; port: number }>();
  for (const item of (value ?? '').split(',').filter(Boolean)) {
    const m = /^([A-Za-z_]+):\/\/(.*):(\d+)$/.exec(item.trim());
    assert.ok(m, `not a Kafka listener: "${item}"`);
    out.set(m[1] as string, { host: m[2] as string, port: Number(m[3]) });
  }
  return out;
}

function commandArgs(name: string): string[] {
  const command = service(name).command;
  if (Array.isArray(command)) return command.map(String);
  return typeof command === 'string' ? command.split(/\s+/).filter(Boolean) : [];
}

/** Where a path inside the mosquitto container lives in the checkout (via its bind mount). */
function hostPathOf(name: string, containerPath: string): string | undefined {
  const volumes = service(name).volumes ?? [];
  assert.ok(Array.isArray(volumes), `${name}: volumes must be a list`);
  for (const v of volumes) {
    let source: string;
    let target: string;
    if (typeof v === 'string') {
      const [s, t] = v.split(':');
      if (s === undefined || t === undefined) continue;
      [source, target] = [s, t];
    } else {
      const m = v as { type?: unknown; source?: unknown; target?: unknown };
      if (m.type !== 'bind') continue;
      [source, target] = [String(m.source), String(m.target)];
    }
    if (!source.startsWith('.') && !source.startsWith('/')) continue; // a named volume
    const rel = posix.relative(target, containerPath);
    if (rel.startsWith('..') || posix.isAbsolute(rel)) continue;
    return resolve(root, source, rel);
  }
  return undefined;
}

describe('docker-compose.yml', () => {
  it('uses the Compose spec without the obsolete version key', () => {
    assert.equal(compose.version, undefined);
    assert.deepEqual(Object.keys(services).sort(), [
      'elasticsearch',
      'kafka',
      'kibana',
      'mosquitto',
      'redis',
      'registry',
    ]);
  });

  it('pins every image to an exact version and gives every service a healthcheck', () => {
    for (const [name, s] of Object.entries(services)) {
      assert.equal(typeof s.image, 'string', `${name}: image`);
      const { tag } = imageTag(s.image as string);
      assert.ok(tag !== undefined, `${name}: image "${String(s.image)}" has no tag`);
      assert.notEqual(tag, 'latest', `${name}: image must not use latest`);
      assert.match(tag, /^\d+\.\d+\.\d+$/, `${name}: tag "${tag}" is not an exact version`);
      assert.ok(s.healthcheck?.test, `${name}: no healthcheck`);
      assert.notEqual(s.healthcheck.disable, true, `${name}: healthcheck disabled`);
    }
  });

  it('runs the versions deploy/local installs', () => {
    assert.equal(tagOf('kafka'), VERSIONS.kafka);
    assert.equal(tagOf('registry'), VERSIONS.apicurio);
    assert.equal(tagOf('redis'), VERSIONS.redis);
    assert.equal(tagOf('mosquitto'), VERSIONS.mosquitto);
    assert.equal(tagOf('elasticsearch'), VERSIONS.elasticsearch);
    assert.equal(tagOf('kibana'), VERSIONS.elasticsearch, 'Kibana must match Elasticsearch');
  });

  it('publishes, on loopback only, the ports the configuration defaults point at', () => {
    const broker = config.kafka.brokers[0];
    assert.ok(broker !== undefined);
    const expected: Record<string, number> = {
      kafka: brokerPort(broker),
      registry: urlPort(config.registry.url),
      redis: urlPort(config.redis.url),
      mosquitto: urlPort(config.mqtt.url),
      elasticsearch: urlPort(config.elasticsearch.url),
    };
    for (const [name, port] of Object.entries(expected)) publishedTarget(name, port);
    for (const name of Object.keys(services)) {
      for (const p of ports(name)) {
        assert.equal(p.hostIp, '127.0.0.1', `${name}: publish on 127.0.0.1, not all interfaces`);
      }
    }
  });

  it("advertises Kafka's host listener at the configured broker address", () => {
    const broker = config.kafka.brokers[0];
    assert.ok(broker !== undefined);
    const env = environment('kafka');
    const advertised = listeners(env.KAFKA_ADVERTISED_LISTENERS).get('PLAINTEXT');
    assert.ok(advertised, 'KAFKA_ADVERTISED_LISTENERS has no PLAINTEXT listener');
    assert.equal(advertised.port, brokerPort(broker));
    const bound = listeners(env.KAFKA_LISTENERS).get('PLAINTEXT');
    assert.ok(bound, 'KAFKA_LISTENERS has no PLAINTEXT listener');
    assert.equal(publishedTarget('kafka', brokerPort(broker)), bound.port);
    assert.equal(env.KAFKA_PROCESS_ROLES, 'broker,controller');
    assert.equal(env.KAFKA_AUTO_CREATE_TOPICS_ENABLE, 'false');
    assert.equal(Number(env.KAFKA_NUM_PARTITIONS), config.kafka.partitions);
  });

  it('limits the heap of Kafka, Elasticsearch and the registry', () => {
    assert.match(environment('kafka').KAFKA_HEAP_OPTS ?? '', /-Xmx\d+[mg]\b/);
    assert.match(environment('elasticsearch').ES_JAVA_OPTS ?? '', /-Xmx\d+[mg]\b/);
    assert.match(environment('registry').JAVA_OPTS_APPEND ?? '', /-Xmx\d+[mg]\b/);
  });

  it('points Kibana at the Elasticsearch service', () => {
    const hosts = environment('kibana').ELASTICSEARCH_HOSTS ?? '';
    const target = publishedTarget('elasticsearch', urlPort(config.elasticsearch.url));
    assert.equal(hosts, `http://elasticsearch:${target}`);
  });

  it('declares every named volume it mounts', () => {
    const declared = Object.keys(compose.volumes ?? {});
    for (const [name, s] of Object.entries(services)) {
      for (const v of (s.volumes ?? []) as unknown[]) {
        const source = typeof v === 'string' ? v.split(':')[0] : undefined;
        if (source === undefined || source.startsWith('.') || source.startsWith('/')) continue;
        assert.ok(declared.includes(source), `${name}: volume "${source}" is not declared`);
      }
    }
  });

  it('starts Mosquitto with a config file that exists in deploy/mosquitto/', () => {
    const args = commandArgs('mosquitto');
    const c = args.indexOf('-c');
    const configPath = args[c + 1];
    assert.ok(c >= 0 && configPath !== undefined, 'mosquitto must be started with -c <file>');
    const hostPath = hostPathOf('mosquitto', configPath);
    assert.ok(hostPath, `${configPath} is not inside a bind mount of the checkout`);
    const rel = relative(root, hostPath);
    assert.ok(rel.startsWith(join('deploy', 'mosquitto')), `${rel} is not under deploy/mosquitto/`);
    assert.ok(existsSync(hostPath), `${rel} does not exist (the compose service starts with it)`);
  });

  it("has the Mosquitto healthcheck's account in the password file that config names", () => {
    const test = service('mosquitto').healthcheck?.test;
    assert.ok(Array.isArray(test), 'mosquitto healthcheck must be a list');
    const args = test.map(String);
    const user = args[args.indexOf('-u') + 1];
    assert.ok(args.includes('-u') && user !== undefined, 'mosquitto healthcheck must log in (-u)');
    const configPath = commandArgs('mosquitto')[commandArgs('mosquitto').indexOf('-c') + 1] ?? '';
    const configFile = hostPathOf('mosquitto', configPath);
    assert.ok(configFile && existsSync(configFile), `${configPath} is missing from the checkout`);
    const passwordLine = readFileSync(configFile, 'utf8')
      .split('\n')
      .map((line) => line.trim())
      .find((line) => line.startsWith('password_file '));
    assert.ok(passwordLine, `${configPath} sets no password_file`);
    const passwordPath = passwordLine.slice('password_file '.length).trim();
    const passwordFile = hostPathOf('mosquitto', passwordPath);
    assert.ok(passwordFile && existsSync(passwordFile), `${passwordPath} is missing`);
    const users = readFileSync(passwordFile, 'utf8')
      .split('\n')
      .map((line) => line.split(':')[0]);
    assert.ok(users.includes(user), `${passwordPath} has no account "${user}"`);
  });
});
