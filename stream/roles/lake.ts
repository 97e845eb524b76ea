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
import type { RoleDeps, StreamRole } from '../../core/index.js';
import type { DlqRecord, UserEvent } from '../../schemas/index.js';
import type { ConsumedRecord } from '../consumer.js';
import { isLakeTime } from '../lake-layout.js';
import { lakeMetrics } from '../lake-metrics.js';
import { LakeWriter } from '../lake-writer.js';
import { consumerRole } from './consumer-role.js';

export function startLake(deps: RoleDeps): StreamRole {
  const { config, metrics } = deps;
  let writer: LakeWriter | null = null;
  const refused = new Counter({
    name: 'recsys_lake_refused_records_total',
    help: 'events whose ts or receivedAt no Parquet timestamp holds, sent to the DLQ',
    registers: [metrics],
  });
  const opened = (): LakeWriter => {
    if (!writer) throw new Error('lake: still starting');
    return writer;
  };
  return consumerRole<UserEvent>(deps, {
    role: 'lake',
    label: 'lake sink',
    groupId: config.consumer.groups.lake,
    topics: [config.kafka.topics.events],
    open: async ({ forever, log }) => {
      writer = await forever('lake directory', () =>
        LakeWriter.open({
          dir: config.lake.dir,
          rollRecords: config.lake.rollRecords,
          rollMs: config.lake.rollMs,
          log,
          metrics: lakeMetrics(metrics),
        }),
      );
    },
    handle:
      ({ deadLetter, log }) =>
      async (records, chunk) => {
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
        await opened().take(good, chunk);
      },
    deferred: () => ({
      revoked: () => opened().revokeAll(),
      assigned: (topic, partition, offset, commit) =>
        opened().assign(topic, partition, offset, commit),
      drain: () => opened().drain(),
    }),
    checks: {
      lake: async () => {
        const failure = opened().failure;
        if (failure) throw new Error(`lake: writing files fails: ${failure.message}`);
        await probeWritable(config.lake.dir);
      },
    },
    onStop: async () => {
      await writer?.close();
    },
  });
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
