/**
 * `GET /v1/users/{userId}/feed?limit=N` with `Authorization: Bearer <token>`: the token's subject
 * must be `userId` (403 otherwise, 401 without a valid token), limit 1..max (400). Past
 * `maxInFlight` feeds in flight the answer is a fast 503 with Retry-After: queueing more only
 * adds latency and memory for everyone. Also the CORS preflight and 405 for other methods.
 *
 * @example
 *   mountFeedRoute(app, ctx);
 */
import {
  HTTP_ERRORS,
  sendError,
  sendJson,
  statusText,
  type HttpErrorKind,
  type TemplatedApp,
} from '../../core/index.js';
import { bearerToken } from '../../core/auth.js';
import { publicError } from '../public-error.js';
import type { RouteContext } from './context.js';

export const FEED_ROUTE = '/v1/users/:userId/feed';

export function mountFeedRoute(app: TemplatedApp, ctx: RouteContext): void {
  const { guards, feed, log, observe } = ctx;
  const serving = ctx.config.serving;
  app.get(
    FEED_ROUTE,
    guards.catchThrows(FEED_ROUTE, (res, req) => {
      const t0 = performance.now();
      const state = { aborted: false };
      res.onAborted(() => {
        state.aborted = true;
      });
      const headers = guards.corsFor(req.getHeader('origin'));
      const fail = (kind: HttpErrorKind, message: string, extra?: Record<string, string>): void => {
        sendError(res, kind, message, state, {}, extra ? { ...headers, ...extra } : headers);
        observe(FEED_ROUTE, kind.status, t0);
      };
      const bad = guards.checkBounds(req);
      if (bad) return fail(bad.kind, bad.message);
      const userId = guards.parseUserId(req.getParameter(0));
      if (userId === null) return fail(HTTP_ERRORS.badRequest, guards.userIdMessage);
      const limit = guards.parseLimit(req.getQuery('limit') ?? '');
      if (limit === null) return fail(HTTP_ERRORS.badRequest, guards.limitMessage);
      const authHeader = req.getHeader('authorization');
      const token = bearerToken(authHeader);
      if (token === null) {
        return fail(
          HTTP_ERRORS.unauthenticated,
          authHeader ? 'Authorization must be "Bearer <token>"' : 'no token',
          { 'www-authenticate': 'Bearer' },
        );
      }
      if (guards.overloaded()) {
        ctx.shed();
        return fail(HTTP_ERRORS.overloaded, `over ${serving.maxInFlight} feeds in flight`, {
          'retry-after': '1',
        });
      }

      guards.inFlight += 1;
      (async () => {
        const claims = await guards.auth.verify(token);
        if (claims.userId !== userId) {
          return fail(HTTP_ERRORS.forbidden, 'the token does not grant this user');
        }
        const waitMs = guards.limiter.take(claims.userId);
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
          const { kind, message } = publicError(err);
          if (kind.status >= 500)
            log.error({ err, userId, code: kind.code }, 'feed request failed');
          fail(
            kind,
            message,
            kind === HTTP_ERRORS.unauthenticated ? { 'www-authenticate': 'Bearer' } : undefined,
          );
        })
        .finally(() => {
          guards.inFlight -= 1;
        });
    }),
  );

  const preflight = guards.catchThrows('OPTIONS', (res, req) => {
    const t0 = performance.now();
    const origin = req.getHeader('origin');
    if (!origin || !guards.originAllowed(origin)) {
      sendError(res, HTTP_ERRORS.originDenied, `origin ${origin || '(none)'} is not allowed`);
      observe('OPTIONS', 403, t0);
      return;
    }
    res.cork(() => {
      res
        .writeStatus(statusText(204))
        .writeHeader('access-control-allow-origin', guards.anyOrigin ? '*' : origin)
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
      { allow: 'GET, OPTIONS' },
    );
  });
}
