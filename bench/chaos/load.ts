/**
 * The steady mixed load of the fault matrix. Each phase (one fault) has users of its own, so
 * what a store holds per user can be attributed to the fault that phase ran:
 * - MQTT device users (mqtt.js, one connection each, client id = username): QoS 1, and a share
 *   at QoS 0 (not acknowledged, so not counted as accepted);
 * - a backend posting batches for its users with the service token, and web users posting
 *   their own events with their JWT (`POST /v1/events`); a 503, a timeout or a refused
 *   connection is retried with the same eventIds (honouring Retry-After), as a client should;
 * - re-sends of a recent eventId (a client that retried after a lost answer), and malformed
 *   payloads (their own requests over HTTP: a batch is all or nothing);
 * - feed requests and live sockets (`clients.ts`).
 * Switching phases moves the generator to the next phase's users at once; the previous phase's
 * requests and publishes in flight finish in the background ({@link ChaosLoad.stop} waits).
 *
 * @example
 *   const load = new ChaosLoad(options, ledger);
 *   await load.switchTo(0);  ...  await load.switchTo(1);  ...  await load.stop();
 */
import mqtt, { type MqttClient } from 'mqtt';
import { sleep } from '../../core/index.js';
import {
  type Channel,
  emptyStats,
  type Ledger,
  malformed,
  type PhaseStats,
  validEvent,
} from './events.js';
import { FeedClients } from './clients.js';

export interface LoadOptions {
  /** Prefix of user and item ids. */
  prefix: string;
  /** Events per second, all channels, malformed and re-sends included. */
  rate: number;
  /** Users per phase on each path. */
  mqttUsers: number;
  httpUsers: number;
  webUsers: number;
  /** Shares of the events. */
  malformedShare: number;
  duplicateShare: number;
  /** Share of MQTT events published at QoS 0. */
  qos0Share: number;
  /** Feed requests per second, and live sockets per phase. */
  feedRate: number;
  liveSockets: number;
  mqttUrl: string;
  mqttPassword: (userId: string) => string;
  topicPrefix: string;
  ingestToken: string;
  /** Read at each request. */
  ingestPort: () => number;
  servingPort: () => number;
  /** Mints a user's JWT. */
  token: (userId: string) => Promise<string>;
}

/** Phase users on each path: `<prefix>-p<phase>-{m,h,w}<i>`. */
export function phaseUsers(o: LoadOptions, phase: number) {
  const of = (kind: string, n: number): string[] =>
    Array.from({ length: n }, (_, i) => `${o.prefix}-p${phase}-${kind}${i}`);
  return { mqtt: of('m', o.mqttUsers), http: of('h', o.httpUsers), web: of('w', o.webUsers) };
}

const TICK_MS = 100;
/** HTTP requests in flight at most; past it events wait in the client (its own backpressure). */
const MAX_HTTP_IN_FLIGHT = 200;
/** A client gives an HTTP request up after this long (then counted as not accepted). */
const HTTP_GIVE_UP_MS = 180_000;

interface Phase {
  index: number;
  users: ReturnType<typeof phaseUsers>;
  clients: Map<string, MqttClient>;
  tokens: Map<string, string>;
  stats: PhaseStats;
  inFlight: number;
  feeds: FeedClients;
}

export class ChaosLoad {
  readonly stats = new Map<number, PhaseStats>();
  #current: Phase | null = null;
  readonly #draining: Promise<void>[] = [];
  #timer: NodeJS.Timeout | null = null;
  #httpInFlight = 0;
  #generated = 0;
  #t0 = 0;
  #serviceBatch: { ids: string[]; bodies: string[] } = { ids: [], bodies: [] };
  #malformedCount = 0;

  constructor(
    readonly o: LoadOptions,
    readonly ledger: Ledger,
  ) {}

  /** Connects the next phase's clients, then moves the load to them. */
  async switchTo(index: number): Promise<void> {
    const users = phaseUsers(this.o, index);
    const stats = emptyStats();
    this.stats.set(index, stats);
    const tokens = new Map<string, string>();
    for (const u of [...users.mqtt, ...users.http, ...users.web]) {
      tokens.set(u, await this.o.token(u));
    }
    const clients = new Map<string, MqttClient>();
    await Promise.all(
      users.mqtt.map(async (u) => {
        clients.set(
          u,
          await mqtt.connectAsync(this.o.mqttUrl, {
            protocolVersion: 5,
            clientId: u,
            username: u,
            password: this.o.mqttPassword(u),
            clean: true,
            reconnectPeriod: 1000,
            connectTimeout: 10_000,
          }),
        );
      }),
    );
    const all = [...users.mqtt, ...users.http, ...users.web];
    const feeds = new FeedClients({
      port: this.o.servingPort,
      users: all,
      tokens,
      stats,
      liveSockets: this.o.liveSockets,
      feedRate: this.o.feedRate,
    });
    const next: Phase = { index, users, clients, tokens, stats, inFlight: 0, feeds };
    const previous = this.#current;
    this.#flushService();
    this.#current = next;
    feeds.start();
    if (previous) this.#draining.push(this.#drain(previous));
    if (!this.#timer) {
      this.#t0 = performance.now();
      this.#timer = setInterval(() => this.#tick(), TICK_MS);
    }
  }

  /** Live sockets of the current phase open now. */
  openSockets(): number {
    return this.#current?.feeds.open ?? 0;
  }

  /** A user of the current phase (its first MQTT user). */
  currentUser(): string {
    const users = this.#current?.users;
    if (!users) throw new Error('no phase is running');
    return users.mqtt[0] ?? users.http[0] ?? (users.web[0] as string);
  }

  /** Stops the generator and waits for every phase's sends to finish (or give up). */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#flushService();
    const last = this.#current;
    this.#current = null;
    if (last) this.#draining.push(this.#drain(last));
    await Promise.all(this.#draining);
  }

  async #drain(phase: Phase): Promise<void> {
    await phase.feeds.stop();
    const deadline = Date.now() + HTTP_GIVE_UP_MS + 30_000;
    while (phase.inFlight > 0 && Date.now() < deadline) await sleep(100);
    await Promise.all([...phase.clients.values()].map((c) => c.endAsync().catch(() => undefined)));
  }

  #tick(): void {
    const phase = this.#current;
    if (!phase) return;
    const due = Math.floor(((performance.now() - this.#t0) / 1000) * this.o.rate);
    // After a stall (a busy machine) catch up by at most a second's worth.
    const n = Math.min(due - this.#generated, this.o.rate);
    this.#generated = due;
    for (let i = 0; i < n; i++) this.#one(phase);
    this.#flushService();
    phase.feeds.tick();
  }

  #one(phase: Phase): void {
    const o = this.o;
    const { users, stats } = phase;
    const r = Math.random();
    const total = users.mqtt.length + users.http.length + users.web.length;
    const pick = (list: string[]): string =>
      list[Math.floor(Math.random() * list.length)] as string;
    let kind: 'mqtt' | 'http' | 'web';
    const k = Math.random() * total;
    if (k < users.mqtt.length) kind = 'mqtt';
    else if (k < users.mqtt.length + users.http.length) kind = 'http';
    else kind = 'web';
    const user = pick(kind === 'mqtt' ? users.mqtt : kind === 'http' ? users.http : users.web);

    if (r < o.malformedShare) {
      const channel = kind === 'mqtt' ? 'mqtt' : 'http';
      const m = malformed(o.prefix, user, channel, this.#malformedCount++);
      this.ledger.malformed.set(m.marker, {
        phase: phase.index,
        channel,
        userId: user,
        reason: m.reason,
        answered: false,
      });
      stats.malformedSent++;
      if (kind === 'mqtt') {
        this.#publish(phase, user, m.body, 1, () => {
          const entry = this.ledger.malformed.get(m.marker);
          if (entry) entry.answered = true;
        });
      } else {
        const token = kind === 'web' ? (phase.tokens.get(user) as string) : o.ingestToken;
        this.#post(phase, token, [], m.body, m.marker);
      }
      return;
    }
    let eventId: string;
    let body: string;
    const again = r < o.malformedShare + o.duplicateShare ? this.ledger.recentOf(user) : null;
    if (again) {
      ({ eventId, body } = again);
      stats.duplicatesSent++;
    } else {
      const qos0 = kind === 'mqtt' && Math.random() < o.qos0Share;
      const channel: Channel =
        kind === 'mqtt'
          ? qos0
            ? 'mqtt0'
            : 'mqtt1'
          : kind === 'http'
            ? 'http-service'
            : 'http-user';
      const event = validEvent(o.prefix, user);
      eventId = event.eventId as string;
      body = this.ledger.add(event, phase.index, channel);
      stats.generated++;
      if (qos0) {
        stats.qos0Sent++;
        this.ledger.sent(eventId, true);
        this.#publish(phase, user, body, 0, () => undefined);
        return;
      }
    }
    this.ledger.sent(eventId);
    if (kind === 'mqtt') {
      this.#publish(phase, user, body, 1, () => this.ledger.acked(eventId));
    } else if (kind === 'web') {
      this.#post(phase, phase.tokens.get(user) as string, [eventId], body);
    } else {
      this.#serviceBatch.ids.push(eventId);
      this.#serviceBatch.bodies.push(body);
    }
  }

  #publish(phase: Phase, user: string, body: string, qos: 0 | 1, onAck: () => void): void {
    const client = phase.clients.get(user) as MqttClient;
    if (qos === 0) {
      client.publish(`${this.o.topicPrefix}/${user}`, body, { qos: 0 });
      return;
    }
    phase.inFlight++;
    client.publish(`${this.o.topicPrefix}/${user}`, body, { qos: 1 }, (err) => {
      phase.inFlight--;
      if (!err) onAck();
    });
  }

  #flushService(): void {
    const phase = this.#current;
    const batch = this.#serviceBatch;
    if (!phase || batch.ids.length === 0) return;
    this.#serviceBatch = { ids: [], bodies: [] };
    this.#post(phase, this.o.ingestToken, batch.ids, `[${batch.bodies.join(',')}]`);
  }

  /**
   * POSTs a body, retrying what a client retries (503, 429, no answer) until 202 (every
   * eventId acknowledged), another answer, or {@link HTTP_GIVE_UP_MS}. `marker` names a
   * malformed payload whose 400 is recorded.
   */
  #post(phase: Phase, token: string, ids: string[], body: string, marker?: string): void {
    const stats = phase.stats;
    phase.inFlight++;
    void (async () => {
      while (this.#httpInFlight >= MAX_HTTP_IN_FLIGHT) await sleep(20);
      this.#httpInFlight++;
      const start = Date.now();
      try {
        for (let attempt = 1; ; attempt++) {
          if (attempt > 1) {
            stats.httpRetries++;
            for (const id of ids) this.ledger.sent(id);
          }
          stats.httpRequests++;
          const { status, retryAfterS, reason } = await postOnce(this.o.ingestPort(), token, body);
          stats.httpStatuses[status] = (stats.httpStatuses[status] ?? 0) + 1;
          if (status === 202) {
            for (const id of ids) this.ledger.acked(id);
            return;
          }
          if (status === 400 && marker) {
            const entry = this.ledger.malformed.get(marker);
            if (entry) {
              entry.answered = true;
              entry.answeredReason = reason;
            }
            return;
          }
          const retriable = status === 0 || status === 503 || status === 429;
          if (!retriable || Date.now() - start > HTTP_GIVE_UP_MS) {
            stats.httpGaveUp += ids.length;
            return;
          }
          await sleep(Math.max(retryAfterS * 1000, Math.min(5000, 250 * 2 ** attempt)));
        }
      } finally {
        this.#httpInFlight--;
        phase.inFlight--;
      }
    })();
  }
}

/** One POST /v1/events: status (0 = no answer), Retry-After seconds, and a 400's reason. */
async function postOnce(
  port: number,
  token: string,
  body: string,
): Promise<{ status: number; retryAfterS: number; reason?: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body,
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    let reason: string | undefined;
    if (res.status === 400) {
      try {
        reason = (JSON.parse(text) as { error?: { reason?: string } }).error?.reason;
      } catch {
        reason = undefined;
      }
    }
    return { status: res.status, retryAfterS: Number(res.headers.get('retry-after') ?? 0), reason };
  } catch {
    return { status: 0, retryAfterS: 0 };
  }
}
