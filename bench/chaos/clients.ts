/**
 * The readers of the fault matrix, per phase: feed requests (`GET /v1/users/{u}/feed` with the
 * user's JWT, at a steady rate, on kept-alive connections as a client library keeps them; a
 * request that is not 200 within 5 s counts as failed, by status or `0` for no answer) and
 * live sockets (`/v1/feed`, token as the sub-protocol), each reopened half a second after it
 * closes, counting frames, opens and closes.
 */
import WebSocket from 'ws';
import { WS_PROTOCOL } from '../../core/auth.js';
import type { PhaseStats } from './events.js';

export interface FeedClientOptions {
  port: () => number;
  users: string[];
  tokens: Map<string, string>;
  stats: PhaseStats;
  liveSockets: number;
  /** Feed requests per second. @default 20 */
  feedRate?: number;
}

const FEED_TIMEOUT_MS = 5000;
const REOPEN_MS = 500;

export class FeedClients {
  readonly #sockets = new Set<WebSocket>();
  readonly #pending = new Set<Promise<void>>();
  #running = false;
  #t0 = 0;
  #sent = 0;
  /** Sockets open now. */
  open = 0;

  constructor(readonly o: FeedClientOptions) {}

  start(): void {
    this.#running = true;
    this.#t0 = performance.now();
    for (let i = 0; i < this.o.liveSockets && i < this.o.users.length; i++) {
      this.#open(this.o.users[i] as string);
    }
  }

  /** Sends the feed requests due by now (called by the load's timer). */
  tick(): void {
    if (!this.#running) return;
    const rate = this.o.feedRate ?? 20;
    const due = Math.floor(((performance.now() - this.#t0) / 1000) * rate);
    for (; this.#sent < due; this.#sent++) {
      const user = this.o.users[Math.floor(Math.random() * this.o.users.length)] as string;
      const p = this.#feed(user);
      this.#pending.add(p);
      void p.finally(() => this.#pending.delete(p));
    }
  }

  /** Closes the sockets and waits for the requests in flight. */
  async stop(): Promise<void> {
    this.#running = false;
    for (const ws of this.#sockets) ws.close(1000);
    await Promise.all([...this.#pending]);
  }

  async #feed(user: string): Promise<void> {
    const { stats } = this.o;
    let status = 0;
    try {
      const res = await fetch(`http://127.0.0.1:${this.o.port()}/v1/users/${user}/feed?limit=20`, {
        headers: { authorization: `Bearer ${this.o.tokens.get(user)}` },
        signal: AbortSignal.timeout(FEED_TIMEOUT_MS),
      });
      const body = await res.text();
      status = res.status;
      // The server's answer while Redis failed it: the last popular list (serving/feed/pipeline.ts).
      if (status === 200 && body.includes('"modelVersion":"fallback"')) stats.feedsFallback++;
    } catch {
      status = 0;
    }
    stats.feedStatuses[status] = (stats.feedStatuses[status] ?? 0) + 1;
    if (status === 200) stats.feedsOk++;
    else stats.feedsFailed++;
  }

  #open(user: string): void {
    if (!this.#running) return;
    const { stats } = this.o;
    const ws = new WebSocket(`ws://127.0.0.1:${this.o.port()}/v1/feed`, [
      WS_PROTOCOL,
      `bearer.${this.o.tokens.get(user)}`,
    ]);
    this.#sockets.add(ws);
    let opened = false;
    ws.on('open', () => {
      opened = true;
      this.open++;
      stats.liveOpened++;
    });
    ws.on('message', () => stats.liveFrames++);
    ws.on('error', () => undefined);
    ws.on('close', () => {
      this.#sockets.delete(ws);
      if (opened) this.open--;
      if (!this.#running) return;
      stats.liveClosed++;
      setTimeout(() => this.#open(user), REOPEN_MS);
    });
  }
}
