/**
 * Readiness goes red for the dependency that died, names it, and answers quickly; the others
 * stay green. The dying dependency is a throwaway redis-server this test starts on a free port
 * (the shared one on 6379 is never touched); Kafka is the real, shared broker.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withTimeout } from '../../../core/retry.js';
import { checkHealth } from '../../../core/index.js';
import { createKafka, kafkaHealth } from '../../../stream/kafka.js';
import { createRedis, redisHealth, type Redis } from '../../../store/redis.js';
import { config, log, requireServices } from '../harness.js';
import { freePort } from '../ingest/bridge-process.js';

function waitReady(redis: Redis, ms: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return withTimeout(
    new Promise<void>((resolve) => redis.once('ready', () => resolve())),
    ms,
    () => new Error(`throwaway redis not ready within ${ms} ms (status ${redis.status})`),
  );
}

describe('readiness', () => {
  test(
    'a dead dependency turns readiness red, named, within the bound; the rest stays green',
    { timeout: 60_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka'))) return;
      const port = await freePort();
      const server: ChildProcess = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--daemonize',
          'no',
        ],
        { stdio: 'ignore' },
      );
      const serverExit = new Promise<void>((resolve) => server.once('exit', () => resolve()));
      const redis = createRedis(`redis://127.0.0.1:${port}`, 'test-readiness') as Redis;
      // The first connection attempts may come before the server listens; ioredis retries.
      redis.on('error', () => undefined);
      const kafka = createKafka(config.kafka, log, 'test');
      const checks = {
        redis: () => redisHealth(redis, 500),
        kafka: () => kafkaHealth(kafka, 1000),
      };
      try {
        await waitReady(redis, 10_000);
        const green = await checkHealth(checks, 1000);
        assert.equal(green.ok, true, JSON.stringify(green));
        assert.equal(green.checks.redis?.ok, true);
        assert.equal(green.checks.kafka?.ok, true);

        server.kill('SIGKILL');
        await withTimeout(serverExit, 5000, () => new Error('redis-server did not die'));

        const t0 = performance.now();
        const red = await checkHealth(checks, 1000);
        const elapsedMs = performance.now() - t0;
        assert.ok(elapsedMs < 2500, `report took ${Math.round(elapsedMs)} ms`);
        assert.equal(red.ok, false, JSON.stringify(red));
        assert.equal(red.checks.redis?.ok, false);
        assert.match(red.checks.redis?.error ?? '', /redis/);
        assert.equal(red.checks.kafka?.ok, true, JSON.stringify(red.checks.kafka));
      } finally {
        // quit() would wait for a server that is gone; disconnect() also stops reconnecting.
        redis.disconnect();
        if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
        await serverExit;
      }
    },
  );
  test('Kafka readiness stays green while the first seed brokers refuse', async (t) => {
    if (!(await requireServices(t, 'kafka'))) return;
    // Two closed ports before the real brokers: kafkajs starts each new client at the first seed
    // (the cluster fault matrix's processes all went unready while kafka-1 was down).
    const closed = [await freePort(), await freePort()].map((p) => `127.0.0.1:${p}`);
    const kafka = createKafka(
      { ...config.kafka, brokers: [...closed, ...config.kafka.brokers] },
      log,
      'test-seeds',
    );
    // kafkajs waits about 100 and 200 ms before the next seeds; a loaded machine needs more.
    for (let i = 0; i < 5; i++) {
      const report = await checkHealth({ kafka: () => kafkaHealth(kafka, 3000) }, 3000);
      assert.equal(report.ok, true, JSON.stringify(report));
    }
    // All seeds closed: red within the bound.
    const dead = createKafka({ ...config.kafka, brokers: closed }, log, 'test-seeds-dead');
    const t0 = performance.now();
    const red = await checkHealth({ kafka: () => kafkaHealth(dead, 1000) }, 1000);
    assert.equal(red.ok, false);
    assert.ok(performance.now() - t0 < 2500, 'red within the bound');
  });
});
