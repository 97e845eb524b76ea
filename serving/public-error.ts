/**
 * What a client is told when a feed or a live socket fails: a stable code of the table
 * (`core/error-codes.ts`) and, for 5xx, a fixed message, never the internal error's text (it
 * can name hosts, keys or code paths; the caller logs it). Redis out of reach is 503
 * `RECSYS_REDIS_UNAVAILABLE` (retry), not 500.
 *
 * @example
 *   const { kind, message } = publicError(err); // kind.status 503, 'Redis did not answer'
 */
import {
  DependencyUnavailableError,
  ERROR_CODES,
  HTTP_ERRORS,
  publicMessage,
  type HttpErrorKind,
} from '../core/index.js';
import { AuthError } from '../core/auth.js';
import { isRedisUnavailable } from '../store/redis.js';

export function publicError(err: unknown): { kind: HttpErrorKind; message: string } {
  // Token refusals are ours and name no internals ("token expired"): the client needs them.
  if (err instanceof AuthError) return { kind: HTTP_ERRORS.unauthenticated, message: err.message };
  let kind: HttpErrorKind;
  if (isRedisUnavailable(err)) kind = HTTP_ERRORS.redisUnavailable;
  else if (err instanceof DependencyUnavailableError) {
    kind = { code: err.code, status: ERROR_CODES[err.code].status };
  } else if ((err as { retriable?: unknown } | null)?.retriable === true) {
    kind = HTTP_ERRORS.notReady;
  } else kind = HTTP_ERRORS.internal;
  return { kind, message: publicMessage(kind.code) };
}
