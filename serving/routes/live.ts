/**
 * WebSocket `/v1/feed[?limit=N]` with the token as the sub-protocol `bearer.<token>` beside
 * `recsys.feed.v1` (browsers) or as `Authorization: Bearer`; `?token=` only with
 * RECSYS_LIVE_QUERY_AUTH=1 (a URL lands in proxy and access logs): the current feed at once,
 * then a fresh one whenever the user's features change (`live.ts`). The upgrade passes the same
 * guards as a feed request.
 *
 * Refusals a client can tell apart: an overloaded process (socket cap, feeds in flight, event
 * loop late: `upgrade-shed.ts`) answers the upgrade 503 `RECSYS_OVERLOADED` with Retry-After
 * before verifying the token, so a reconnect storm costs it little. A user over the per-user
 * cap (`socket-caps.ts`) gets the socket accepted, an error frame and the close code 4429 with
 * the reason `RECSYS_WS_TOO_MANY_SOCKETS`: a browser sees a close code and reason, never the
 * HTTP status of a refused upgrade (only 1006), and retrying at once cannot help it.
 *
 * @example
 *   mountLiveRoute(app, ctx, hub, { idleTimeoutSec: 32, caps, lag, count });
 */
import uWS from 'uWebSockets.js';
import type { WebSocket } from 'uWebSockets.js';
import { HTTP_ERRORS, sendError, type HttpErrorKind, type TemplatedApp } from '../../core/index.js';
import { bearerToken, tokenFromProtocols } from '../../core/auth.js';
import { WS_CLOSE, type LiveHub, type Subscription } from '../live.js';
import { publicError } from '../public-error.js';
import type { Lease, SocketCaps } from '../socket-caps.js';
import { shedReason, type LagMonitor, type ShedReason } from '../upgrade-shed.js';
import type { RouteContext } from './context.js';

export const WS_ROUTE = '/v1/feed';
/** Bytes a client may send over the feed socket; it has nothing to say but pings. */
const WS_MAX_PAYLOAD = 4096;

const RETRY_AFTER = { 'retry-after': '1' };
const TOO_MANY = 'RECSYS_WS_TOO_MANY_SOCKETS';

/**
 * What the upgrade hands the socket. uWS.js copies this object's properties (a shallow copy)
 * for `getUserData()`, so what the upgrade must still see after `res.upgrade` is in `slot`.
 */
interface WsData {
  userId: string;
  limit: number;
  sub: Subscription | null;
  /** Over the per-user cap: closed with 4429 as it opens. */
  refused: boolean;
  slot: {
    /** The socket's place under the caps; null once released (or when refused). */
    lease: Lease | null;
    /** Set by the open handler: from then on the close handler releases the lease. */
    opened: boolean;
  };
}

export interface LiveRouteOptions {
  idleTimeoutSec: number;
  caps: SocketCaps;
  lag: LagMonitor;
  count: {
    /** An upgrade answered 503 at once (`recsys_ws_upgrades_shed_total`). */
    shed(reason: ShedReason): void;
    /** A socket closed with 4429 (`recsys_ws_user_cap_closed_total`). */
    userCapped(): void;
  };
}

export function mountLiveRoute(
  app: TemplatedApp,
  ctx: RouteContext,
  hub: LiveHub,
  options: LiveRouteOptions,
): void {
  const { guards, observe } = ctx;
  const { caps, lag, count } = options;
  const serving = ctx.config.serving;
  const tooManyFrame = JSON.stringify({
    type: 'error',
    error: {
      code: TOO_MANY,
      message: `this user holds ${serving.wsMaxPerUser} live sockets already (RECSYS_WS_MAX_PER_USER); close one first`,
    },
  });
  app.ws<WsData>(WS_ROUTE, {
    compression: uWS.DISABLED,
    maxPayloadLength: WS_MAX_PAYLOAD,
    idleTimeout: options.idleTimeoutSec,
    sendPingsAutomatically: true,
    // The hub holds frames back at wsMaxBufferedBytes; uWS's own limit sits above that so it
    // only ever drops what the hub would have dropped anyway.
    maxBackpressure: serving.wsMaxBufferedBytes * 2,
    closeOnBackpressureLimit: 0,

    upgrade: (res, req, context) =>
      guards.catchThrows(WS_ROUTE, (res, req) => {
        const t0 = performance.now();
        const state = { aborted: false };
        res.onAborted(() => {
          state.aborted = true;
        });
        const origin = req.getHeader('origin');
        const headers = guards.corsFor(origin);
        const fail = (kind: HttpErrorKind, message: string, extra?: Record<string, string>) => {
          sendError(res, kind, message, state, {}, extra ? { ...headers, ...extra } : headers);
          observe(WS_ROUTE, kind.status, t0);
        };
        const shed = (reason: ShedReason): void => {
          count.shed(reason);
          fail(HTTP_ERRORS.overloaded, `live sockets shed (${reason}); retry later`, RETRY_AFTER);
        };
        const bad = guards.checkBounds(req);
        if (bad) return fail(bad.kind, bad.message);
        if (!guards.originAllowed(origin)) {
          return fail(HTTP_ERRORS.originDenied, `origin ${origin} is not allowed`);
        }
        const limit = guards.parseLimit(req.getQuery('limit') ?? '');
        if (limit === null) return fail(HTTP_ERRORS.badRequest, guards.limitMessage);
        const wantedUser = req.getQuery('userId') ?? '';
        const offered = tokenFromProtocols(req.getHeader('sec-websocket-protocol'));
        const inQuery = req.getQuery('token') ?? '';
        const token =
          offered.token ||
          bearerToken(req.getHeader('authorization')) ||
          (ctx.config.auth.liveQueryToken ? inQuery : '');
        if (!token) {
          return fail(
            HTTP_ERRORS.unauthenticated,
            inQuery
              ? '?token= is off (RECSYS_LIVE_QUERY_AUTH=0): offer the sub-protocol bearer.<token> or send Authorization'
              : 'no token',
          );
        }
        const why = shedReason({
          full: caps.full(),
          inFlight: guards.load(),
          maxInFlight: serving.maxInFlight,
          lagMs: lag.lagMs(),
          maxLagMs: serving.wsShedLagMs,
        });
        if (why) return shed(why);
        // Read everything from req now: it is gone after the first await.
        const key = req.getHeader('sec-websocket-key');
        const extensions = req.getHeader('sec-websocket-extensions');

        guards.inFlight += 1;
        const slot: WsData['slot'] = { lease: null, opened: false };
        (async () => {
          const claims = await guards.auth.verify(token);
          if (wantedUser && wantedUser !== claims.userId) {
            return fail(HTTP_ERRORS.forbidden, 'the token does not grant this user');
          }
          const waitMs = guards.limiter.take(claims.userId);
          if (waitMs > 0) {
            return fail(HTTP_ERRORS.rateLimited, `over ${serving.rateLimitPerSec} requests/s`);
          }
          if (guards.closing) return fail(HTTP_ERRORS.shuttingDown, 'server is shutting down');
          const got = await caps.acquire(claims.userId);
          if (!got.ok && got.reason === 'process') return shed('sockets');
          slot.lease = got.ok ? got.lease : null;
          if (guards.closing) return fail(HTTP_ERRORS.shuttingDown, 'server is shutting down');
          if (state.aborted) return;
          const data: WsData = { userId: claims.userId, limit, sub: null, refused: !got.ok, slot };
          res.cork(() => res.upgrade(data, key, offered.protocol, extensions, context));
          observe(WS_ROUTE, 101, t0);
        })()
          .catch((err: unknown) => {
            const { kind, message } = publicError(err);
            if (kind.status >= 500) {
              ctx.log.error({ err, code: kind.code }, 'live feed upgrade failed');
            }
            fail(kind, message);
          })
          .finally(() => {
            // uWS opens the socket within upgrade(); a socket that never opened frees its place.
            if (!slot.opened && slot.lease) caps.release(slot.lease);
            guards.inFlight -= 1;
          });
      })(res, req),
    open: (ws: WebSocket<WsData>) => {
      const data = ws.getUserData();
      data.slot.opened = true;
      if (data.refused) {
        count.userCapped();
        ws.send(tooManyFrame);
        ws.end(WS_CLOSE.tooManySockets, TOO_MANY);
        return;
      }
      data.sub = hub.attach(data.userId, data.limit, ws);
    },
    drain: (ws) => {
      const sub = ws.getUserData().sub;
      if (sub) hub.drained(sub);
    },
    close: (ws) => {
      const data = ws.getUserData();
      if (data.sub) hub.detach(data.sub);
      if (data.slot.lease) caps.release(data.slot.lease);
      data.slot.lease = null;
    },
  });
}
