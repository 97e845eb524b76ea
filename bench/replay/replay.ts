/**
 * The prequential loop against the live stack. For each replayed event, in time order:
 *   1. ask for the user's feed (`GET /v1/users/{id}/feed?limit=K`, the user's token) and note
 *      the rank of the event's item (or a miss);
 *   2. publish the event (MQTT as the user, QoS 1, by default; or `POST /v1/events`);
 *   3. wait until the user's session features count it (`readFeatures(...).total`, woken by the
 *      feature-change channel, polled as a fallback): publish -> applied is the freshness.
 * So a user's next request always sees everything the user did before it.
 *
 * Concurrency: events start in time order; at most `concurrency` are in flight (started, or
 * waiting behind the same user's earlier event). The stack never sees an event more than that
 * many places ahead of the one it is asked about, and one user's events stay in order.
 *
 * @example
 *   const served = await replayServed(stack, plan.replay, state, { k: 20, concurrency: 32, ... });
 */
import mqtt, { type MqttClient } from 'mqtt';
import { mintToken } from '../../core/auth.js';
import { readFeatures } from '../../store/session-features.js';
import type { Outcome } from './metrics.js';
import { wireEvent, type PlannedEvent } from './plan.js';
import type { ReplayStack } from './stack.js';
import {
  benchRedis,
  onFeatureChanges,
  type FeatureChangeListener,
  type RedisClient,
} from '../redis.js';

export interface ReplayOptions {
  k: number;
  concurrency: number;
  via: 'mqtt' | 'http';
  /** Password of every replay user's MQTT account (via mqtt). */
  mqttPassword: string;
  /** Stop starting events at this time (epoch ms); what was replayed is reported. */
  deadline: number;
  /** Longest wait for one event to be applied, ms. */
  applyTimeoutMs: number;
  /** Called every `progressEvery` events. */
  progress?: (done: number, total: number) => void;
  progressEvery?: number;
}

/** What the replay saw, per user, before it starts. */
export interface UserStart {
  /** Items the user consumed in the history. */
  consumed: Set<string>;
  /** Events of the user in the history (the features' applied count once it is in). */
  applied: number;
}

export interface ServedResult {
  outcomes: Outcome[];
  /** Index (in the replayed events) of each outcome. */
  indices: number[];
  shown: Set<string>;
  /** Round trip of each feed request, ms. */
  latencyMs: number[];
  /** The server's own `latencyMs` of each feed. */
  serverLatencyMs: number[];
  /** Publish call -> the user's features count the event, ms. */
  freshnessMs: number[];
  modelVersions: Record<string, number>;
  /** Feed requests answered with an error (counted as misses showing nothing). */
  feedErrors: number;
  /** Events not applied within `applyTimeoutMs` (the replay went on). */
  applyTimeouts: number;
  /** Events left out because the deadline passed. */
  skipped: number;
}

interface FeedAnswer {
  items: { itemId: string; source: string }[];
  modelVersion: string;
  latencyMs: number;
}

/** Wakes the waiters of a user when the feature role announces a change for them. */
class AppliedWatcher {
  readonly #waiters = new Map<string, () => void>();
  readonly #sub: RedisClient;
  #changes: FeatureChangeListener | null = null;
  /** Users whose (sharded, on a cluster) change signal is listened to. */
  readonly #heard = new Set<string>();
  constructor(
    url: string,
    private readonly redis: RedisClient,
    private readonly halfLifeMs: number,
  ) {
    this.#sub = benchRedis(url, 'replay-applied', true);
  }

  async start(): Promise<void> {
    this.#changes = await onFeatureChanges(this.#sub, (userId) => this.#waiters.get(userId)?.());
  }

  /** Resolves true once `userId`'s applied count is at least `count`, false on timeout. */
  async until(userId: string, count: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    if (!this.#heard.has(userId)) {
      this.#heard.add(userId);
      await this.#changes?.add(userId);
    }
    for (;;) {
      const f = await readFeatures(this.redis, userId, Date.now(), this.halfLifeMs);
      if ((f?.total ?? 0) >= count) return true;
      if (Date.now() > deadline) return false;
      // A change message for the user, or 50 ms, whichever first.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 50);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.#waiters.set(userId, done);
      });
      this.#waiters.delete(userId);
    }
  }

  stop(): void {
    void this.#changes?.stop().catch(() => undefined);
    this.#sub.disconnect();
  }
}

export async function replayServed(
  stack: ReplayStack,
  events: readonly PlannedEvent[],
  start: Map<string, UserStart>,
  opts: ReplayOptions,
): Promise<ServedResult> {
  const { config } = stack;
  const result: ServedResult = {
    outcomes: [],
    indices: [],
    shown: new Set(),
    latencyMs: [],
    serverLatencyMs: [],
    freshnessMs: [],
    modelVersions: {},
    feedErrors: 0,
    applyTimeouts: 0,
    skipped: 0,
  };
  const watcher = new AppliedWatcher(config.redis.url, stack.redis, config.features.halfLifeMs);
  await watcher.start();
  const lastIndex = new Map<string, number>();
  events.forEach((e, i) => lastIndex.set(e.userId, i));
  const users = new Map<string, { token: string; client: MqttClient | null; state: UserStart }>();

  const userOf = async (userId: string) => {
    let u = users.get(userId);
    if (!u) {
      const client =
        opts.via === 'mqtt'
          ? await mqtt.connectAsync(config.mqtt.url, {
              protocolVersion: 5,
              username: userId,
              password: opts.mqttPassword,
              clientId: `${stack.id}-${userId}`.slice(0, 128),
              clean: true,
              reconnectPeriod: 1000,
              // Mosquitto hashes each password with 210,000 PBKDF2 rounds: a burst of
              // connects on a loaded machine waits seconds for its CONNACK.
              connectTimeout: 30_000,
            })
          : null;
      const state = start.get(userId) ?? { consumed: new Set<string>(), applied: 0 };
      u = { token: await mintToken(config.serving, userId, 86_400), client, state };
      users.set(userId, u);
    }
    return u;
  };

  const one = async (e: PlannedEvent, i: number): Promise<void> => {
    if (Date.now() > opts.deadline) {
      result.skipped++;
      return;
    }
    const u = await userOf(e.userId);
    const feed = await requestFeed(stack.servingPort, e.userId, u.token, opts.k, result);
    const items = feed?.items ?? [];
    const rank = items.findIndex((it) => it.itemId === e.itemId);
    const slots: Record<string, number> = {};
    for (const it of items) {
      result.shown.add(it.itemId);
      slots[it.source] = (slots[it.source] ?? 0) + 1;
    }
    result.indices.push(i);
    result.outcomes.push({
      rank: rank < 0 ? null : rank,
      nth: e.nth,
      cold: e.cold,
      source: rank < 0 ? null : (items[rank]?.source ?? null),
      shown: items.length,
      consumedShown: items.filter((it) => u.state.consumed.has(it.itemId)).length,
      slots,
    });

    const t0 = performance.now();
    if (u.client) {
      const topic = `${config.mqtt.topicPrefix}/${e.userId}`;
      await u.client.publishAsync(topic, JSON.stringify(wireEvent(e)), { qos: 1 });
    } else {
      await stack.postEvents([wireEvent(e)], 1, u.token);
    }
    const applied = await watcher.until(e.userId, u.state.applied + 1, opts.applyTimeoutMs);
    if (applied) result.freshnessMs.push(performance.now() - t0);
    else result.applyTimeouts++;
    u.state.applied++;
    u.state.consumed.add(e.itemId);
    if (lastIndex.get(e.userId) === i) {
      await u.client?.endAsync();
      users.delete(e.userId);
    }
  };

  try {
    await dispatchInOrder(events, opts.concurrency, one, (done) => {
      if (opts.progress && done % (opts.progressEvery ?? 1000) === 0) {
        opts.progress(done, events.length);
      }
    });
  } finally {
    watcher.stop();
    for (const u of users.values()) u.client?.end(true);
  }
  return result;
}

async function requestFeed(
  port: number,
  userId: string,
  token: string,
  k: number,
  result: ServedResult,
): Promise<FeedAnswer | null> {
  const t0 = performance.now();
  const res = await fetch(
    `http://127.0.0.1:${port}/v1/users/${encodeURIComponent(userId)}/feed?limit=${k}`,
    { headers: { authorization: `Bearer ${token}` } },
  ).catch(() => null);
  if (!res || res.status !== 200) {
    result.feedErrors++;
    await res?.text().catch(() => undefined);
    return null;
  }
  const feed = (await res.json()) as FeedAnswer;
  result.latencyMs.push(performance.now() - t0);
  result.serverLatencyMs.push(feed.latencyMs);
  result.modelVersions[feed.modelVersion] = (result.modelVersions[feed.modelVersion] ?? 0) + 1;
  return feed;
}

/**
 * Runs `fn(event, index)` for every event in order of index, at most `limit` in flight, each
 * user's events one after another. An event counts as in flight from when it is taken (it may
 * still wait for its user's previous event) until it is done; the first error stops taking more
 * and is thrown once the events in flight are done.
 */
export async function dispatchInOrder<E extends { userId: string }>(
  events: readonly E[],
  limit: number,
  fn: (event: E, index: number) => Promise<void>,
  onDone: (done: number) => void = () => undefined,
): Promise<void> {
  const tails = new Map<string, Promise<void>>();
  let inFlight = 0;
  let done = 0;
  let failure: unknown = null;
  // Resolved when an event finishes (a holder: closures assign it, so no narrowing applies).
  const waker: { wake: (() => void) | null } = { wake: null };
  const all: Promise<void>[] = [];
  for (let i = 0; i < events.length && failure === null; i++) {
    while (inFlight >= limit) await new Promise<void>((r) => (waker.wake = r));
    if (failure !== null) break;
    const e = events[i] as E;
    inFlight++;
    const run = (tails.get(e.userId) ?? Promise.resolve())
      .then(() => (failure === null ? fn(e, i) : undefined))
      .catch((err: unknown) => {
        failure ??= err;
      })
      .finally(() => {
        inFlight--;
        onDone(++done);
        const w = waker.wake;
        waker.wake = null;
        w?.();
      });
    tails.set(e.userId, run);
    all.push(run);
  }
  await Promise.all(all);
  if (failure !== null) throw failure;
}
