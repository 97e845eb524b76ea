/**
 * The short fault matrix (`npm run chaos` runs the whole one): a small steady load over MQTT
 * (QoS 1 and 0) and HTTP with re-sends and malformed payloads, feeds and live sockets, while
 * the bridge, the features role and the lake sink are SIGKILLed and restarted one after the
 * other, and then the whole feed server. Only processes the run started itself are killed; the
 * backbone is not touched (a shared stack is fine). Afterwards nothing accepted may be missing
 * from Kafka, Redis, Elasticsearch or the lake, nothing may be applied or stored twice, and
 * every malformed payload must be in the DLQ with its reason. What the harness read is checked
 * against the real clients: kcat (the events topic), redis-cli (applied counts) and curl
 * (Elasticsearch's count).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { USER_FIELDS, userFeaturesKey } from '../../../store/keys.js';
import { dataStreamName } from '../../../stream/indexer-docs.js';
import { CHAOS_DEFAULTS, runChaos } from '../../../bench/chaos/run.js';
import { markdownTable } from '../../../bench/chaos/report.js';
import { config, esCurlAuth, kcatArgs, requireServices, run } from '../harness.js';

const DB = Number(process.env.RECSYS_TEST_REDIS_DB ?? 11);

test(
  'short fault matrix: nothing accepted is lost or applied twice',
  { timeout: 290_000 },
  async (t) => {
    if (!(await requireServices(t, 'kafka', 'registry', 'redis', 'mosquitto', 'elasticsearch'))) {
      return;
    }
    const logDir = await mkdtemp(join(tmpdir(), 'recsys-chaos-'));
    const checked = { kcat: 0, redis: 0, es: 0 };
    const result = await runChaos({
      ...CHAOS_DEFAULTS,
      faults: ['kill bridge', 'kill features', 'kill lake', 'kill serving'],
      rate: 60,
      mqttUsers: 3,
      httpUsers: 3,
      webUsers: 2,
      feedRate: 5,
      liveSockets: 2,
      warmMs: 4000,
      steadyMs: 2000,
      recoveryTimeoutMs: 90_000,
      restartDelayMs: 500,
      db: DB,
      // A killed consumer's partitions move on after this session timeout (30 s by default).
      env: { RECSYS_CONSUMER_SESSION_TIMEOUT_MS: '6000' },
      localDir: resolve(config.local.dir),
      logDir,
      say: (line) => t.diagnostic(line),
      inspect: async (stack, seen) => {
        const cfg = stack.config;
        // kcat: the distinct eventIds of the run's users in the events topic.
        const kcat = await run(
          'kcat',
          [
            ...kcatArgs(cfg),
            '-C',
            '-t',
            cfg.kafka.topics.events,
            '-o',
            'beginning',
            '-e',
            '-q',
            '-f',
            '%k %h\\n',
          ],
          { timeoutMs: 60_000 },
        );
        assert.equal(kcat.code, 0, kcat.stderr);
        const ours = new Set<string>();
        for (const line of kcat.stdout.split('\n')) {
          const [key, headers] = line.split(' ');
          const id = /event-id=([0-9a-f-]{36})/.exec(headers ?? '')?.[1];
          if (key?.startsWith(stack.id) && id) ours.add(id);
        }
        const harness = [...seen.kafka].filter(([, c]) => c[0]?.userId.startsWith(stack.id));
        assert.equal(ours.size, harness.length, 'kcat and the harness disagree on the eventIds');
        checked.kcat = ours.size;
        // redis-cli: each user's applied count as the harness read it.
        assert.ok(seen.applied && seen.indexed, `stores not read: ${seen.unread.join('; ')}`);
        for (const [user, n] of [...seen.applied].slice(0, 8)) {
          const cli = await run('redis-cli', [
            '-u',
            cfg.redis.url,
            'HGET',
            userFeaturesKey(user),
            USER_FIELDS.total,
          ]);
          assert.equal(Number(cli.stdout.trim() || 0), n, `redis-cli: ${user}`);
          checked.redis++;
        }
        // curl: the events data stream's document count.
        const index = dataStreamName('events', cfg.indexer.namespace);
        const curl = await run('curl', [
          '-s',
          ...esCurlAuth(cfg),
          `${cfg.elasticsearch.url}/${index}/_count`,
        ]);
        const count = (JSON.parse(curl.stdout) as { count: number }).count;
        assert.equal(count, seen.indexed.size, 'curl _count and the harness disagree');
        checked.es = count;
      },
    }).finally(() => rm(logDir, { recursive: true, force: true }));

    for (const line of markdownTable(result.rows).split('\n')) t.diagnostic(line);
    t.diagnostic(
      `checked with kcat ${checked.kcat} eventIds, redis-cli ${checked.redis} users, curl ${checked.es} documents`,
    );
    assert.ok(checked.kcat > 0 && checked.redis > 0 && checked.es > 0, 'the external checks ran');
    assert.deepEqual(result.uncommitted, {}, 'a consumer group did not catch up');
    for (const row of result.rows) {
      assert.ok(row.accepted > 100, `${row.fault}: only ${row.accepted} events accepted`);
      assert.ok(row.load.duplicatesSent > 0, `${row.fault}: no re-sends were made`);
      assert.ok(row.malformed.sent > 0, `${row.fault}: no malformed payloads were sent`);
      assert.ok(row.load.feedsOk > 0, `${row.fault}: no feed was answered`);
      assert.ok(row.recovery?.recoveredMs != null, `${row.fault}: did not recover`);
    }
    assert.deepEqual(result.failures, [], result.failures.join('\n'));
  },
);
