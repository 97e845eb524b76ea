/**
 * Consumer lag read on a timer. The consumer loop sets `recsys_consumer_lag_messages` as it
 * resolves records, so a consumer that stops consuming (a handler stuck on a dependency, a
 * wedged partition) would keep showing its last, small lag while records pile up. Every
 * `intervalMs` this reads, for the partitions this member holds, the high watermark and the
 * group's committed offset from Kafka and sets the gauge to what is behind.
 *
 * Only partitions assigned to this member are reported: the alert rule sums the gauge by group,
 * so two members reporting the same partition would count it twice. A partition that leaves the
 * assignment has its series removed. Behind is measured from the later of the committed offset
 * and what this member resolved but has not committed yet (commits run every
 * RECSYS_CONSUMER_COMMIT_INTERVAL_MS), so the timer never reports more than the loop does.
 *
 * @example
 *   const lag = startLagPoller({ kafka, groupId, gauge: metrics.lag, intervalMs: 15_000, log });
 *   lag.assign({ 'recsys.events.v1': [0, 1, 2] });
 *   lag.resolved('recsys.events.v1', 0, '41');
 *   await lag.stop();
 */
import type { Admin, Kafka } from 'kafkajs';
import type { Gauge } from 'prom-client';
import type { Logger } from '../core/index.js';

export interface LagPollerOptions {
  kafka: Kafka;
  groupId: string;
  gauge: Gauge<'group' | 'topic' | 'partition'>;
  /** How often lag is read, ms; 0 starts no timer (`pollOnce` still works). */
  intervalMs: number;
  log: Logger;
}

export interface LagPoller {
  /** The member's assignment after a (re)join: topic to partitions. */
  assign(assignment: Record<string, number[]>): void;
  /** The loop resolved `offset` on this partition (the next record is offset + 1). */
  resolved(topic: string, partition: number, offset: string): void;
  /** Reads and sets the lag of every assigned partition now. */
  pollOnce(): Promise<void>;
  stop(): Promise<void>;
}

const key = (topic: string, partition: number): string => `${topic}\u0000${partition}`;

export function startLagPoller(options: LagPollerOptions): LagPoller {
  const { kafka, groupId, gauge, intervalMs, log } = options;
  let assignment: Record<string, number[]> = {};
  /** Next offset to consume per partition, as this member resolved it. */
  const next = new Map<string, number>();
  let admin: Admin | null = null;
  let connecting: Promise<Admin> | null = null;
  let polling: Promise<void> | null = null;
  let stopped = false;

  const connect = (): Promise<Admin> => {
    connecting ??= (async () => {
      const a = kafka.admin();
      await a.connect();
      admin = a;
      return a;
    })().catch((err: unknown) => {
      connecting = null;
      throw err;
    });
    return connecting;
  };

  const poll = async (): Promise<void> => {
    const topics = Object.keys(assignment).filter((t) => (assignment[t]?.length ?? 0) > 0);
    if (topics.length === 0 || stopped) return;
    const a = await connect();
    const committed = await a.fetchOffsets({ groupId, topics });
    for (const topic of topics) {
      const ends = await a.fetchTopicOffsets(topic);
      const group = committed.find((c) => c.topic === topic)?.partitions ?? [];
      for (const partition of assignment[topic] ?? []) {
        const end = ends.find((e) => e.partition === partition);
        if (!end) continue;
        const c = Number(group.find((p) => p.partition === partition)?.offset ?? -1);
        // No commit yet: the group starts at the log start (fromBeginning) or the member's own.
        const from = Math.max(c >= 0 ? c : Number(end.low), next.get(key(topic, partition)) ?? 0);
        gauge.set(
          { group: groupId, topic, partition: String(partition) },
          Math.max(0, Number(end.high) - from),
        );
      }
    }
  };

  const pollOnce = (): Promise<void> => {
    polling ??= poll().finally(() => (polling = null));
    return polling;
  };

  const timer =
    intervalMs > 0
      ? setInterval(() => {
          pollOnce().catch((err: Error) =>
            log.warn({ group: groupId, err: err.message }, 'reading consumer lag failed'),
          );
        }, intervalMs)
      : null;
  timer?.unref();

  return {
    assign(value) {
      for (const [topic, partitions] of Object.entries(assignment)) {
        for (const partition of partitions) {
          if (value[topic]?.includes(partition)) continue;
          gauge.remove({ group: groupId, topic, partition: String(partition) });
          next.delete(key(topic, partition));
        }
      }
      assignment = value;
    },
    resolved(topic, partition, offset) {
      next.set(key(topic, partition), Number(offset) + 1);
    },
    pollOnce,
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await polling?.catch(() => undefined);
      await admin?.disconnect().catch(() => undefined);
    },
  };
}
