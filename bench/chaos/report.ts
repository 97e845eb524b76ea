/**
 * The fault matrix's figures: one row per fault (phase), from what the clients recorded (the
 * ledger) and what the stores hold at the end (`observe.ts`).
 *
 * Per phase, over the events its users sent:
 * - accepted: eventIds acknowledged at least once (HTTP 202 or an MQTT PUBACK);
 * - lost: Kafka, an accepted eventId with no record in the events topic; Redis, per user the
 *   distinct eventIds of the user in Kafka minus the features' applied count `n`, when
 *   positive; Elasticsearch, an eventId in Kafka without a document; lake, an eventId in Kafka
 *   without a row;
 * - duplicated: Kafka, records beyond the acknowledged (and QoS 0) sends of their eventId (at-least-once:
 *   a retry after a lost answer or a redelivery to a restarted bridge; allowed, and what the
 *   stores must absorb); Redis, applied beyond the distinct eventIds (double-applied);
 *   Elasticsearch, documents beyond one per eventId; lake, rows beyond one per Kafka record;
 * - malformed: sent, answered (400 or PUBACK), found in the DLQ with the expected reason.
 * Events not in Kafka that were never accepted (QoS 0, given-up HTTP requests) are not lost;
 * QoS 0 arrivals are shown apart. Events in Kafka count for the stores whether or not the
 * client saw the acknowledgement.
 */
import type { Ledger } from './events.js';
import type { Recovery } from './faults.js';
import type { PhaseStats } from './events.js';
import type { KafkaCopy } from './observe.js';

/** What the stores hold; null for a store that could not be read (see `unread`). */
export interface Observed {
  kafka: Map<string, KafkaCopy[]>;
  dlq: { reason: string; original: string }[] | null;
  applied: Map<string, number> | null;
  indexed: Map<string, number> | null;
  lake: Map<string, string[]> | null;
  /** Stores that could not be read, with the error. */
  unread: string[];
  /** Items whose Redis entry is not their last value in the items topic, by phase. */
  catalogStale: Map<number, number>;
}

/** Per store; null when the store could not be read. */
export interface FourWay {
  kafka: number;
  redis: number | null;
  es: number | null;
  lake: number | null;
}

export interface Row {
  phase: number;
  fault: string;
  sent: number;
  accepted: number;
  lost: FourWay;
  duplicated: FourWay;
  qos0: { sent: number; arrived: number };
  malformed: { sent: number; answered: number; inDlq: number | null; wrongReason: number };
  catalogStale: number;
  /** Up to 20 accepted events missing from Kafka: what the ledger knows of each. */
  lostSamples: { eventId: string; userId: string; channel: string; sends: number; acks: number }[];
  /** Events in Kafka missing from the lake, as offset ranges per partition (first copy each). */
  lakeLost: { partition: number; from: string; to: string; count: number }[];
  load: PhaseStats;
  recovery: Recovery | null;
}

const UUID_G = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;

/** (partition, offset) pairs as runs of consecutive offsets per partition. */
function offsetRanges(
  pairs: [number, number][],
): { partition: number; from: string; to: string; count: number }[] {
  pairs.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: { partition: number; from: string; to: string; count: number }[] = [];
  for (const [partition, offset] of pairs) {
    const last = out[out.length - 1];
    if (last && last.partition === partition && Number(last.to) + 1 >= offset) {
      last.to = String(offset);
      last.count++;
    } else out.push({ partition, from: String(offset), to: String(offset), count: 1 });
  }
  return out;
}

/** Adds to a count that stays null when its store was not read. */
const add = (v: number | null, n: number): number | null => (v === null ? null : v + n);

export function computeRows(
  faults: { phase: number; fault: string; recovery: Recovery | null }[],
  ledger: Ledger,
  stats: Map<number, PhaseStats>,
  seen: Observed,
): Row[] {
  const rows = new Map<number, Row>();
  const zero = (): FourWay => ({
    kafka: 0,
    redis: seen.applied ? 0 : null,
    es: seen.indexed ? 0 : null,
    lake: seen.lake ? 0 : null,
  });
  for (const f of faults) {
    rows.set(f.phase, {
      ...f,
      sent: 0,
      accepted: 0,
      lost: zero(),
      duplicated: zero(),
      qos0: { sent: 0, arrived: 0 },
      malformed: { sent: 0, answered: 0, inDlq: seen.dlq ? 0 : null, wrongReason: 0 },
      catalogStale: seen.catalogStale.get(f.phase) ?? 0,
      lostSamples: [],
      lakeLost: [],
      load: stats.get(f.phase) as PhaseStats,
    });
  }
  const lakeMissing = new Map<number, [number, number][]>();
  // Per user: distinct eventIds in Kafka (what `n` must equal).
  const inKafka = new Map<string, number>();
  const userPhase = new Map<string, number>();
  for (const [id, e] of ledger.events) {
    const row = rows.get(e.phase);
    if (!row) continue;
    userPhase.set(e.userId, e.phase);
    const copies = seen.kafka.get(id) ?? [];
    row.sent++;
    if (e.acks > 0) row.accepted++;
    if (e.channel === 'mqtt0') {
      row.qos0.sent++;
      if (copies.length > 0) row.qos0.arrived++;
    }
    if (copies.length === 0) {
      if (e.acks > 0) row.lost.kafka++;
      if (e.acks > 0 && row.lostSamples.length < 20) {
        const { userId, channel, sends, acks } = e;
        row.lostSamples.push({ eventId: id, userId, channel, sends, acks });
      }
      continue;
    }
    inKafka.set(e.userId, (inKafka.get(e.userId) ?? 0) + 1);
    // Sends that may each have landed: the acknowledged ones and those at QoS 0.
    row.duplicated.kafka += Math.max(0, copies.length - Math.max(1, e.acks + e.qos0Sends));
    const docs = seen.indexed?.get(id) ?? 0;
    row.lost.es = add(row.lost.es, docs === 0 ? 1 : 0);
    row.duplicated.es = add(row.duplicated.es, Math.max(0, docs - 1));
    const lakeRows = seen.lake?.get(id) ?? [];
    row.lost.lake = add(row.lost.lake, lakeRows.length === 0 ? 1 : 0);
    if (seen.lake && lakeRows.length === 0) {
      const { partition, offset } = copies[0] as KafkaCopy;
      const list = lakeMissing.get(e.phase) ?? [];
      list.push([partition, Number(offset)]);
      lakeMissing.set(e.phase, list);
    }
    row.duplicated.lake = add(row.duplicated.lake, lakeRows.length - new Set(lakeRows).size);
  }
  for (const [phase, missing] of lakeMissing) {
    (rows.get(phase) as Row).lakeLost = offsetRanges(missing);
  }
  for (const [user, phase] of userPhase) {
    const row = rows.get(phase) as Row;
    const expected = inKafka.get(user) ?? 0;
    const n = seen.applied?.get(user) ?? 0;
    row.lost.redis = add(row.lost.redis, Math.max(0, expected - n));
    row.duplicated.redis = add(row.duplicated.redis, Math.max(0, n - expected));
  }
  // Malformed payloads: found again by the marker in the DLQ record's original bytes.
  const dlqReasons = new Map<string, string[]>();
  for (const r of seen.dlq ?? []) {
    for (const m of r.original.match(UUID_G) ?? []) {
      const list = dlqReasons.get(m) ?? [];
      list.push(r.reason);
      dlqReasons.set(m, list);
    }
  }
  for (const [marker, m] of ledger.malformed) {
    const row = rows.get(m.phase);
    if (!row) continue;
    row.malformed.sent++;
    if (m.answered) row.malformed.answered++;
    const reasons = dlqReasons.get(marker) ?? [];
    if (reasons.includes(m.reason)) row.malformed.inDlq = add(row.malformed.inDlq, 1);
    else if (reasons.length > 0) row.malformed.wrongReason++;
  }
  return [...rows.values()].sort((a, b) => a.phase - b.phase);
}

const cell = (v: number | null): string => (v === null ? 'n/a' : String(v));
const four = (f: FourWay): string =>
  `${f.kafka} / ${cell(f.redis)} / ${cell(f.es)} / ${cell(f.lake)}`;
const seconds = (ms: number | null | undefined): string =>
  ms === null || ms === undefined ? 'not recovered' : (ms / 1000).toFixed(1);

/**
 * The table the run prints: one line per fault; with a failover column when a fault measured
 * one (the cluster form).
 */
export function markdownTable(rows: Row[]): string {
  const failover = rows.some((r) => r.recovery?.failover);
  const head = [
    'fault',
    'accepted',
    'lost K / R / E / L',
    'duplicated K / R / E / L',
    'malformed in DLQ',
    'feeds ok (fallback) / failed',
    'live frames / reopened',
    ...(failover ? ['failover (s)'] : []),
    'recovered (s)',
  ];
  const lines = [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`];
  for (const r of rows) {
    const cells = [
      r.fault,
      String(r.accepted),
      four(r.lost),
      four(r.duplicated),
      `${cell(r.malformed.inDlq)} / ${r.malformed.sent}`,
      `${r.load.feedsOk} (${r.load.feedsFallback}) / ${r.load.feedsFailed}`,
      `${r.load.liveFrames} / ${r.load.liveClosed}`,
      ...(failover ? [r.recovery?.failover ? seconds(r.recovery.failover.ms) : '-'] : []),
      r.recovery ? seconds(r.recovery.recoveredMs) : '-',
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/**
 * What must be zero: lost anywhere, applied or stored twice, malformed not in the DLQ, stale
 * catalog entries; and every fault recovered, every store read.
 */
export function failures(rows: Row[], unread: string[] = []): string[] {
  const out = unread.map((u) => `not read: ${u}`);
  const n = (v: number | null): number => v ?? 0;
  for (const r of rows) {
    const lost = r.lost.kafka + n(r.lost.redis) + n(r.lost.es) + n(r.lost.lake);
    const twice = n(r.duplicated.redis) + n(r.duplicated.es) + n(r.duplicated.lake);
    const notDlq = r.malformed.inDlq === null ? 0 : r.malformed.answered - r.malformed.inDlq;
    if (lost > 0) out.push(`${r.fault}: ${lost} lost (K/R/E/L ${four(r.lost)})`);
    if (twice > 0) out.push(`${r.fault}: ${twice} stored twice (R/E/L)`);
    if (notDlq > 0) out.push(`${r.fault}: ${notDlq} answered malformed payloads not in the DLQ`);
    if (r.catalogStale > 0) out.push(`${r.fault}: ${r.catalogStale} catalog items stale`);
    if (r.recovery && r.recovery.recoveredMs === null) out.push(`${r.fault}: not recovered`);
    if (r.recovery?.failover && r.recovery.failover.ms === null)
      out.push(`${r.fault}: no failover (${r.recovery.failover.measure})`);
  }
  return out;
}
