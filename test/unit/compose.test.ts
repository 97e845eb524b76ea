/**
 * Holds docker-compose.yml, the Dockerfile and .env.example to the rest of the repo, since no
 * Docker engine runs them here or in CI: the images run the versions deploy/local installs
 * (VERSIONS), the app services run commands and roles that exist, every RECSYS_* variable is one
 * core/config.ts reads (and the compose environment loads without error), the published ports and
 * healthchecks are the configured defaults, on loopback only, every config file mounted exists,
 * Prometheus scrapes every app service and Alertmanager posts to the batch trigger by service
 * name, every long-running service has a healthcheck, and no secret value is committed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

import { RETRAIN_PATH } from '../../batch/retrain.js';
import { loadConfig } from '../../core/config.js';
import { VARIABLES } from '../../core/config-variables.js';
import { listenPort, type ProcessKind } from '../../core/ports.js';
import { HEALTHCHECK_MQTT_USER, MQTT_HASH_ITERATIONS } from '../../deploy/local/mosquitto.js';
import { VERSIONS } from '../../deploy/local/versions.js';

interface Service {
  image?: unknown;
  build?: { context?: unknown; target?: unknown };
  entrypoint?: unknown;
  env_file?: unknown;
  restart?: unknown;
  depends_on?: Record<string, { condition?: unknown }>;
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
const composeText = readFileSync(join(root, 'docker-compose.yml'), 'utf8');
// merge: the app services share their settings through `<<: *app` (Compose resolves merge keys).
const compose = parse(composeText, { merge: true }) as {
  version?: unknown;
  services?: Record<string, Service>;
  volumes?: Record<string, unknown>;
};
const services = compose.services ?? {};
// The defaults, secrets included (development accepts the published ones).
const config = loadConfig({ RECSYS_ENV: 'development' });
const PROMETHEUS_PORT = config.local.prometheusPort;
const ALERTMANAGER_PORT = config.local.alertmanagerPort;
const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');

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

/** The service's command (or entrypoint) as one string, for shell commands. */
function commandText(name: string): string {
  const s = service(name);
  const c = s.command ?? s.entrypoint;
  return Array.isArray(c) ? c.map(String).join(' ') : String(c ?? '');
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

/** The app services: built from the Dockerfile, by process kind (entry point). */
const APP_KIND: Record<string, ProcessKind> = {
  'dist/stream/main.js': 'stream',
  'dist/serving/main.js': 'serving',
  'dist/batch/main.js': 'batch',
};
const appServices = Object.keys(services).filter((name) => services[name]?.build !== undefined);

/** Services that run once and exit (no healthcheck: compose waits for them to complete). */
const ONE_SHOT = ['kibana-objects'];

function kindOf(name: string): ProcessKind {
  const entry = commandArgs(name)[1] ?? '';
  const kind = APP_KIND[entry];
  assert.ok(kind, `${name}: "${entry}" is not an app entry point (${Object.keys(APP_KIND)})`);
  return kind;
}

/** The stream roles stream/main.ts accepts, read from its source (importing it starts it). */
function streamRoles(): string[] {
  const source = readFileSync(join(root, 'stream', 'main.ts'), 'utf8');
  const m = /const ROLES = \[([^\]]*)\] as const/.exec(source);
  assert.ok(m, 'stream/main.ts no longer declares `const ROLES = [...] as const`');
  return [...(m[1] as string).matchAll(/'([a-z-]+)'/g)].map((r) => r[1] as string);
}

/** KEY=value lines of an env file. */
function envFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const t = line.trim();
    if (t === '' || t.startsWith('#')) continue;
    const eq = t.indexOf('=');
    assert.ok(eq > 0, `${path}: not KEY=value: "${t}"`);
    out[t.slice(0, eq)] = t.slice(eq + 1);
  }
  return out;
}
const envExample = envFile(join(root, '.env.example'));
/** An operator's .env: every variable of .env.example with a random value. */
const envFilled = Object.fromEntries(
  Object.keys(envExample).map((k) => [k, randomBytes(24).toString('base64url')]),
);

/** What a container of this app service sees: the filled env file, then `environment`. */
function appEnv(name: string): Record<string, string> {
  assert.equal(service(name).env_file, '.env', `${name}: env_file must be .env`);
  return { ...envFilled, ...environment(name) };
}

/**
 * Runs the leading `case ... esac` guards of a service's shell command (as the container's sh
 * would, `$$` being Compose's `$`) with `env`; returns the exit code and stderr.
 */
function runGuards(name: string, env: Record<string, string>): { code: number; stderr: string } {
  const text = commandText(name)
    .replace(/^sh -c /, '')
    .replaceAll('$$', '$');
  const guards = text.split(' && ').filter((part) => part.trim().startsWith('case '));
  assert.ok(guards.length > 0, `${name}: no secret guard in its command`);
  const res = spawnSync('sh', ['-c', `${guards.join(' && ')} && echo admitted`], {
    env: { PATH: process.env.PATH, ...env },
    encoding: 'utf8',
  });
  assert.equal(res.status === 0, res.stdout.trim() === 'admitted', `${name}: ${res.stderr}`);
  return { code: res.status ?? -1, stderr: res.stderr };
}

/** The port in the service's healthcheck URL. */
function healthcheckPort(name: string): number {
  const text = JSON.stringify(service(name).healthcheck?.test ?? '');
  const m = /127\.0\.0\.1:(\d+)\/(healthz|-\/ready|api\/health)/.exec(text);
  assert.ok(m, `${name}: healthcheck probes no loopback health URL: ${text}`);
  return Number(m[1]);
}

/** `--flag=value` from a list of arguments. */
function flag(args: string[], name: string): string | undefined {
  return args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
}

/** The checkout file a path inside a container maps to, asserting it exists. */
function repoFile(name: string, containerPath: string): string {
  const hostPath = hostPathOf(name, containerPath);
  assert.ok(hostPath, `${name}: ${containerPath} is not inside a bind mount of the checkout`);
  assert.ok(existsSync(hostPath), `${name}: ${relative(root, hostPath)} does not exist`);
  return hostPath;
}

/** Names of the variables that hold secrets. */
const SECRET_NAME = /SECRET|PASSWORD|TOKEN/;

describe('docker-compose.yml', () => {
  it('uses the Compose spec without the obsolete version key', () => {
    assert.equal(compose.version, undefined);
    assert.deepEqual(Object.keys(services).sort(), [
      'alertmanager',
      'attribution',
      'batch',
      'catalog',
      'elasticsearch',
      'features',
      'grafana',
      'impressions',
      'indexer',
      'ingest',
      'kafka',
      'kibana',
      'kibana-objects',
      'lake',
      'mosquitto',
      'prometheus',
      'redis',
      'registry',
      'serving',
    ]);
  });

  it('pins every image to an exact version and gives every service a healthcheck', () => {
    for (const [name, s] of Object.entries(services)) {
      assert.equal(typeof s.image, 'string', `${name}: image`);
      const { tag } = imageTag(s.image as string);
      assert.ok(tag !== undefined, `${name}: image "${String(s.image)}" has no tag`);
      assert.notEqual(tag, 'latest', `${name}: image must not use latest`);
      assert.match(tag, /^v?\d+\.\d+\.\d+$/, `${name}: tag "${tag}" is not an exact version`);
      if (ONE_SHOT.includes(name)) {
        // Runs to completion: nothing to probe; it must not be restarted once done.
        assert.equal(s.restart, 'no', `${name}: a one-shot service must not restart`);
        continue;
      }
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
    assert.equal(service('kibana-objects').image, service('kibana').image);
    assert.equal(tagOf('prometheus'), `v${VERSIONS.prometheus}`);
    assert.equal(tagOf('alertmanager'), `v${VERSIONS.alertmanager}`);
    assert.equal(tagOf('grafana'), VERSIONS.grafana);
  });

  it('builds the app services from the Dockerfile, tagged with the package version', () => {
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      version: string;
    };
    const stages = [...dockerfile.matchAll(/^FROM\s+\S+\s+AS\s+(\S+)/gim)].map((m) => m[1]);
    assert.ok(appServices.length > 0);
    for (const name of appServices) {
      const { build, image } = service(name);
      assert.equal(build?.context, '.', `${name}: build context`);
      assert.ok(stages.includes(String(build?.target)), `${name}: no stage "${build?.target}"`);
      assert.equal(imageTag(String(image)).tag, version, `${name}: image tag`);
    }
  });

  it('runs, in its app services, commands and roles that exist and every role of the product', () => {
    const roles = streamRoles();
    const started = new Set<string>();
    for (const name of appServices) {
      const args = commandArgs(name);
      assert.equal(args[0], 'node', `${name}: command`);
      const kind = kindOf(name);
      const source = join(root, (args[1] as string).replace(/^dist\//, '').replace(/\.js$/, '.ts'));
      assert.ok(existsSync(source), `${name}: ${relative(root, source)} does not exist`);
      const rest = args.slice(2);
      if (kind === 'stream') {
        assert.ok(rest.length > 0, `${name}: name the role (the default is ingest)`);
        for (const role of rest) {
          assert.ok(roles.includes(role), `${name}: stream/main.ts has no role "${role}"`);
          started.add(role);
        }
      } else {
        const text = readFileSync(source, 'utf8');
        for (const a of rest)
          assert.ok(
            text.includes(`'${a}'`),
            `${name}: ${a} is not read by ${relative(root, source)}`,
          );
      }
    }
    assert.deepEqual([...started].sort(), [...roles].sort(), 'every stream role runs somewhere');
    assert.deepEqual(commandArgs('batch').slice(2).sort(), ['--schedule', '--serve']);
    assert.ok(environment('batch').RECSYS_BATCH_SCHEDULE, '--schedule needs RECSYS_BATCH_SCHEDULE');
  });

  it('names only variables core/config.ts reads, and its environment loads', () => {
    const known = new Set(VARIABLES.map((v) => v.name));
    const named = new Set(
      [
        ...composeText.matchAll(/\bRECSYS_[A-Z0-9_]+/g),
        ...dockerfile.matchAll(/\bRECSYS_[A-Z0-9_]+/g),
        ...Object.keys(envExample).map((k) => [k]),
      ].map((m) => m[0] as string),
    );
    for (const name of named) {
      if (!name.startsWith('RECSYS_')) continue;
      assert.ok(known.has(name), `${name} is not in core/config-variables.ts`);
    }
    for (const name of appServices) {
      const env = appEnv(name);
      const cfg = loadConfig(env);
      assert.equal(cfg.http.host, '0.0.0.0', `${name}: listen beyond loopback inside the network`);
      assert.equal(cfg.kafka.brokers[0], 'kafka:29092', `${name}: Kafka's INTERNAL listener`);
      assert.equal(new URL(cfg.redis.url).hostname, 'redis');
      assert.equal(new URL(cfg.registry.url).hostname, 'registry');
    }
  });

  it('probes each app service on the port its kind listens on, the config default', () => {
    for (const name of appServices) {
      const { port } = listenPort(loadConfig(appEnv(name)), kindOf(name));
      assert.equal(port, config.http.ports[kindOf(name)], `${name}: not the default port`);
      assert.equal(healthcheckPort(name), port, `${name}: healthcheck port`);
    }
    assert.equal(healthcheckPort('prometheus'), PROMETHEUS_PORT);
    assert.equal(healthcheckPort('alertmanager'), ALERTMANAGER_PORT);
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
      serving: config.http.ports.serving,
      ingest: config.http.ports.stream,
      batch: config.http.ports.batch,
      prometheus: PROMETHEUS_PORT,
      alertmanager: ALERTMANAGER_PORT,
    };
    for (const [name, port] of Object.entries(expected)) publishedTarget(name, port);
    for (const name of ['serving', 'ingest', 'batch', 'prometheus', 'alertmanager']) {
      const port = expected[name] as number;
      assert.equal(publishedTarget(name, port), port, `${name}: container port`);
    }
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
    const configPath = /exec mosquitto -c (\S+)/.exec(commandText('mosquitto'))?.[1];
    assert.ok(configPath !== undefined, 'mosquitto must be started with -c <file>');
    const hostPath = hostPathOf('mosquitto', configPath);
    assert.ok(hostPath, `${configPath} is not inside a bind mount of the checkout`);
    const rel = relative(root, hostPath);
    assert.ok(rel.startsWith(join('deploy', 'mosquitto')), `${rel} is not under deploy/mosquitto/`);
    assert.ok(existsSync(hostPath), `${rel} does not exist (the compose service starts with it)`);
  });

  it('gives Mosquitto a device listener (client id = username) and an unpublished bridge listener, each with its accounts', () => {
    const configPath = /exec mosquitto -c (\S+)/.exec(commandText('mosquitto'))?.[1] ?? '';
    const text = readFileSync(repoFile('mosquitto', configPath), 'utf8');
    assert.match(text, /^per_listener_settings true$/m);
    // Each listener block: from its `listener` line to the next one (or include_dir).
    const blocks = text
      .split(/^(?=listener |include_dir )/m)
      .filter((b) => b.startsWith('listener'));
    const option = (block: string, key: string): string | undefined =>
      new RegExp(`^${key} (.+)$`, 'm').exec(block)?.[1]?.trim();
    const byPort = new Map(blocks.map((b) => [Number(/^listener (\d+)/.exec(b)?.[1]), b]));
    const devices = byPort.get(urlPort(environment('ingest').RECSYS_MQTT_URL ?? ''));
    const bridge = byPort.get(urlPort(environment('ingest').RECSYS_MQTT_BRIDGE_URL ?? ''));
    assert.ok(devices && bridge, 'RECSYS_MQTT_URL and RECSYS_MQTT_BRIDGE_URL name two listeners');
    assert.equal(option(devices, 'use_username_as_clientid'), 'true');
    assert.equal(option(bridge, 'use_username_as_clientid'), undefined);
    for (const b of [devices, bridge]) assert.equal(option(b, 'allow_anonymous'), 'false');
    assert.deepEqual(
      ports('mosquitto').map((p) => p.target),
      [urlPort(config.mqtt.url)],
      'only the device listener is published',
    );

    const command = commandText('mosquitto');
    const bridgeUser = config.mqtt.username;
    const test = JSON.stringify(service('mosquitto').healthcheck?.test ?? '');
    const health = /-u (\S+) -P "\$\$([A-Z_]+)"/.exec(JSON.parse(test).join(' '))?.slice(1);
    assert.ok(health, 'the mosquitto healthcheck must log in with -u <user> -P "$$VAR"');
    assert.equal(health[0], HEALTHCHECK_MQTT_USER);
    const hashed = `mosquitto_passwd -I ${MQTT_HASH_ITERATIONS} -b`;
    const devicesFile = option(devices, 'password_file');
    const bridgeFile = option(bridge, 'password_file');
    assert.ok(devicesFile && bridgeFile && devicesFile !== bridgeFile, 'two password files');
    assert.ok(
      command.includes(`${hashed} ${devicesFile} ${health[0]} "$$${health[1]}"`),
      `${health[0]} is not written to ${devicesFile} with ${MQTT_HASH_ITERATIONS} iterations`,
    );
    assert.ok(
      command.includes(
        `mosquitto_passwd -c -I ${MQTT_HASH_ITERATIONS} -b ${bridgeFile} ${bridgeUser} "$$RECSYS_MQTT_PASSWORD"`,
      ),
      `the bridge account (${bridgeUser}) is not the only one of ${bridgeFile}`,
    );
    assert.equal(service('mosquitto').env_file, '.env');
    const acl = (block: string) =>
      readFileSync(repoFile('mosquitto', option(block, 'acl_file') ?? ''), 'utf8');
    assert.match(acl(devices), new RegExp(`^user ${health[0]}$`, 'm'));
    assert.match(acl(devices), /^pattern write recsys\/events\/%u$/m);
    assert.doesNotMatch(acl(devices), new RegExp(`^user ${bridgeUser}$`, 'm'));
    assert.match(acl(bridge), new RegExp(`^user ${bridgeUser}$`, 'm'));
  });

  it('mounts config files that exist in the checkout', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const v of (s.volumes ?? []) as unknown[]) {
        const source = typeof v === 'string' ? (v.split(':')[0] as string) : '';
        if (!source.startsWith('.')) continue;
        assert.ok(existsSync(resolve(root, source)), `${name}: ${source} does not exist`);
      }
    }
    repoFile('kibana-objects', '/recsys-kibana/recsys.ndjson');
    assert.match(commandText('kibana-objects'), /file=@\/recsys-kibana\/recsys\.ndjson/);
    assert.match(
      commandText('kibana-objects'),
      /http:\/\/kibana:5601\/api\/saved_objects\/_import/,
    );
    assert.equal(service('kibana-objects').depends_on?.kibana?.condition, 'service_healthy');
  });

  it('has Prometheus scrape every app service by name and alert to Alertmanager', () => {
    const args = commandArgs('prometheus');
    const file = repoFile('prometheus', flag(args, '--config.file') ?? '');
    const prom = parse(readFileSync(file, 'utf8')) as {
      rule_files: string[];
      alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
      scrape_configs: { job_name: string; file_sd_configs?: { files: string[] }[] }[];
    };
    for (const rules of prom.rule_files) {
      const dir = repoFile('prometheus', posix.dirname(rules));
      assert.equal(relative(root, dir), join('deploy', 'prometheus', 'rules'), 'the tested rules');
    }
    assert.deepEqual(prom.alerting.alertmanagers[0]?.static_configs[0]?.targets, [
      `alertmanager:${ALERTMANAGER_PORT}`,
    ]);
    const recsys = prom.scrape_configs.find((c) => c.job_name === 'recsys');
    const pattern = recsys?.file_sd_configs?.[0]?.files[0] ?? '';
    const dir = repoFile('prometheus', posix.dirname(pattern));
    const scraped = new Map<string, string>();
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.json'))) {
      const groups = JSON.parse(readFileSync(join(dir, f), 'utf8')) as {
        targets: string[];
        labels: { process: string };
      }[];
      for (const g of groups) for (const t of g.targets) scraped.set(t, g.labels.process);
    }
    const expected = new Map(
      appServices.map((name) => [`${name}:${config.http.ports[kindOf(name)]}`, kindOf(name)]),
    );
    assert.deepEqual(new Map([...scraped].sort()), new Map([...expected].sort()));
  });

  it('has Alertmanager post to the batch trigger with the token from the env file', () => {
    const text = commandText('alertmanager');
    const file = repoFile('alertmanager', /--config\.file=(\S+)/.exec(text)?.[1] ?? '');
    assert.match(text, new RegExp(`--web\\.listen-address=:${ALERTMANAGER_PORT}\\b`));
    const am = parse(readFileSync(file, 'utf8')) as {
      receivers: {
        name: string;
        webhook_configs?: {
          url: string;
          http_config: { authorization: { credentials_file: string } };
        }[];
      }[];
    };
    const hook = am.receivers.find((r) => r.name === 'recsys-retrain')?.webhook_configs?.[0];
    assert.ok(hook, 'no recsys-retrain webhook');
    assert.equal(hook.url, `http://batch:${config.http.ports.batch}${RETRAIN_PATH}`);
    const tokenFile = hook.http_config.authorization.credentials_file;
    assert.ok(text.includes(`"$$RECSYS_RETRAIN_TOKEN" > ${tokenFile}`), `${tokenFile} not written`);
    assert.equal(service('alertmanager').env_file, '.env');
  });

  it('provisions Grafana with the dashboards and a datasource at the prometheus service', () => {
    const dashboards = repoFile('grafana', '/var/lib/grafana/dashboards/recsys');
    assert.equal(relative(root, dashboards), join('deploy', 'grafana', 'dashboards'));
    const provider = parse(
      readFileSync(repoFile('grafana', '/etc/grafana/provisioning/dashboards/recsys.yml'), 'utf8'),
    ) as { providers: { options: { path: string } }[] };
    assert.equal(provider.providers[0]?.options.path, '/var/lib/grafana/dashboards/recsys');
    const ds = parse(
      readFileSync(
        repoFile('grafana', '/etc/grafana/provisioning/datasources/prometheus.yml'),
        'utf8',
      ),
    ) as { datasources: { uid: string; url: string }[] };
    assert.equal(ds.datasources[0]?.url, `http://prometheus:${PROMETHEUS_PORT}`);
    for (const f of readdirSync(dashboards).filter((n) => n.endsWith('.json'))) {
      const uids = [
        ...readFileSync(join(dashboards, f), 'utf8').matchAll(
          /"datasource":\s*\{[^}]*"uid":\s*"([^"]+)"/g,
        ),
      ];
      for (const m of uids) assert.equal(m[1], ds.datasources[0]?.uid, `${f}: datasource uid`);
    }
  });

  it('commits no secret: secrets come from .env, git-ignored; .env.example has none', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const key of Object.keys(environment(name))) {
        assert.doesNotMatch(key, SECRET_NAME, `${name}: ${key} belongs in .env, not compose`);
      }
      if (s.env_file !== undefined) assert.equal(s.env_file, '.env', `${name}: env_file`);
    }
    for (const [key, value] of Object.entries(envExample)) {
      assert.match(key, SECRET_NAME, `.env.example holds secrets only, not ${key}`);
      assert.equal(value, '', `.env.example: ${key} must be empty (no value is a secret)`);
    }
    const secrets = VARIABLES.filter((v) => SECRET_NAME.test(v.name));
    for (const v of secrets) assert.ok(v.name in envExample, `.env.example lacks ${v.name}`);
    const known = secrets.map((v) => v.default).filter(Boolean);
    for (const file of ['docker-compose.yml', '.env.example', 'Dockerfile']) {
      const text = readFileSync(join(root, file), 'utf8');
      for (const value of known) assert.ok(!text.includes(value), `${file} holds a secret value`);
    }
    assert.ok(!existsSync(join(root, 'deploy', 'mosquitto', 'passwd')), 'no committed passwd');
    const ignored = (f: string) =>
      readFileSync(join(root, f), 'utf8')
        .split('\n')
        .map((l) => l.trim());
    assert.ok(ignored('.gitignore').includes('.env'), '.env must be git-ignored');
    assert.ok(ignored('.dockerignore').includes('.env'), '.env must stay out of the image');
  });

  it('stops every service that reads a secret while .env leaves it empty or a placeholder', () => {
    // The app services: loadConfig refuses the published defaults an empty value falls back to.
    for (const name of appServices) {
      for (const unset of [
        envExample,
        { ...envFilled, RECSYS_JWT_SECRET: 'change-me-to-at-least-32-random-characters' },
      ]) {
        assert.throws(
          () => loadConfig({ ...unset, ...environment(name) }),
          (err: unknown) =>
            (err as { code?: string }).code === 'RECSYS_CONFIG_PUBLISHED_SECRET' &&
            /^RECSYS_[A-Z_]+: /.test((err as Error).message),
          `${name} starts without its secrets`,
        );
      }
    }
    // Mosquitto, Alertmanager and Grafana: the guard at the head of their command.
    const guarded: Record<string, string[]> = {
      mosquitto: ['RECSYS_MQTT_PASSWORD', 'MOSQUITTO_HEALTHCHECK_PASSWORD'],
      alertmanager: ['RECSYS_RETRAIN_TOKEN'],
      grafana: ['GF_SECURITY_ADMIN_PASSWORD'],
    };
    for (const [name, variables] of Object.entries(guarded)) {
      assert.equal(runGuards(name, envFilled).code, 0, `${name} refuses random secrets`);
      for (const variable of variables) {
        for (const bad of ['', 'change-me']) {
          const res = runGuards(name, { ...envFilled, [variable]: bad });
          assert.equal(res.code, 1, `${name} starts with ${variable}="${bad}"`);
          assert.match(res.stderr, new RegExp(`set ${variable} in \\.env`));
        }
      }
    }
  });
});

describe('Dockerfile', () => {
  const stages = dockerfile.split(/^(?=FROM\s)/m).filter((s) => s.startsWith('FROM'));
  const stage = (name: string): string => {
    const text = stages.find((s) => new RegExp(`^FROM\\s+\\S+\\s+AS\\s+${name}\\b`, 'i').test(s));
    assert.ok(text, `Dockerfile has no stage ${name}`);
    return text;
  };

  it('builds on the pinned Node.js in several stages', () => {
    assert.match(
      dockerfile,
      new RegExp(`^ARG NODE_VERSION=${VERSIONS.node.replace(/\./g, '\\.')}$`, 'm'),
    );
    assert.ok(stages.length >= 3, 'multi-stage: build, production dependencies, runtime');
    for (const s of stages)
      assert.match(s, /^FROM node:\$\{NODE_VERSION\}-bookworm-slim\b|^FROM runtime\b/);
  });

  it('installs with .npmrc in place, production dependencies only in what runs', () => {
    for (const s of stages.filter((t) => /npm ci/.test(t))) {
      const copy = s.indexOf('.npmrc');
      assert.ok(
        copy >= 0 && copy < s.indexOf('npm ci'),
        '.npmrc before npm ci (onnxruntime-node-install=skip)',
      );
    }
    assert.match(readFileSync(join(root, '.npmrc'), 'utf8'), /^onnxruntime-node-install=skip$/m);
    const runtime = stage('runtime');
    const from = /COPY --from=(\S+) \/app\/node_modules/.exec(runtime)?.[1];
    assert.ok(from, 'runtime copies node_modules from a stage');
    assert.match(stage(from), /npm ci --omit=dev/);
    assert.doesNotMatch(runtime, /npm (ci|install)/);
  });

  it('runs as a non-root user in every stage compose runs', () => {
    const targets = new Set(appServices.map((n) => String(service(n).build?.target)));
    for (const t of targets) {
      const users = [...stage(t).matchAll(/^USER\s+(\S+)/gm)].map((m) => m[1]);
      const last = users[users.length - 1] ?? (t === 'runtime' ? undefined : 'node');
      assert.ok(last && last !== 'root' && last !== '0', `${t}: ends as root`);
    }
  });

  it('ships the files the roles read at run time', () => {
    const runtime = stage('runtime');
    for (const path of ['schemas/*.avsc', 'serving/web', 'batch/python']) {
      assert.ok(runtime.includes(`COPY ${path} `), `runtime lacks ${path}`);
    }
  });
});
