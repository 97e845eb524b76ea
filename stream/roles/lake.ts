/**
 * The lake role: archives `recsys.events.v1` as Parquet in its own consumer group, partitioned
 * by the UTC date and hour of each event (see `lake-layout.ts` for the layout and
 * `lake-writer.ts` for how files roll and when offsets are committed). It runs the shared
 * consumer loop in deferred mode: a chunk is taken at once, and its offsets are committed only
 * once the files holding its records are renamed into place. A redelivery (restart, rebalance,
 * crash between rename and commit, new group) rewrites the uncommitted ranges instead of adding
 * to them, so the lake holds each record once.
 *
 * @example
 *   const lake = startLake({ config, log, metrics });
 *   await lake.ready;
 *   await lake.stop(); // rolls the open files and commits them
 */
import { randomUUID } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Counter } from 'prom-client';
import { createDecoder, type DlqRecord, type UserEvent } from '../../schemas/index.js';
import {
  consumerMetrics,
  startConsumer,
  type ConsumedRecord,
  type ConsumerHandle,
} from '../consumer.js';
import { createDeadLetter, undecodableToDlq, type DeadLetter } from '../dead-letter.js';
import { checkHealth, retryForever, type RoleDeps, type StreamRole } from '../../core/index.js';
import { createKafka, createProducer, ensureTopics, kafkaHealth } from '../kafka.js';
import { isLakeTime } from '../lake-layout.js';
import { lakeMetrics, LakeWriter } from '../lake-writer.js';
import { consumerCheck, consumerFailure } from './role.js';

export function startLake({ config, log: parent, metrics }: RoleDeps): StreamRole {
  const log = parent.child({ role: 'lake' });
  const kafka = createKafka(config.kafka, log, 'lake');
  const producer = createProducer(kafka);
  const stopping = new AbortController();
  let writer: LakeWriter | null = null;
  let consumer: ConsumerHandle | null = null;
  let stopped: Promise<void> | null = null;
  const refused = new Counter({
    name: 'recsys_lake_refused_records_total',
    help: 'events whose ts or receivedAt no Parquet timestamp holds, sent to the DLQ',
    registers: [metrics],
  });

  const forever = retryForever(log, stopping.signal);

  const ready = (async () => {
    await forever('kafka topics', () => ensureTopics(kafka, config.kafka, log));
    await forever('kafka producer connect', () => producer.connect());
    const deadLetter: DeadLetter = await forever('dlq schema', () =>
      createDeadLetter(config, producer),
    );
    const w = await forever('lake directory', () =>
      LakeWriter.open({
        dir: config.lake.dir,
        rollRecords: config.lake.rollRecords,
        rollMs: config.lake.rollMs,
        log,
        metrics: lakeMetrics(metrics),
      }),
    );
    writer = w;
    stopping.signal.throwIfAborted();
    const tuning = config.consumer;
    consumer = startConsumer<UserEvent>({
      kafka,
      groupId: tuning.groups.lake,
      topics: [config.kafka.topics.events],
      decoder: createDecoder<UserEvent>(config.registry.url),
      log,
      metrics: consumerMetrics(metrics),
      tuning,
      undecodable: (bad) => deadLetter(bad.map((r) => undecodableToDlq(r))),
      handle: async (records, chunk) => {
        // The bridge accepts only times near its clock; anything else reached Kafka another
        // way and cannot be filed by hour or stored as a Parquet timestamp.
        const good: ConsumedRecord<UserEvent>[] = [];
        const bad: ConsumedRecord<UserEvent>[] = [];
        for (const r of records) {
          (isLakeTime(r.value.ts) && isLakeTime(r.value.receivedAt) ? good : bad).push(r);
        }
        if (bad.length > 0) {
          await deadLetter(bad.map(refusedToDlq));
          refused.inc(bad.length);
          log.warn(
            { count: bad.length, offset: bad[0]?.offset },
            'events with unstorable times dead-lettered',
          );
        }
        await w.take(good, chunk);
      },
      deferred: {
        revoked: () => w.revokeAll(),
        assigned: (topic, partition, offset, commit) => w.assign(topic, partition, offset, commit),
        drain: () => w.drain(),
      },
    });
    await consumer.ready;
    log.info(
      { group: tuning.groups.lake, dir: config.lake.dir, rollRecords: config.lake.rollRecords },
      'lake sink ready',
    );
  })();
  ready.catch(() => undefined);

  const failed = consumerFailure(ready, () => consumer);

  return {
    ready,
    failed,
    readiness: () =>
      checkHealth(
        {
          kafka: () => kafkaHealth(kafka, config.healthTimeoutMs),
          lake: async () => {
            if (!writer) throw new Error('lake: still starting');
            const failure = writer.failure;
            if (failure) throw new Error(`lake: writing files fails: ${failure.message}`);
            await probeWritable(config.lake.dir);
          },
          consumer: consumerCheck(() => consumer),
        },
        config.healthTimeoutMs,
      ),
    stop() {
      stopped ??= (async () => {
        stopping.abort(new Error('stopping'));
        // The consumer first: its stop drains the writer (rolls and commits what was taken).
        await consumer?.stop();
        await ready.catch(() => undefined);
        await writer?.close();
        await producer.disconnect().catch(() => undefined);
        log.info('lake sink stopped');
      })();
      return stopped;
    },
  };
}

/** Creates and removes a file in the lake root: catches a full, read-only or missing disk. */
async function probeWritable(dir: string): Promise<void> {
  const probe = join(dir, `.probe-${randomUUID()}`);
  try {
    await writeFile(probe, 'ok');
  } catch (err) {
    throw new Error(`lake: ${dir} is not writable: ${(err as Error).message}`);
  }
  await rm(probe, { force: true });
}

function refusedToDlq(r: ConsumedRecord<UserEvent>): DlqRecord {
  const e = r.value;
  const field = isLakeTime(e.ts) ? 'receivedAt' : 'ts';
  return {
    reason: 'lake_time_out_of_range',
    message: `${r.topic}/${r.partition}@${r.offset}: ${field} ${e[field]} is outside years 0000-9999`,
    field,
    source: e.source,
    topic: r.topic,
    userId: e.userId,
    receivedAt: Date.now(),
    // The Kafka value is decoded by now; the DLQ keeps the event as JSON.
    original: Buffer.from(JSON.stringify(e)),
  };
}
