/**
 * When a server process refuses new live sockets at once (503 with Retry-After, before the
 * upgrade is accepted or a token verified): it holds its socket cap, it works on as many feeds
 * as it takes (`RECSYS_SERVING_MAX_IN_FLIGHT`: feed requests, upgrades being authorised and live
 * feed builds together), or its event loop runs late. A new socket costs a feed at once and a
 * share of every later push, so under overload it would only slow the sockets already open.
 *
 * The event loop's delay comes from a timer that should fire every `sampleMs`: how late it
 * fires, smoothed (each firing moves the figure a quarter of the way to its own lateness), so
 * one stall does not shed but a loop that stays late does. Measured on this machine under load,
 * a worker's start-up has single stalls of 200-300 ms among ticks of under 100 ms (smoothed:
 * under 80 ms); an overloaded loop is late at every tick. How overdue the timer is now counts
 * as a firing too: after a long turn the upgrades waiting in the socket backlog are read
 * before the timer gets its turn, and they should see it.
 *
 * @example
 *   const lag = new LagMonitor(100); // sampled every 100 ms
 *   const why = shedReason({ full: caps.full(), inFlight: 3, maxInFlight: 128, lagMs: lag.lagMs(), maxLagMs: 200 });
 *   if (why) answer503(why);
 */

/** Why an upgrade is shed; the label of `recsys_ws_upgrades_shed_total`. */
export type ShedReason = 'sockets' | 'in_flight' | 'event_loop_lag';

export const SHED_REASONS: readonly ShedReason[] = ['sockets', 'in_flight', 'event_loop_lag'];

export interface LoadState {
  /** The process holds its socket cap. */
  full: boolean;
  /** Feeds being worked on: requests, upgrades being authorised, live builds. */
  inFlight: number;
  maxInFlight: number;
  /** Current event-loop delay, ms. */
  lagMs: number;
  /** Delay past which upgrades are shed, ms; 0 = never. */
  maxLagMs: number;
}

/** The first bound `s` breaks, or null when an upgrade may proceed. */
export function shedReason(s: LoadState): ShedReason | null {
  if (s.full) return 'sockets';
  if (s.inFlight >= s.maxInFlight) return 'in_flight';
  if (s.maxLagMs > 0 && s.lagMs > s.maxLagMs) return 'event_loop_lag';
  return null;
}

/** How far one firing moves the smoothed delay toward its own lateness. */
const SMOOTHING = 0.25;

/** Event-loop delay (smoothed) from a timer that should fire every `sampleMs`. */
export class LagMonitor {
  readonly #sampleMs: number;
  readonly #timer: NodeJS.Timeout;
  readonly #now: () => number;
  #due: number;
  #smoothed = 0;

  constructor(sampleMs: number, now: () => number = () => performance.now()) {
    this.#sampleMs = sampleMs;
    this.#now = now;
    this.#due = now() + sampleMs;
    this.#timer = setInterval(() => this.tick(), sampleMs);
    this.#timer.unref();
  }

  /** The timer fired (called by the interval; tests call it with a clock of their own). */
  tick(): void {
    const now = this.#now();
    this.#smoothed += SMOOTHING * (Math.max(0, now - this.#due) - this.#smoothed);
    this.#due = now + this.#sampleMs;
  }

  /** How late the loop runs (smoothed), counting the timer's overdue time as a firing, ms. */
  lagMs(): number {
    const overdue = this.#now() - this.#due;
    if (overdue <= this.#smoothed) return this.#smoothed;
    return this.#smoothed + SMOOTHING * (overdue - this.#smoothed);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
