/**
 * From a parsed log to what the replay sends: events in time order (ties keep file order),
 * re-timed into the ingest window, split into a history prefix and the replayed events after
 * it, each with its eventId, the stack's userId and its place in the user's replay.
 *
 * Re-timing: the log's span [t0, t1] maps linearly onto [end - span, end], where `span` is the
 * log's own span when it fits `windowMs`, else `windowMs` (the log is compressed, order and
 * relative gaps kept). `end` is the start of the run, so every event is in the past and within
 * RECSYS_INGEST_MAX_PAST_MS of the moment it is sent (the window leaves an hour of margin).
 *
 * @example
 *   const plan = makePlan(log.events, { historyShare: 0.8, maxReplay: 20_000, ... });
 *   plan.history.length + plan.replay.length <= log.events.length;
 */
import { randomUUID } from 'node:crypto';
import type { EventType } from '../../schemas/index.js';
import type { LogEvent } from './loaders.js';

/** One event as it goes to the stack. */
export interface PlannedEvent {
  eventId: string;
  /** The user in the stack (the log's user with the run's prefix). */
  userId: string;
  /** The log's user. */
  user: string;
  itemId: string;
  type: EventType;
  /** Re-timed, epoch ms. */
  ts: number;
  value?: number;
  /** 1-based place among the user's replayed events (0 in the history). */
  nth: number;
  /** The user has no history events. */
  cold: boolean;
}

export interface PlanOptions {
  /** Share of the events (by time) in the history prefix, 0..1. */
  historyShare: number;
  /** Replay at most this many events after the history. */
  maxReplay: number;
  /** Prefix of the stack's user ids (keeps replay users apart from real ones). */
  userPrefix: string;
  /** The last event's new time, epoch ms. */
  endTs: number;
  /** Longest span the log may cover after re-timing, ms. */
  windowMs: number;
}

export interface Plan {
  history: PlannedEvent[];
  replay: PlannedEvent[];
  /** Events after the replayed ones, not used. */
  unused: number;
  /** New time = endTs - (t1 - t) * scale. */
  scale: number;
  usersInHistory: number;
  usersReplayed: number;
}

export function makePlan(events: readonly LogEvent[], opts: PlanOptions): Plan {
  if (!(opts.historyShare >= 0 && opts.historyShare < 1)) {
    throw new RangeError('history share must be in [0, 1)');
  }
  const sorted = events
    .map((e, i) => ({ e, i }))
    .sort((a, b) => a.e.ts - b.e.ts || a.i - b.i)
    .map(({ e }) => e);
  const t0 = sorted[0]?.ts ?? 0;
  const t1 = sorted[sorted.length - 1]?.ts ?? 0;
  const scale = t1 > t0 ? Math.min(1, opts.windowMs / (t1 - t0)) : 1;
  const cut = Math.floor(sorted.length * opts.historyShare);
  const historyUsers = new Set<string>();
  const history: PlannedEvent[] = [];
  const replay: PlannedEvent[] = [];
  const nth = new Map<string, number>();
  sorted.forEach((e, i) => {
    if (i >= cut + opts.maxReplay) return;
    const inHistory = i < cut;
    if (inHistory) historyUsers.add(e.user);
    const n = inHistory ? 0 : (nth.get(e.user) ?? 0) + 1;
    if (!inHistory) nth.set(e.user, n);
    const planned: PlannedEvent = {
      eventId: randomUUID(),
      userId: `${opts.userPrefix}${e.user}`.slice(0, 128),
      user: e.user,
      itemId: e.item,
      type: e.type,
      ts: Math.round(opts.endTs - (t1 - e.ts) * scale),
      nth: n,
      cold: !historyUsers.has(e.user),
    };
    if (e.value !== undefined) planned.value = e.value;
    (inHistory ? history : replay).push(planned);
  });
  return {
    history,
    replay,
    unused: Math.max(0, sorted.length - cut - opts.maxReplay),
    scale,
    usersInHistory: historyUsers.size,
    usersReplayed: nth.size,
  };
}

/** The replayed events grouped per stack user, each user's in order. */
export function byUser(events: readonly PlannedEvent[]): Map<string, PlannedEvent[]> {
  const out = new Map<string, PlannedEvent[]>();
  for (const e of events) {
    let list = out.get(e.userId);
    if (!list) out.set(e.userId, (list = []));
    list.push(e);
  }
  return out;
}

/** The JSON body the ingest takes for one event. */
export function wireEvent(e: PlannedEvent): Record<string, unknown> {
  const body: Record<string, unknown> = {
    eventId: e.eventId,
    userId: e.userId,
    itemId: e.itemId,
    type: e.type,
    ts: e.ts,
  };
  if (e.value !== undefined) body.value = e.value;
  return body;
}
