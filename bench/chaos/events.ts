/**
 * What the fault matrix sends and what it remembers of it: valid events (a realistic type mix,
 * a small catalog, sessions), malformed payloads of every kind the bridge dead-letters (each
 * carrying a unique marker, so the DLQ record can be found by its original bytes), and the
 * ledger: for every eventId its user, phase, channel, how often it was sent and how often a
 * send was acknowledged (HTTP 202 or an MQTT PUBACK).
 */
import { randomUUID } from 'node:crypto';
import type { RejectReason } from '../../schemas/index.js';

/** How an event travelled: MQTT QoS 1 or 0, HTTP with the service token or the user's JWT. */
export type Channel = 'mqtt1' | 'mqtt0' | 'http-service' | 'http-user';
export const CHANNELS: readonly Channel[] = ['mqtt1', 'mqtt0', 'http-service', 'http-user'];

export interface LedgerEntry {
  userId: string;
  phase: number;
  channel: Channel;
  /** Times the client sent it: retries and deliberate re-sends included. */
  sends: number;
  /** Sends answered 202 or PUBACK. */
  acks: number;
  /** Sends at QoS 0 (never answered, may or may not land). */
  qos0Sends: number;
}

export interface MalformedEntry {
  phase: number;
  channel: 'mqtt' | 'http';
  userId: string;
  /** The reason the bridge must give (`DlqRecord.reason`). */
  reason: RejectReason;
  /** Answered: PUBACK, or HTTP 400 (after the DLQ write). */
  answered: boolean;
  /** The reason the HTTP 400 named, if any. */
  answeredReason?: string;
}

/** What the clients of one phase did. */
export interface PhaseStats {
  generated: number;
  duplicatesSent: number;
  qos0Sent: number;
  httpRequests: number;
  httpRetries: number;
  /** Events whose request was given up on (never answered 202). */
  httpGaveUp: number;
  httpStatuses: Record<string, number>;
  malformedSent: number;
  feedsOk: number;
  /** Of `feedsOk`, the unpersonalised fallback (Redis failed the request). */
  feedsFallback: number;
  feedsFailed: number;
  feedStatuses: Record<string, number>;
  liveOpened: number;
  liveFrames: number;
  liveClosed: number;
}

export function emptyStats(): PhaseStats {
  return {
    generated: 0,
    duplicatesSent: 0,
    qos0Sent: 0,
    httpRequests: 0,
    httpRetries: 0,
    httpGaveUp: 0,
    httpStatuses: {},
    malformedSent: 0,
    feedsOk: 0,
    feedsFallback: 0,
    feedsFailed: 0,
    feedStatuses: {},
    liveOpened: 0,
    liveFrames: 0,
    liveClosed: 0,
  };
}

/** Items of the run's catalog, `<prefix>-i<n>`; a few are popular (a skewed draw). */
export const CATALOG_SIZE = 400;
export const CATEGORIES = ['books', 'games', 'garden', 'kitchen', 'music', 'sports'];

export function itemId(prefix: string, n: number): string {
  return `${prefix}-i${n}`;
}

const TYPES: ReadonlyArray<readonly [string, number]> = [
  ['view', 0.6],
  ['click', 0.2],
  ['add_to_cart', 0.08],
  ['like', 0.07],
  ['purchase', 0.05],
];

function pickType(): string {
  let r = Math.random();
  for (const [type, p] of TYPES) {
    if ((r -= p) < 0) return type;
  }
  return 'view';
}

/** A valid event of `userId` now. */
export function validEvent(prefix: string, userId: string): Record<string, unknown> {
  // Squared uniform: item 0 is drawn most, the tail rarely.
  const n = Math.floor(Math.random() ** 2 * CATALOG_SIZE);
  return {
    eventId: randomUUID(),
    userId,
    itemId: itemId(prefix, n),
    type: pickType(),
    ts: Date.now(),
    context: {
      page: Math.random() < 0.5 ? 'home' : 'item',
      position: Math.floor(Math.random() * 20),
      device: 'chaos',
    },
  };
}

/** Malformed kinds, by the channel they can arrive on. */
const MQTT_KINDS: readonly RejectReason[] = [
  'bad_json',
  'missing_field',
  'bad_type',
  'unknown_field',
  'ts_out_of_window',
  'user_mismatch',
];
const HTTP_KINDS: readonly RejectReason[] = [
  'bad_json',
  'missing_field',
  'bad_type',
  'unknown_field',
  'ts_out_of_window',
];

/**
 * A malformed payload for `channel`: its marker (a UUID that appears in the bytes, found again
 * in the DLQ record's original), the reason the bridge must give, and the bytes.
 */
export function malformed(
  prefix: string,
  userId: string,
  channel: 'mqtt' | 'http',
  i: number,
): { marker: string; reason: RejectReason; body: string } {
  const kinds = channel === 'mqtt' ? MQTT_KINDS : HTTP_KINDS;
  const reason = kinds[i % kinds.length] as RejectReason;
  const e = validEvent(prefix, userId);
  const marker = e.eventId as string;
  switch (reason) {
    case 'bad_json':
      return { marker, reason, body: JSON.stringify(e).slice(0, 70) };
    case 'missing_field':
      delete e.itemId;
      break;
    case 'bad_type':
      e.ts = String(e.ts);
      break;
    case 'unknown_field':
      e.colour = 'red';
      break;
    case 'ts_out_of_window':
      e.ts = Date.now() - 400 * 86_400_000;
      break;
    default:
      // user_mismatch: another user's id in this user's topic.
      e.userId = `${userId}-other`;
  }
  return { marker, reason, body: JSON.stringify(e) };
}

/** Events, malformed payloads and their outcomes, for the whole run. */
export class Ledger {
  readonly events = new Map<string, LedgerEntry>();
  readonly malformed = new Map<string, MalformedEntry>();
  /** Per user the last few events sent (id and bytes), for re-sends. */
  readonly #recent = new Map<string, { eventId: string; body: string }[]>();

  /** Records a new event; returns its bytes. */
  add(event: Record<string, unknown>, phase: number, channel: Channel): string {
    const body = JSON.stringify(event);
    const eventId = event.eventId as string;
    const userId = event.userId as string;
    this.events.set(eventId, { userId, phase, channel, sends: 0, acks: 0, qos0Sends: 0 });
    const recent = this.#recent.get(userId) ?? [];
    recent.push({ eventId, body });
    if (recent.length > 3) recent.shift();
    this.#recent.set(userId, recent);
    return body;
  }

  /** One of the user's last three events, to send again (a client retry), or null. */
  recentOf(userId: string): { eventId: string; body: string } | null {
    const recent = this.#recent.get(userId);
    if (!recent || recent.length === 0) return null;
    return recent[Math.floor(Math.random() * recent.length)] ?? null;
  }

  sent(eventId: string, qos0 = false): void {
    const e = this.events.get(eventId);
    if (!e) return;
    e.sends++;
    if (qos0) e.qos0Sends++;
  }

  acked(eventId: string): void {
    const e = this.events.get(eventId);
    if (e) e.acks++;
  }
}
