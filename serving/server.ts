/**
 * The serving role's HTTP + WebSocket server on uWebSockets.js:
 *
 * - `GET /v1/users/{userId}/feed?limit=N` with `Authorization: Bearer <token>`; the token's
 *   subject must be `userId` (403 otherwise, 401 without a valid token), limit 1..max (400).
 * - WebSocket `/v1/feed?token=...[&limit=N]` (or the token as the sub-protocol
 *   `bearer.<token>` beside `recsys.feed.v1`, for browsers): the current feed at once, then a
 *   fresh one whenever the user's features change (see `live.ts`).
 * - `/` the demo page, `/healthz`, `/readyz`, `/metrics` (from `http.ts`).
 *
 * Every refusal is JSON `{ error: { code, message } }` (`errors.ts`). `POST /v1/events` is not
 * served here: the ingest role serves it in the stream process (`stream/roles/ingest.ts`), and the
 * serving process stays free of Kafka producers.
 *
 * @example
 *   const serving = await startServing({ config, log, metrics, feed, redisSubscriber });
 *   // SIGTERM:
 *   await serving.stop(); // stop accepting, finish requests, close sockets with 1001
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, WebSocket } from 'uWebSockets.js';
import { Counter, Histogram, type Registry } from 'prom-client';
import {
  type Config,
  createHttpServer,
  HTTP_ERRORS,
  type HttpErrorKind,
  type Logger,
  retry,
  sendError,
  sendJson,
  sleep,
  statusText,
} from '../core/index.js';
import type { Redis } from '../store/redis.js';
import { AuthError, bearerToken, TokenVerifier, tokenFromProtocols } from './auth.js';
import type { FeedService } from './feed.js';
import { LiveHub, subscribeFeatureChanges, type Subscription } from './live.js';
import { RateLimiter } from './rate-limit.js';

/** What the server needs of the feed service (tests pass a double). */
export type ServingFeed = Pick<FeedService, 'getFeed' | 'readiness'> &
  Partial<Pick<FeedService, 'itemsChanged'>>;

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
  redisSubscriber?: Redis;
  /** What `/metrics` answers, when not this process's registry (cluster workers). */
  metricsText?: () => Promise<string>;
  options?: ServingOptions;
}

export interface Serving {
  /** The bound port. */
  readonly port: number;
  readonly hub: LiveHub;
  /** Stop accepting, finish in-flight requests, close sockets with 1001. Idempotent. */
  stop(): Promise<void>;
}

interface WsData {
  userId: string;
  limit: number;
  sub: Subscription | null;
}

const FEED_ROUTE = '/v1/users/:userId/feed';
const WS_ROUTE = '/v1/feed';
const NO_STORE = 'no-store';
/** Bytes a client may send over the feed socket; it has nothing to say but pings. */
const WS_MAX_PAYLOAD = 4096;
const USER_ID_MAX = 256;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

export async function startServing(deps: ServingDeps): Promise<Serving> {
  const { config, log, metrics, feed, redisSubscriber } = deps;
  const serving = config.serving;
  const opts = {
    maxUrlBytes: 2048,
    maxHeaderBytes: 8192,
    shutdownGraceMs: 10_000,
    slowCloseMs: 10_000,
    wsIdleTimeoutSec: 32,
    pagePath: fileURLToPath(new URL('../../serving/web/index.html', import.meta.url)),
    ...deps.options,
  };
  const auth = new TokenVerifier(serving);
  const limiter = new RateLimiter({ ratePerSec: serving.rateLimitPerSec });
  const hub = new LiveHub({
    feed,
    log: log.child({ component: 'live' }),
    metrics,
    coalesceMs: serving.liveCoalesceMs,
    maxBufferedBytes: serving.wsMaxBufferedBytes,
    slowCloseMs: opts.slowCloseMs,
  });
  const page = readFileSync(opts.pagePath);
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
  const observe = (route: string, status: number, t0: number): void => {
    requestSeconds.labels(route, String(status)).observe((performance.now() - t0) / 1000);
  };

  let closing = false;
  let inFlight = 0;
  let subscribed = false;
  let subscribeError = 'not subscribed yet';
  const stopSubscribing = new AbortController();
  let unsubscribe: (() => Promise<void>) | null = null;

  const server = createHttpServer({
    host: config.http.host,
    port: config.http.port,
    log,
    metrics,
    ...(deps.metricsText ? { metricsText: deps.metricsText } : {}),
    readiness: async () => {
      const report = await feed.readiness();
      const checks = { ...report.checks };
      let ok = report.ok && !closing;
      if (redisSubscriber) {
        checks.live = subscribed
          ? { ok: true, ms: 0 }
          : { ok: false, ms: 0, error: subscribeError };
        ok &&= subscribed;
      }
      if (closing) checks.server = { ok: false, ms: 0, error: 'shutting down' };
      return { ok, checks };
    },
  });
  const { app } = server;

  // ------------------------------------------------------------------ CORS
  // Headers precomputed once: with `*` every answer carries the same two; otherwise the
  // request's Origin is echoed when listed (and caches are told answers vary by Origin).
  const anyOrigin = serving.corsOrigins.includes('*');
  const origins = new Set(serving.corsOrigins);
  const ANY_ORIGIN_HEADERS = {
    'access-control-allow-origin': '*',
    'access-control-expose-headers': 'retry-after',
    'cache-control': NO_STORE,
  };
  const NO_CORS_HEADERS = { vary: 'Origin', 'cache-control': NO_STORE };
  const corsFor = (origin: string): Record<string, string> => {
    if (anyOrigin) return ANY_ORIGIN_HEADERS;
    if (origin && origins.has(origin)) {
      return {
        'access-control-allow-origin': origin,
        'access-control-expose-headers': 'retry-after',
        vary: 'Origin',
        'cache-control': NO_STORE,
      };
    }
    return NO_CORS_HEADERS;
  };
  const originAllowed = (origin: string): boolean => anyOrigin || !origin || origins.has(origin);

  /** The bound a request breaks, or null; call synchronously (req dies at the first await). */
  const checkBounds = (req: HttpRequest): { kind: HttpErrorKind; message: string } | null => {
    const urlBytes = req.getUrl().length + (req.getQuery() ?? '').length;
    if (urlBytes > opts.maxUrlBytes) {
      return {
        kind: HTTP_ERRORS.uriTooLong,
        message: `URL is ${urlBytes} bytes; the limit is ${opts.maxUrlBytes}`,
      };
    }
    let headerBytes = 0;
    req.forEach((k, v) => {
      headerBytes += k.length + v.length;
    });
    if (headerBytes > opts.maxHeaderBytes) {
      return {
        kind: HTTP_ERRORS.headersTooLarge,
        message: `headers are ${headerBytes} bytes; the limit is ${opts.maxHeaderBytes}`,
      };
    }
    const declared = Number(req.getHeader('content-length') || '0');
    if (!(declared <= config.http.maxBodyBytes)) {
      return {
        kind: HTTP_ERRORS.payloadTooLarge,
        message: `body is ${declared} bytes; the limit is ${config.http.maxBodyBytes}`,
      };
    }
    if (closing) return { kind: HTTP_ERRORS.shuttingDown, message: 'server is shutting down' };
    return null;
  };

  const parseLimit = (raw: string): number | null => {
    if (raw === '') return serving.defaultLimit;
    if (!/^[0-9]{1,6}$/.test(raw)) return null;
    const n = Number(raw);
    return n >= 1 && n <= serving.maxLimit ? n : null;
  };
  const limitMessage = `limit must be an integer from 1 to ${serving.maxLimit}`;

  const parseUserId = (raw: string): string | null => {
    let id: string;
    try {
      id = decodeURIComponent(raw);
    } catch {
      return null;
    }
    if (id.length === 0 || id.length > USER_ID_MAX || CONTROL_CHARS.test(id)) return null;
    return id;
  };

  const errorStatus = (err: unknown): HttpErrorKind => {
    if (err instanceof AuthError) return HTTP_ERRORS.unauthenticated;
    const retriable = (err as { retriable?: unknown } | null)?.retriable;
    return retriable === true ? HTTP_ERRORS.notReady : HTTP_ERRORS.internal;
  };

  /**
   * A throw inside a uWS handler would end the process; answer 500 instead and keep serving.
   * (A throw after the response was written is logged only.)
   */
  const guard =
    (route: string, handler: (res: HttpResponse, req: HttpRequest) => void) =>
    (res: HttpResponse, req: HttpRequest): void => {
      try {
        handler(res, req);
      } catch (err) {
        log.error({ err: (err as Error).message, route }, 'request handler threw');
        try {
          sendError(res, HTTP_ERRORS.internal, 'internal error');
        } catch {
          // Already answered or aborted.
        }
      }
    };

  // ------------------------------------------------------------------ GET feed
  app.get(
    FEED_ROUTE,
    guard(FEED_ROUTE, (res, req) => {
      const t0 = performance.now();
      const state = { aborted: false };
      res.onAborted(() => {
        state.aborted = true;
      });
      const headers = corsFor(req.getHeader('origin'));
      const fail = (kind: HttpErrorKind, message: string, extra?: Record<string, string>): void => {
        sendError(res, kind, message, state, {}, extra ? { ...headers, ...extra } : headers);
        observe(FEED_ROUTE, kind.status, t0);
      };
      const bad = checkBounds(req);
      if (bad) return fail(bad.kind, bad.message);
      const userId = parseUserId(req.getParameter(0));
      if (userId === null) {
        return fail(
          HTTP_ERRORS.badRequest,
          `userId must be 1 to ${USER_ID_MAX} printable characters`,
        );
      }
      const limit = parseLimit(req.getQuery('limit') ?? '');
      if (limit === null) return fail(HTTP_ERRORS.badRequest, limitMessage);
      const authHeader = req.getHeader('authorization');
      const token = bearerToken(authHeader);
      if (token === null) {
        return fail(
          HTTP_ERRORS.unauthenticated,
          authHeader ? 'Authorization must be "Bearer <token>"' : 'no token',
          { 'www-authenticate': 'Bearer' },
        );
      }
      // Load shedding: past this many feeds in flight, queueing more only adds latency and
      // memory for everyone; a fast 503 lets the client (or the balancer) go elsewhere.
      if (inFlight >= serving.maxInFlight) {
        shed.inc();
        return fail(HTTP_ERRORS.overloaded, `over ${serving.maxInFlight} feeds in flight`, {
          'retry-after': '1',
        });
      }

      inFlight += 1;
      (async () => {
        const claims = await auth.verify(token);
        if (claims.userId !== userId) {
          return fail(HTTP_ERRORS.forbidden, 'the token does not grant this user');
        }
        const waitMs = limiter.take(claims.userId);
        if (waitMs > 0) {
          return fail(HTTP_ERRORS.rateLimited, `over ${serving.rateLimitPerSec} requests/s`, {
            'retry-after': String(Math.ceil(waitMs / 1000)),
          });
        }
        const result = await feed.getFeed(userId, limit);
        sendJson(res, 200, result, state, headers);
        observe(FEED_ROUTE, 200, t0);
      })()
        .catch((err: unknown) => {
          const kind = errorStatus(err);
          if (kind.status >= 500) {
            log.error({ err: (err as Error).message, userId }, 'feed request failed');
          }
          fail(
            kind,
            (err as Error).message,
            kind === HTTP_ERRORS.unauthenticated ? { 'www-authenticate': 'Bearer' } : undefined,
          );
        })
        .finally(() => {
          inFlight -= 1;
        });
    }),
  );

  // ------------------------------------------------------------------ CORS preflight
  const preflight = guard('OPTIONS', (res, req) => {
    const t0 = performance.now();
    const origin = req.getHeader('origin');
    if (!origin || !originAllowed(origin)) {
      sendError(res, HTTP_ERRORS.originDenied, `origin ${origin || '(none)'} is not allowed`);
      observe('OPTIONS', 403, t0);
      return;
    }
    res.cork(() => {
      res
        .writeStatus(statusText(204))
        .writeHeader('access-control-allow-origin', anyOrigin ? '*' : origin)
        .writeHeader('access-control-allow-methods', 'GET, OPTIONS')
        .writeHeader('access-control-allow-headers', 'authorization, content-type')
        .writeHeader('access-control-max-age', '600')
        .writeHeader('vary', 'Origin')
        .endWithoutBody();
    });
    observe('OPTIONS', 204, t0);
  });
  // A method handler of a pattern wins over `any` of the same pattern.
  app.options(FEED_ROUTE, preflight);
  app.options('/*', preflight);
  app.any(FEED_ROUTE, (res, req) => {
    const method = req.getMethod().toUpperCase();
    sendError(
      res,
      HTTP_ERRORS.methodNotAllowed,
      `${method} not allowed; use GET`,
      undefined,
      {},
      {
        allow: 'GET, OPTIONS',
      },
    );
  });

  // ------------------------------------------------------------------ demo page
  app.get('/', (res) => {
    res.cork(() => {
      res
        .writeStatus(statusText(200))
        .writeHeader('content-type', 'text/html; charset=utf-8')
        .writeHeader(
          'content-security-policy',
          "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        )
        .writeHeader('cache-control', 'no-cache')
        .end(page);
    });
  });

  // ------------------------------------------------------------------ WebSocket
  app.ws<WsData>(WS_ROUTE, {
    compression: uWS.DISABLED,
    maxPayloadLength: WS_MAX_PAYLOAD,
    idleTimeout: opts.wsIdleTimeoutSec,
    sendPingsAutomatically: true,
    // The hub holds frames back at wsMaxBufferedBytes; uWS's own limit sits above that so it
    // only ever drops what the hub would have dropped anyway.
    maxBackpressure: serving.wsMaxBufferedBytes * 2,
    closeOnBackpressureLimit: 0,

    upgrade: (res, req, context) =>
      guard(WS_ROUTE, (res, req) => {
        const t0 = performance.now();
        const state = { aborted: false };
        res.onAborted(() => {
          state.aborted = true;
        });
        const origin = req.getHeader('origin');
        const headers = corsFor(origin);
        const fail = (kind: HttpErrorKind, message: string): void => {
          sendError(res, kind, message, state, {}, headers);
          observe(WS_ROUTE, kind.status, t0);
        };
        const bad = checkBounds(req);
        if (bad) return fail(bad.kind, bad.message);
        if (!originAllowed(origin)) {
          return fail(HTTP_ERRORS.originDenied, `origin ${origin} is not allowed`);
        }
        const limit = parseLimit(req.getQuery('limit') ?? '');
        if (limit === null) return fail(HTTP_ERRORS.badRequest, limitMessage);
        const wantedUser = req.getQuery('userId') ?? '';
        const offered = tokenFromProtocols(req.getHeader('sec-websocket-protocol'));
        const token =
          req.getQuery('token') || offered.token || bearerToken(req.getHeader('authorization'));
        if (!token) return fail(HTTP_ERRORS.unauthenticated, 'no token');
        // Read everything from req now: it is gone after the first await.
        const key = req.getHeader('sec-websocket-key');
        const extensions = req.getHeader('sec-websocket-extensions');

        inFlight += 1;
        (async () => {
          const claims = await auth.verify(token);
          if (wantedUser && wantedUser !== claims.userId) {
            return fail(HTTP_ERRORS.forbidden, 'the token does not grant this user');
          }
          const waitMs = limiter.take(claims.userId);
          if (waitMs > 0) {
            return fail(HTTP_ERRORS.rateLimited, `over ${serving.rateLimitPerSec} requests/s`);
          }
          if (closing) return fail(HTTP_ERRORS.shuttingDown, 'server is shutting down');
          if (state.aborted) return;
          const data: WsData = { userId: claims.userId, limit, sub: null };
          res.cork(() => res.upgrade(data, key, offered.protocol, extensions, context));
          observe(WS_ROUTE, 101, t0);
        })()
          .catch((err: unknown) => fail(errorStatus(err), (err as Error).message))
          .finally(() => {
            inFlight -= 1;
          });
      })(res, req),
    open: (ws: WebSocket<WsData>) => {
      const data = ws.getUserData();
      data.sub = hub.attach(data.userId, data.limit, ws);
    },
    drain: (ws) => {
      const sub = ws.getUserData().sub;
      if (sub) hub.drained(sub);
    },
    close: (ws) => {
      const sub = ws.getUserData().sub;
      if (sub) hub.detach(sub);
    },
  });

  // ------------------------------------------------------------------ feature changes
  if (redisSubscriber) {
    const onChange = (userId: string): void => hub.featureChanged(userId);
    // Redis may be down at start: keep trying in the background while /readyz says so.
    // Catalog changes drop the feed service's cached entries (an item made unavailable leaves
    // feeds at once, not after the cache's TTL).
    const onCatalog = feed.itemsChanged?.bind(feed);
    let missedChanges = false;
    const forgetCatalog = (why: string): void => {
      if (!onCatalog) return;
      onCatalog();
      log.info({ why }, 'catalog changes may have been missed; cached catalog entries dropped');
    };
    retry(() => subscribeFeatureChanges(redisSubscriber, onChange, onCatalog), {
      attempts: Number.POSITIVE_INFINITY,
      initialDelayMs: 250,
      maxDelayMs: 5000,
      signal: stopSubscribing.signal,
      retriable: () => true,
      onRetry: (err) => {
        missedChanges = true;
        subscribeError = (err as Error).message;
        log.warn({ err: subscribeError }, 'cannot subscribe to feature changes; retrying');
      },
    }).then(
      (stop) => {
        unsubscribe = stop;
        subscribed = true;
        // Feeds built while subscribing failed may have cached entries changed meanwhile.
        if (missedChanges) forgetCatalog('subscribed after failed attempts');
        // ioredis resubscribes by itself after a reconnect.
        redisSubscriber.on('close', () => {
          subscribed = false;
          subscribeError = 'redis subscriber connection closed';
        });
        redisSubscriber.on('ready', () => {
          // Changes published while the connection was down were never heard: every cached
          // catalog entry is read again before its next use.
          if (!subscribed) forgetCatalog('subscriber reconnected');
          subscribed = true;
        });
      },
      () => undefined,
    );
  }

  const port = await server.listen();
  let stopped: Promise<void> | null = null;

  return {
    port,
    hub,
    stop() {
      stopped ??= (async () => {
        closing = true;
        server.close();
        stopSubscribing.abort(new Error('stopping'));
        await unsubscribe?.();
        const deadline = performance.now() + opts.shutdownGraceMs;
        while (inFlight > 0 && performance.now() < deadline) await sleep(5);
        if (inFlight > 0) log.warn({ inFlight }, 'stopping with requests still in flight');
        hub.close();
        log.info('serving stopped');
      })();
      return stopped;
    },
  };
}
