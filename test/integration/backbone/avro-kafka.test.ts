/**
 * Avro over Kafka, proved from both sides: the project's producer writes Confluent-framed Avro
 * (magic byte 0, 4-byte schema id, body) that the project's consumer decodes through the
 * registry, and that kcat, a client from outside the project, reads byte for byte.
 *
 * The kcat on the CI machines is built without libserdes (`kcat -V` lists no Avro; `-s avro`
 * answers "This build of kcat lacks Avro/Schema-Registry support"), so kcat reads the raw bytes
 * and the test decodes the body with the writer schema that `curl` fetches from the registry by
 * the id in the frame header.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import avro from 'avsc';
import type { Admin, Kafka } from 'kafkajs';
import { withTimeout } from '../../../core/retry.js';
import { createConsumer, createKafka, createProducer } from '../../../stream/kafka.js';
import {
  compatibilityOf,
  createEncoder,
  createRegistry,
  decode,
  registerSchema,
  SchemaIncompatibleError,
} from '../../../schemas/registry.js';
import { config, kcatKafka, log, requireServices, run, runBytes, uniq } from '../harness.js';

interface Visit {
  userId: string;
  visits: number;
  note: string | null;
}

const SCHEMA = {
  type: 'record',
  name: 'Visit',
  namespace: 'recsys.test',
  fields: [
    { name: 'userId', type: 'string' },
    { name: 'visits', type: 'long' },
    { name: 'note', type: ['null', 'string'], default: null },
  ],
};

/** avsc decodes records into generated classes; strict deep-equality needs plain objects. */
const plain = (value: object): Record<string, unknown> => ({ ...value });

/**
 * Splits kcat output printed with `-f '%k\t%S\t%s\n'`: key, value length in bytes, value. The
 * length makes the split exact even though an Avro body may contain tabs and newlines.
 */
function parseKcat(buf: Buffer): Array<{ key: string; value: Buffer }> {
  const records: Array<{ key: string; value: Buffer }> = [];
  let pos = 0;
  while (pos < buf.length) {
    const tab1 = buf.indexOf(0x09, pos);
    const tab2 = tab1 < 0 ? -1 : buf.indexOf(0x09, tab1 + 1);
    assert.ok(tab1 >= 0 && tab2 > tab1, `malformed kcat output at byte ${pos}`);
    const length = Number(buf.subarray(tab1 + 1, tab2).toString());
    assert.ok(Number.isInteger(length) && length >= 0, `bad length at byte ${tab1 + 1}`);
    const start = tab2 + 1;
    assert.equal(buf[start + length], 0x0a, `record at byte ${pos} is not newline-terminated`);
    records.push({
      key: buf.subarray(pos, tab1).toString(),
      value: buf.subarray(start, start + length),
    });
    pos = start + length + 1;
  }
  return records;
}

describe('avro over kafka', () => {
  let kafka: Kafka;

  before(() => {
    kafka = createKafka(config.kafka, log, 'test');
  });

  test(
    'kafkajs talks to the pinned broker: one broker, a controller, a cluster id',
    { timeout: 30_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka'))) return;
      const admin = kafka.admin();
      await admin.connect();
      let cluster: Awaited<ReturnType<Admin['describeCluster']>>;
      try {
        cluster = await withTimeout(
          admin.describeCluster(),
          10_000,
          () => new Error('describeCluster timed out'),
        );
      } finally {
        await admin.disconnect();
      }
      assert.equal(cluster.brokers.length, 1);
      const [broker] = cluster.brokers;
      assert.ok(broker);
      assert.equal(cluster.controller, broker.nodeId);
      assert.ok(cluster.clusterId.length > 0);

      // kcat (librdkafka) sees the same single broker with the same node id.
      const meta = await run('kcat', ['-L', '-J', ...kcatKafka, '-m', '10'], {
        timeoutMs: 15_000,
      });
      assert.equal(meta.code, 0, meta.stderr);
      const parsed = JSON.parse(meta.stdout) as { brokers: Array<{ id: number; name: string }> };
      assert.deepEqual(
        parsed.brokers.map((b) => b.id),
        [broker.nodeId],
      );
      assert.equal(parsed.brokers[0]?.name, `${broker.host}:${broker.port}`);
    },
  );

  test(
    'registration is idempotent and pins BACKWARD compatibility',
    { timeout: 60_000 },
    async (t) => {
      if (!(await requireServices(t, 'registry'))) return;
      const subject = `${uniq('test.avro')}-value`;
      const first = await registerSchema(config.registry.url, { subject, schema: SCHEMA });
      const second = await registerSchema(config.registry.url, { subject, schema: SCHEMA });
      assert.equal(typeof first, 'number');
      assert.equal(second, first);
      assert.equal(await compatibilityOf(config.registry.url, subject), 'BACKWARD');

      // The level is enforced, not only stored: a new required field without a default cannot
      // read data written with the old schema.
      const incompatible = {
        ...SCHEMA,
        fields: [...SCHEMA.fields, { name: 'required', type: 'string' }],
      };
      await assert.rejects(
        registerSchema(config.registry.url, { subject, schema: incompatible }),
        SchemaIncompatibleError,
      );
      // An unknown subject has no level of its own.
      assert.equal(await compatibilityOf(config.registry.url, `${uniq('test.none')}-value`), null);
    },
  );

  test(
    'Avro produced by the project is read back by kafkajs and by kcat',
    { timeout: 120_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka', 'registry'))) return;
      const topic = uniq('test.avro');
      const admin = kafka.admin();
      await admin.connect();
      t.after(async () => {
        await admin.deleteTopics({ topics: [topic], timeout: 10_000 }).catch((err: Error) => {
          log.warn({ err, topic }, 'could not delete test topic');
        });
        await admin.disconnect();
      });
      const created = await admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic, numPartitions: 3, replicationFactor: -1 }],
      });
      assert.equal(created, true);

      const schemaId = await registerSchema(config.registry.url, {
        subject: `${topic}-value`,
        schema: SCHEMA,
      });
      const encoder = createEncoder<Visit>(schemaId, SCHEMA);
      const originals: Visit[] = [
        { userId: 'u-alice', visits: 1, note: null },
        // Above 2^32, so a 32-bit truncation anywhere would show.
        { userId: 'u-bob', visits: 1_700_000_000_123, note: 'tab\there, newline\nthere, é' },
        { userId: 'u-carol', visits: -42, note: '' },
      ];
      const byUser = new Map(originals.map((v) => [v.userId, v]));

      const producer = createProducer(kafka);
      await producer.connect();
      try {
        await producer.send({
          topic,
          messages: originals.map((v) => ({ key: v.userId, value: encoder.encode(v) })),
        });
      } finally {
        await producer.disconnect();
      }

      // The project's consumer decodes through the registry.
      const registry = createRegistry(config.registry.url);
      const consumer = createConsumer(kafka, { groupId: uniq('test-avro') });
      const received = new Map<string, Visit>();
      try {
        await consumer.connect();
        await consumer.subscribe({ topic, fromBeginning: true });
        await withTimeout(
          new Promise<void>((resolve, reject) => {
            consumer
              .run({
                eachMessage: async ({ message }) => {
                  assert.ok(message.key && message.value);
                  const value = plain(
                    await decode<Visit>(registry, message.value),
                  ) as unknown as Visit;
                  received.set(message.key.toString(), value);
                  if (received.size === originals.length) resolve();
                },
              })
              .catch(reject);
          }),
          60_000,
          () =>
            new Error(`consumer received ${received.size} of ${originals.length} messages in 60 s`),
        );
      } finally {
        await consumer.disconnect();
      }
      assert.deepEqual(received, byUser);

      // kcat, from outside: key, frame header and body.
      const kcatOut = await runBytes(
        'kcat',
        ['-C', '-q', ...kcatKafka, '-t', topic, '-o', 'beginning', '-e', '-f', '%k\t%S\t%s\n'],
        { timeoutMs: 30_000 },
      );
      assert.equal(kcatOut.code, 0, kcatOut.stderr);
      const records = parseKcat(kcatOut.stdout);
      assert.equal(records.length, originals.length);

      const fetched = await run('curl', [
        '-s',
        '-f',
        '--max-time',
        '10',
        `${config.registry.url}/schemas/ids/${schemaId}`,
      ]);
      assert.equal(fetched.code, 0, `curl exited ${fetched.code}: ${fetched.stderr}`);
      const writerType = avro.Type.forSchema(
        JSON.parse((JSON.parse(fetched.stdout) as { schema: string }).schema) as avro.Schema,
      );

      const seen = new Map<string, Visit>();
      for (const { key, value } of records) {
        assert.equal(value.readUInt8(0), 0, 'magic byte');
        assert.equal(value.readUInt32BE(1), schemaId, 'schema id in the frame header');
        seen.set(
          key,
          plain(writerType.fromBuffer(value.subarray(5)) as object) as unknown as Visit,
        );
      }
      assert.deepEqual(seen, byUser);
    },
  );
});
