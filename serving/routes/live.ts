/**
 * WebSocket `/v1/feed[?limit=N]` with the token as the sub-protocol `bearer.<token>` beside
 * `recsys.feed.v1` (browsers) or as `Authorization: Bearer`; `?token=` only with
 * RECSYS_LIVE_QUERY_AUTH=1 (a URL lands in proxy and access logs): the current feed at once,
 * then a fresh one whenever the user's features change (`live.ts`). The upgrade passes the same
 * guards as a feed request.
 *
 * @example
 *   mountLiveRoute(app, ctx, hub, { idleTimeoutSec: 32 });
 */
import uWS from 'uWebSockets.js';
import type { WebSocket } from 'uWebSockets.js';
import { HTTP_ERRORS, sendError, type HttpErrorKind, type TemplatedApp } from '../../core/index.js';
import { bearerToken, tokenFromProtocols } from '../../core/auth.js';
import type { LiveHub, Subscription } from '../live.js';
import { publicError } from '../public-error.js';
import type { RouteContext } from './context.js';

export const WS_ROUTE = '/v1/feed';
/** Bytes a client may send over the feed socket; it has nothing to say but pings. */
const WS_MAX_PAYLOAD = 4096;

interface WsData {
  userId: string;
  limit: number;
  sub: Subscription | null;
}

export function mountLiveRoute(
  app: TemplatedApp,
  ctx: RouteContext,
  hub: LiveHub,
  options: { idleTimeoutSec: number },
): void {
  const { guards, observe } = ctx;
  const serving = ctx.config.serving;
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
        const fail = (kind: HttpErrorKind, message: string): void => {
          sendError(res, kind, message, state, {}, headers);
          observe(WS_ROUTE, kind.status, t0);
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
        // Read everything from req now: it is gone after the first await.
        const key = req.getHeader('sec-websocket-key');
        const extensions = req.getHeader('sec-websocket-extensions');

        guards.inFlight += 1;
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
          if (state.aborted) return;
          const data: WsData = { userId: claims.userId, limit, sub: null };
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
            guards.inFlight -= 1;
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
}
