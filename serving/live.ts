/**
 * Live feeds: every open WebSocket of a user gets a fresh feed when that user's features
 * change. The stream's feature consumer publishes the userId on `FEATURE_CHANNEL`; this process
 * subscribes once and hands each message to {@link LiveHub.featureChanged}.
 *
 * Per user, changes are coalesced: the first change arms a timer of `coalesceMs`, every change
 * until it fires rides along, and one `getFeed` at the largest limit among that user's sockets
 * serves all of them, each socket its first `limit` items (a feed's order does not depend on
 * its length, `mix.ts` `diversify`, so a slice is the feed that limit would get). A change that
 * arrives while the feed is being computed arms the timer again once the computation ends, so a
 * user never has two computations at once and the newest change is always served. Every build
 * is counted (`recsys_live_feed_builds_total`, by trigger: `open` or `change`).
 *
 * Slow clients never hold anyone up: a socket whose unsent bytes exceed `maxBufferedBytes` gets
 * no new frame; the newest frame waits as its only pending one (older pending frames are dropped,
 * they are superseded) and goes out when uWS reports the socket drained. A socket still over the
 * limit after `slowCloseMs` is closed with 1008 (policy violation): it cannot keep up.
 *
 * @example
 *   const hub = new LiveHub({ feed, log, metrics, coalesceMs: 20, maxBufferedBytes: 1 << 20 });
 *   const sub = hub.attach(userId, limit, ws);   // sends the current feed at once
 *   hub.featureChanged(userId);                  // from the Redis subscriber
 *   hub.detach(sub);                             // from uWS close
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Logger } from '../core/index.js';
import type { Feed, FeedService } from './feed/service.js';
import { publicError } from './public-error.js';

/** What the hub needs of a socket; a uWS WebSocket has all of it. */
export interface LiveSocket {
  /** 1: sent, 0: sent but buffered, 2: dropped (uWS backpressure limit). */
  send(frame: string): number;
  getBufferedAmount(): number;
  end(code?: number, reason?: string): void;
}

/** The one thing the hub asks of the feed service. */
export type FeedSource = Pick<FeedService, 'getFeed'>;

/** One socket's subscription; opaque to callers. */
export interface Subscription {
  readonly userId: string;
  readonly limit: number;
}

interface Sub extends Subscription {
  socket: LiveSocket;
  closed: boolean;
  /** Sequence number of the newest frame given to this socket (sent or pending). */
  seq: number;
  pending: string | null;
  /** When the pending frame's feature change happened (ms, hub clock), or 0 (initial feed). */
  pendingSince: number;
  /** Since when frames have been held back for this socket (ms), 0 when it keeps up. */
  overSince: number;
}

interface UserState {
  subs: Set<Sub>;
  timer: NodeJS.Timeout | null;
  computing: boolean;
  /** Oldest change not yet covered by a started computation (ms), or null. */
  changedAt: number | null;
}

export const WS_CLOSE = {
  goingAway: 1001,
  policyViolation: 1008,
  /** The user holds RECSYS_WS_MAX_PER_USER sockets already (4000 + HTTP 429). */
  tooManySockets: 4429,
} as const;

/** Users gaining their first socket on this server and losing their last (`watchUsers`). */
export interface UserListener {
  added(userId: string): void;
  removed(userId: string): void;
}

export interface LiveHubOptions {
  feed: FeedSource;
  log: Logger;
  metrics: Registry;
  coalesceMs: number;
  maxBufferedBytes: number;
  /** A socket that cannot take frames for this long is closed. @default 10000 */
  slowCloseMs?: number;
  /** How often slow sockets are checked. @default 1000 */
  sweepMs?: number;
}

const FEED_FRAME = (feed: Feed): string => JSON.stringify({ type: 'feed', feed });

/**
 * One frame per distinct slice length of `feed` among `limits`: a limit at or past the feed's
 * length shares the whole feed's frame. Serialised once per length, not per socket.
 */
export function sliceFrames(feed: Feed, limits: Iterable<number>): Map<number, string> {
  const byLength = new Map<number, string>();
  const frames = new Map<number, string>();
  for (const limit of limits) {
    const n = Math.min(limit, feed.items.length);
    let frame = byLength.get(n);
    if (frame === undefined) {
      frame = FEED_FRAME(
        n === feed.items.length ? feed : { ...feed, items: feed.items.slice(0, n) },
      );
      byLength.set(n, frame);
    }
    frames.set(limit, frame);
  }
  return frames;
}

export class LiveHub {
  readonly #users = new Map<string, UserState>();
  #userListener: UserListener | null = null;
  readonly #opts: Required<LiveHubOptions>;
  readonly #push: Histogram;
  readonly #dropped: Counter;
  readonly #slowClosed: Counter;
  readonly #errors: Counter;
  readonly #builds: { open: Counter.Internal; change: Counter.Internal };
  readonly #sweeper: NodeJS.Timeout;
  #seq = 0;
  #sockets = 0;
  #building = 0;
  #closed = false;

  constructor(opts: LiveHubOptions) {
    this.#opts = { slowCloseMs: 10_000, sweepMs: 1000, ...opts };
    const registers = [opts.metrics];
    this.#push = new Histogram({
      name: 'recsys_live_push_seconds',
      help: 'from a feature change reaching this process to the new feed handed to the socket',
      buckets: [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.#dropped = new Counter({
      name: 'recsys_live_frames_dropped_total',
      help: 'feed frames never sent because a newer one superseded them on a slow socket',
      registers,
    });
    this.#slowClosed = new Counter({
      name: 'recsys_live_slow_sockets_closed_total',
      help: 'sockets closed because they stayed over the buffered-bytes limit',
      registers,
    });
    this.#errors = new Counter({
      name: 'recsys_live_feed_errors_total',
      help: 'live feed computations that failed',
      registers,
    });
    const builds = new Counter({
      name: 'recsys_live_feed_builds_total',
      help: 'feeds built for live sockets: on open (one per socket) and on a change (one per user and change, at the largest limit of its sockets)',
      labelNames: ['trigger'],
      registers,
    });
    this.#builds = { open: builds.labels('open'), change: builds.labels('change') };
    // Both series shown from the start (a rate over a series that appears late misses its start).
    this.#builds.open.inc(0);
    this.#builds.change.inc(0);
    const sockets = (): number => this.#sockets;
    new Gauge({
      name: 'recsys_ws_open_sockets',
      help: 'open feed WebSockets',
      registers,
      collect() {
        this.set(sockets());
      },
    });
    this.#sweeper = setInterval(() => this.#sweep(), this.#opts.sweepMs);
    this.#sweeper.unref();
  }

  /** Open sockets. */
  get size(): number {
    return this.#sockets;
  }

  /** Users with at least one open socket. */
  get users(): number {
    return this.#users.size;
  }

  /** Live feed builds under way (load shedding counts them with the feed requests). */
  get building(): number {
    return this.#building;
  }

  /**
   * Tells `listener` of every user who has a socket now and, from now on, of each user's first
   * socket (`added`) and last one closing (`removed`): what a sharded change signal subscribes.
   */
  watchUsers(listener: UserListener): void {
    this.#userListener = listener;
    for (const userId of this.#users.keys()) listener.added(userId);
  }

  /** Registers an open socket and sends it the user's current feed at once. */
  attach(userId: string, limit: number, socket: LiveSocket): Subscription {
    const sub: Sub = {
      userId,
      limit,
      socket,
      closed: false,
      seq: 0,
      pending: null,
      pendingSince: 0,
      overSince: 0,
    };
    let user = this.#users.get(userId);
    if (!user) {
      user = { subs: new Set(), timer: null, computing: false, changedAt: null };
      this.#users.set(userId, user);
      this.#userListener?.added(userId);
    }
    user.subs.add(sub);
    this.#sockets += 1;
    const seq = ++this.#seq;
    this.#build(userId, limit, this.#builds.open).then(
      (feed) => this.#deliver(sub, FEED_FRAME(feed), seq, 0),
      (err: Error) => {
        this.#errors.inc();
        // The frame carries a stable code and a fixed message; the details stay in the log.
        const { kind, message } = publicError(err);
        this.#opts.log.warn({ err, userId, code: kind.code }, 'initial live feed failed');
        const frame = JSON.stringify({ type: 'error', error: { code: kind.code, message } });
        this.#deliver(sub, frame, seq, 0);
      },
    );
    return sub;
  }

  /** The socket closed (any reason). Safe to call twice. */
  detach(subscription: Subscription): void {
    const sub = subscription as Sub;
    if (sub.closed) return;
    sub.closed = true;
    sub.pending = null;
    this.#sockets -= 1;
    const user = this.#users.get(sub.userId);
    if (!user) return;
    user.subs.delete(sub);
    if (user.subs.size === 0) {
      if (user.timer) clearTimeout(user.timer);
      this.#users.delete(sub.userId);
      this.#userListener?.removed(sub.userId);
    }
  }

  /** uWS says the socket drained: send its pending frame if it fits now. */
  drained(subscription: Subscription): void {
    const sub = subscription as Sub;
    if (sub.closed || sub.pending === null) return;
    if (sub.socket.getBufferedAmount() > this.#opts.maxBufferedBytes) return;
    const frame = sub.pending;
    const since = sub.pendingSince;
    sub.pending = null;
    this.#send(sub, frame, since);
  }

  /** A user's features changed (a message on FEATURE_CHANNEL). O(1) for users with no socket. */
  featureChanged(userId: string): void {
    const user = this.#users.get(userId);
    if (!user || this.#closed) return;
    user.changedAt ??= performance.now();
    if (!user.timer && !user.computing) this.#arm(userId, user);
  }

  /** Closes every socket with 1001 (going away) and stops the timers. */
  close(reason = 'server shutting down'): void {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const user of this.#users.values()) {
      if (user.timer) clearTimeout(user.timer);
      user.timer = null;
      for (const sub of [...user.subs]) {
        if (sub.closed) continue;
        // end() calls the uWS close handler synchronously, which detaches the socket.
        sub.socket.end(WS_CLOSE.goingAway, reason);
        this.detach(sub);
      }
    }
  }

  #arm(userId: string, user: UserState): void {
    user.timer = setTimeout(() => {
      user.timer = null;
      void this.#flush(userId, user);
    }, this.#opts.coalesceMs);
  }

  async #flush(userId: string, user: UserState): Promise<void> {
    if (user.subs.size === 0 || user.changedAt === null) return;
    const since = user.changedAt;
    user.changedAt = null;
    user.computing = true;
    const seq = ++this.#seq;
    try {
      // One build at the largest limit; every socket gets its slice.
      let largest = 0;
      for (const sub of user.subs) largest = Math.max(largest, sub.limit);
      const feed = await this.#build(userId, largest, this.#builds.change);
      // The user's sockets as they are now (some may have opened or closed meanwhile).
      const frames = sliceFrames(
        feed,
        [...user.subs].map((sub) => sub.limit),
      );
      for (const sub of user.subs) {
        this.#deliver(sub, frames.get(sub.limit) as string, seq, since);
      }
    } catch (err) {
      this.#errors.inc();
      this.#opts.log.warn({ err: (err as Error).message, userId }, 'live feed failed');
    } finally {
      user.computing = false;
      if (user.changedAt !== null && user.subs.size > 0 && !this.#closed && !user.timer) {
        this.#arm(userId, user);
      }
    }
  }

  async #build(userId: string, limit: number, counter: Counter.Internal): Promise<Feed> {
    counter.inc();
    this.#building += 1;
    try {
      return await this.#opts.feed.getFeed(userId, limit);
    } finally {
      this.#building -= 1;
    }
  }

  #deliver(sub: Sub, frame: string, seq: number, since: number): void {
    // A slower computation that started earlier must not overwrite a newer frame.
    if (sub.closed || seq < sub.seq) return;
    sub.seq = seq;
    if (sub.socket.getBufferedAmount() > this.#opts.maxBufferedBytes) {
      this.#holdBack(sub, frame, since);
      return;
    }
    this.#send(sub, frame, since);
  }

  #send(sub: Sub, frame: string, since: number): void {
    const status = sub.socket.send(frame);
    if (status === 2) {
      // uWS's own limit (maxBackpressure) dropped it: keep it as the pending frame.
      this.#holdBack(sub, frame, since);
      return;
    }
    sub.overSince = 0;
    if (since > 0) this.#push.observe((performance.now() - since) / 1000);
  }

  #holdBack(sub: Sub, frame: string, since: number): void {
    if (sub.pending !== null) this.#dropped.inc();
    sub.pending = frame;
    // Latency is measured from the oldest change the frame covers.
    sub.pendingSince = sub.pendingSince > 0 && since > 0 ? sub.pendingSince : since;
    if (sub.overSince === 0) sub.overSince = performance.now();
  }

  #sweep(): void {
    const now = performance.now();
    for (const user of this.#users.values()) {
      for (const sub of [...user.subs]) {
        if (sub.closed || sub.overSince === 0) continue;
        if (sub.socket.getBufferedAmount() <= this.#opts.maxBufferedBytes) {
          // The drain event may have come before the frame was held back.
          this.drained(sub);
        } else if (now - sub.overSince > this.#opts.slowCloseMs) {
          this.#slowClosed.inc();
          this.#opts.log.info({ userId: sub.userId }, 'closing a socket that cannot keep up');
          sub.socket.end(WS_CLOSE.policyViolation, 'too slow');
          this.detach(sub);
        }
      }
    }
  }
}
