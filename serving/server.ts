/**
 * The serving HTTP + WebSocket server on uWebSockets.js, from its parts:
 * - `GET /v1/users/{userId}/feed` (`routes/feed.ts`), WebSocket `/v1/feed` (`routes/live.ts`),
 *   `/` the demo page (`routes/page.ts`); `/healthz`, `/readyz`, `/metrics` (`core/http.ts`);
 * - the checks every route runs (`guards.ts`), the live hub (`live.ts`) and its subscription
 *   to change notifications (`live-subscription.ts`), the live socket caps (`socket-caps.ts`)
 *   and upgrade shedding (`upgrade-shed.ts`).
 *
 * Every refusal is JSON `{ error: { code, message } }` (`core/error-codes.ts`). `POST /v1/events`
 * is not served here: the ingest role serves it, and serving stays free of Kafka producers.
 *
 * @example
 *   const serving = await startServing({ config, log, metrics, feed, redisSubscriber });
 *   // SIGTERM:
 *   await serving.stop(); // stop accepting, finish requests, close sockets with 1001
 */
import { fileURLToPath } from 'node:url';
import { Counter, Histogram, type Registry } from 'prom-client';
import {
  createHttpServer,
  listenPort,
  type ShutdownBudget,
  sleep,
  type Config,
  type Logger,
} from '../core/index.js';
import type { RedisClient } from '../store/redis.js';
import { SocketLeaseStore } from '../store/socket-leases.js';
import { Guards } from './guards.js';
import { LiveHub } from './live.js';
import { startLiveSubscription, type LiveSubscription } from './live-subscription.js';
import type { RouteContext, ServingFeed } from './routes/context.js';
import { mountFeedRoute } from './routes/feed.js';
import { mountLiveRoute } from './routes/live.js';
import { mountPageRoute } from './routes/page.js';
import { SocketCaps } from './socket-caps.js';
import { LagMonitor, SHED_REASONS, type ShedReason } from './upgrade-shed.js';

export type { ServingFeed } from './routes/context.js';

export interface ServingOptions {
  /** Longest path plus query string, bytes (414 beyond). @default 2048 */
  maxUrlBytes?: number;
  /** Most bytes of header names and values together (431 beyond). @default 8192 */
  maxHeaderBytes?: number;
  /** How long stop() waits for in-flight requests, ms. @default 10000 */
  shutdownGraceMs?: number;
  /** A socket that cannot take frames for this long is closed (1008), ms. @default 10000 */
  slowCloseMs?: number;
  /** WebSocket idle timeout, seconds; uWS pings well before it. @default 32 */
  wsIdleTimeoutSec?: number;
  /** How often the event-loop delay is sampled (upgrade shedding), ms. @default 100 */
  lagSampleMs?: number;
  /** Path of the demo page. @default serving/web/index.html of the checkout */
  pagePath?: string;
}

export interface ServingDeps {
  config: Readonly<Config>;
  log: Logger;
  metrics: Registry;
  feed: ServingFeed;
  /**
   * A Redis connection for this server alone (subscriber mode); without it no live pushes,
   * only the feed on connect.
   */
  redisSubscriber?: RedisClient;
  /**
   * A Redis connection for the live sockets' per-user leases (the feed's own is fine); without
   * it the per-user socket cap counts this process's sockets only.
   */
  redis?: RedisClient;
  /** What `/metrics` answers, when not this process's registry (cluster workers). */
  metricsText?: () => Promise<string>;
  options?: ServingOptions;
}

export interface Serving {
  /** The bound port. */
  readonly port: number;
  readonly hub: LiveHub;
  /**
   * Stop accepting, finish in-flight requests (within `shutdownGraceMs` and most of `budget`),
   * close sockets with 1001. Idempotent.
   */
  stop(budget?: ShutdownBudget): Promise<void>;
}

export async function startServing(deps: ServingDeps): Promise<Serving> {
  const { config, log, metrics, feed, redisSubscriber } = deps;
  const opts = {
    maxUrlBytes: 2048,
    maxHeaderBytes: 8192,
    shutdownGraceMs: 10_000,
    slowCloseMs: 10_000,
    wsIdleTimeoutSec: 32,
    lagSampleMs: 100,
    pagePath: fileURLToPath(new URL('../../serving/web/index.html', import.meta.url)),
    ...deps.options,
  };
  const guards = new Guards(config, opts, log);
  const hub = new LiveHub({
    feed,
    log: log.child({ component: 'live' }),
    metrics,
    coalesceMs: config.serving.liveCoalesceMs,
    maxBufferedBytes: config.serving.wsMaxBufferedBytes,
    slowCloseMs: opts.slowCloseMs,
  });
  guards.liveBuilds = () => hub.building;
  const { serving } = config;
  const caps = new SocketCaps({
    maxSockets: serving.wsMaxSockets,
    maxPerUser: serving.wsMaxPerUser,
    ...(deps.redis
      ? { leases: new SocketLeaseStore(deps.redis, { leaseMs: serving.wsLeaseMs }) }
      : {}),
    log,
  });
  const lag = new LagMonitor(opts.lagSampleMs);
  const wsShed = new Counter({
    name: 'recsys_ws_upgrades_shed_total',
    help: 'live socket upgrades answered 503 at once, by reason: sockets (RECSYS_WS_MAX_SOCKETS), in_flight (RECSYS_SERVING_MAX_IN_FLIGHT), event_loop_lag (RECSYS_WS_SHED_LAG_MS)',
    labelNames: ['reason'],
    registers: [metrics],
  });
  // Children made once (and every reason shown at 0 from the start).
  const shedBy = new Map<ShedReason, Counter.Internal>(
    SHED_REASONS.map((r) => [r, wsShed.labels(r)]),
  );
  for (const child of shedBy.values()) child.inc(0);
  const userCapped = new Counter({
    name: 'recsys_ws_user_cap_closed_total',
    help: 'live sockets closed with 4429 as they opened: the user held RECSYS_WS_MAX_PER_USER already',
    registers: [metrics],
  });
  const requestSeconds = new Histogram({
    name: 'recsys_http_request_seconds',
    help: 'HTTP requests of the serving routes, from arrival to the answer, by route and status',
    labelNames: ['route', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [metrics],
  });
  const shed = new Counter({
    name: 'recsys_feed_shed_total',
    help: 'feed requests answered 503 at once because RECSYS_SERVING_MAX_IN_FLIGHT were in flight',
    registers: [metrics],
  });
  const ctx: RouteContext = {
    config,
    log,
    guards,
    feed,
    observe: (route, status, t0) =>
      requestSeconds.labels(route, String(status)).observe((performance.now() - t0) / 1000),
    shed: () => shed.inc(),
  };
  const live: LiveSubscription | null = redisSubscriber
    ? startLiveSubscription({ subscriber: redisSubscriber, hub, feed, log })
    : null;

  const { port: listenOn, variable } = listenPort(config, 'serving');
  const server = createHttpServer({
    host: config.http.host,
    port: listenOn,
    portVariable: variable,
    // Workers share the port on purpose; serving/main.ts checked it was free before forking.
    sharedPort: config.serving.workers > 1,
    log,
    metrics,
    ...(deps.metricsText ? { metricsText: deps.metricsText } : {}),
    readiness: async () => {
      const report = await feed.readiness();
      const checks = { ...report.checks };
      let ok = report.ok && !guards.closing;
      if (live) {
        checks.live = live.ok() ? { ok: true, ms: 0 } : { ok: false, ms: 0, error: live.error() };
        ok &&= live.ok();
      }
      if (guards.closing) checks.server = { ok: false, ms: 0, error: 'shutting down' };
      return { ok, checks, ...(report.degraded ? { degraded: report.degraded } : {}) };
    },
  });
  mountFeedRoute(server.app, ctx);
  mountPageRoute(server.app, opts.pagePath);
  mountLiveRoute(server.app, ctx, hub, {
    idleTimeoutSec: opts.wsIdleTimeoutSec,
    caps,
    lag,
    count: { shed: (reason) => shedBy.get(reason)?.inc(), userCapped: () => userCapped.inc() },
  });

  const port = await server.listen();
  let stopped: Promise<void> | null = null;
  return {
    port,
    hub,
    stop(budget?: ShutdownBudget) {
      stopped ??= (async () => {
        guards.closing = true;
        server.close();
        await live?.stop();
        // Most of the budget: the rest is for the served-log flush and Redis.
        const graceMs = Math.min(opts.shutdownGraceMs, (budget?.remainingMs() ?? Infinity) * 0.7);
        const deadline = performance.now() + graceMs;
        while (guards.inFlight > 0 && performance.now() < deadline) await sleep(5);
        if (guards.inFlight > 0) {
          log.warn({ inFlight: guards.inFlight }, 'stopping with requests still in flight');
        }
        hub.close();
        caps.close();
        lag.stop();
        log.info('serving stopped');
      })();
      return stopped;
    },
  };
}
