// Every Kafka and Elasticsearch client is built by one factory (stream/kafka.ts, stream/elastic.ts),
// so every one of them, in the product, deploy/local, the benchmarks and the tests, logs in with
// the configured credentials (RECSYS_KAFKA_SASL_*, RECSYS_ES_API_KEY). Redis clients take theirs
// from RECSYS_REDIS_URL itself, and the product builds them in store/redis.ts alone (createRedis:
// one node or a Redis Cluster). Read from the TypeScript sources.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../../core/config.js';
import { ConfigError } from '../../../core/errors.js';
import { elasticAuthHeaders } from '../../../stream/elastic.js';
import { tsSources } from '../source-files.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
const FOLDERS = [
  'core',
  'schemas',
  'store',
  'stream',
  'serving',
  'batch',
  'deploy',
  'bench',
  'test',
];

function sources(): string[] {
  return tsSources(ROOT, FOLDERS);
}

/** Files (relative) whose text matches `pattern`. */
function filesMatching(pattern: RegExp): string[] {
  return sources()
    .filter((f) => pattern.test(readFileSync(f, 'utf8')))
    .map((f) => relative(ROOT, f));
}

describe('client factories', () => {
  it('builds kafkajs clients only in stream/kafka.ts', () => {
    // `new kafkajs.Kafka(`, `new Kafka(` (a named import), in code; this file names them in text.
    const builders = filesMatching(/new\s+(kafkajs\s*\.\s*)?Kafka\s*\(/).filter(
      (f) => f !== 'test/unit/stream/client-factories.test.ts',
    );
    assert.deepEqual(builders, ['stream/kafka.ts']);
  });

  it('builds Elasticsearch clients only in stream/elastic.ts', () => {
    const builders = sources()
      .filter((f) => {
        const text = readFileSync(f, 'utf8');
        return text.includes("'@elastic/elasticsearch'") && /new\s+Client\s*\(/.test(text);
      })
      .map((f) => relative(ROOT, f));
    assert.deepEqual(builders, ['stream/elastic.ts']);
  });

  it('builds ioredis clients of the product only in store/redis.ts (one node or a cluster)', () => {
    // `new Redis(`, `new Cluster(`, `new IORedis(` in the product's folders (benchmarks and tests
    // may build their own against a known single node).
    const product = new Set(['core', 'schemas', 'store', 'stream', 'serving', 'batch', 'deploy']);
    const builders = sources()
      .filter((f) => product.has(relative(ROOT, f).split('/')[0] as string))
      .filter((f) => /new\s+(Redis|Cluster|IORedis)\s*\(/.test(readFileSync(f, 'utf8')))
      .map((f) => relative(ROOT, f));
    assert.deepEqual(builders, ['store/redis.ts']);
  });

  it('gives the benchmarks their Redis from the same factory (bench/redis.ts), so they run on a cluster too', () => {
    const builders = sources()
      .filter((f) => relative(ROOT, f).startsWith('bench/'))
      .filter((f) => /new\s+(Redis|Cluster|IORedis)\s*\(/.test(readFileSync(f, 'utf8')))
      .map((f) => relative(ROOT, f));
    // The replay's stack keeps a single-node connection of its own (its database's FLUSHDB); the
    // cluster fault run talks to each Redis node by port (which node is master of a slot, its pid).
    assert.deepEqual(builders, ['bench/chaos/cluster-faults.ts', 'bench/replay/stack.ts']);
  });

  it('reads Kafka SASL: none by default, a mechanism needs a user and a password', () => {
    assert.equal(loadConfig({ RECSYS_ENV: 'development' }).kafka.sasl, null);
    assert.deepEqual(
      loadConfig({
        RECSYS_ENV: 'development',
        RECSYS_KAFKA_SASL_MECHANISM: 'SCRAM-SHA-512',
        RECSYS_KAFKA_USERNAME: 'app',
        RECSYS_KAFKA_PASSWORD: 'pw',
      }).kafka.sasl,
      { mechanism: 'scram-sha-512', username: 'app', password: 'pw' },
    );
    const fails = (env: Record<string, string>, variable: string): void =>
      assert.throws(
        () => loadConfig(env),
        (err: unknown) => err instanceof ConfigError && err.variable === variable,
      );
    fails({ RECSYS_KAFKA_SASL_MECHANISM: 'gssapi' }, 'RECSYS_KAFKA_SASL_MECHANISM');
    fails({ RECSYS_KAFKA_SASL_MECHANISM: 'scram-sha-256' }, 'RECSYS_KAFKA_USERNAME');
    fails(
      { RECSYS_KAFKA_SASL_MECHANISM: 'plain', RECSYS_KAFKA_USERNAME: 'app' },
      'RECSYS_KAFKA_PASSWORD',
    );
  });

  it('turns RECSYS_ES_API_KEY into Authorization: ApiKey for fetch and curl, none without it', () => {
    const es = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_ES_API_KEY: 'a2V5OnNlY3JldA==',
    }).elasticsearch;
    assert.deepEqual(elasticAuthHeaders(es), { authorization: 'ApiKey a2V5OnNlY3JldA==' });
    assert.deepEqual(
      elasticAuthHeaders(loadConfig({ RECSYS_ENV: 'development' }).elasticsearch),
      {},
    );
  });
});
