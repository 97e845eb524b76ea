import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EVENT_TYPE_NAMES, loadConfig } from '../../../core/config.js';
import { VARIABLES } from '../../../core/config-variables.js';
import { ConfigError } from '../../../core/errors.js';
import { EVENT_TYPES } from '../../../schemas/index.js';

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

describe('loadConfig', () => {
  it('fills every value from documented defaults and freezes the result', () => {
    const config = loadConfig({});
    assert.deepEqual(config.kafka.brokers, ['127.0.0.1:9092']);
    assert.equal(config.kafka.topics.events, 'recsys.events.v1');
    assert.equal(config.ingest.maxEventBytes, 16384);
    assert.equal(config.ingest.maxQueuedBytes, 64 << 20);
    assert.equal(config.ingest.dlqTimeoutMs, 5000);
    assert.equal(config.shutdownTimeoutMs, 10_000);
    assert.ok(Object.isFrozen(config) && Object.isFrozen(config.kafka.topics));
    assert.throws(() => {
      (config.kafka as { partitions: number }).partitions = 1;
    }, TypeError);
  });

  it('reads overrides and trims list entries and trailing slashes', () => {
    const config = loadConfig({
      RECSYS_KAFKA_BROKERS: 'a:1, b:2',
      RECSYS_SCHEMA_REGISTRY_URL: 'http://reg:8081/apis/ccompat/v7/',
      RECSYS_HTTP_PORT: '0',
    });
    assert.deepEqual(config.kafka.brokers, ['a:1', 'b:2']);
    assert.equal(config.registry.url, 'http://reg:8081/apis/ccompat/v7');
    assert.equal(config.http.port, 0);
  });

  it('names the variable when a value is invalid', () => {
    for (const [name, value] of [
      ['RECSYS_HTTP_PORT', '70000'],
      ['RECSYS_TOPIC_PARTITIONS', 'six'],
      ['RECSYS_REDIS_URL', 'http://x'],
      ['RECSYS_ES_URL', 'not a url'],
      ['RECSYS_KAFKA_BROKERS', ' , '],
      ['RECSYS_INGEST_MAX_QUEUED_BYTES', '65536'],
      ['RECSYS_SHUTDOWN_TIMEOUT_MS', '0'],
    ] as const) {
      assert.throws(
        () => loadConfig({ [name]: value }),
        (err: unknown) =>
          err instanceof ConfigError && err.variable === name && err.message.startsWith(name),
        name,
      );
    }
  });

  it("takes the consumed event types from the schema's types, and refuses others", () => {
    assert.deepEqual([...EVENT_TYPE_NAMES].sort(), [...EVENT_TYPES].sort());
    assert.deepEqual(
      loadConfig({ RECSYS_FEATURES_CONSUMED_TYPES: 'purchase' }).features.consumedTypes,
      ['purchase'],
    );
    assert.throws(
      () => loadConfig({ RECSYS_FEATURES_CONSUMED_TYPES: 'purchase,wish' }),
      (err: unknown) =>
        err instanceof ConfigError && err.variable === 'RECSYS_FEATURES_CONSUMED_TYPES',
    );
  });

  it('expands ~ in the cache dir from HOME', () => {
    assert.equal(loadConfig({ HOME: '/home/x' }).local.cacheDir, '/home/x/.cache/recsys');
  });

  it('is documented in the README with the same defaults', () => {
    const readme = readFileSync(join(repoRoot(), 'README.md'), 'utf8');
    for (const v of VARIABLES) {
      const row = readme
        .split('\n')
        .find((line) => new RegExp(`^\\|\\s*\`${v.name}\`\\s*\\|`).test(line));
      assert.ok(row, `README has no row for ${v.name}`);
      assert.ok(
        v.default === '' ? row.includes('(unset)') : row.includes(`\`${v.default}\``),
        `README row for ${v.name} does not show its default ${v.default}`,
      );
    }
  });
});
