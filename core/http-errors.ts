/**
 * Every error an HTTP endpoint answers with, declared once: a stable code clients can switch
 * on and its status. Bodies are `{ error: { code, message, ...details } }`.
 */
export interface HttpErrorKind {
  readonly code: string;
  readonly status: number;
}

export const HTTP_ERRORS = {
  /** A field of an event is missing, of the wrong type or out of range; names the field. */
  eventRejected: { code: 'RECSYS_EVENT_REJECTED', status: 400 },
  /** A path parameter or query value is malformed or out of range; the message names it. */
  badRequest: { code: 'RECSYS_BAD_REQUEST', status: 400 },
  /** No token, or one that fails verification (signature, issuer, expiry). */
  unauthenticated: { code: 'RECSYS_UNAUTHENTICATED', status: 401 },
  /** The token is valid but names another user than the one asked for. */
  forbidden: { code: 'RECSYS_FORBIDDEN', status: 403 },
  /** The request's Origin is not in RECSYS_CORS_ORIGINS. */
  originDenied: { code: 'RECSYS_ORIGIN_DENIED', status: 403 },
  notFound: { code: 'RECSYS_NOT_FOUND', status: 404 },
  methodNotAllowed: { code: 'RECSYS_METHOD_NOT_ALLOWED', status: 405 },
  payloadTooLarge: { code: 'RECSYS_PAYLOAD_TOO_LARGE', status: 413 },
  uriTooLong: { code: 'RECSYS_URI_TOO_LONG', status: 414 },
  unsupportedMediaType: { code: 'RECSYS_UNSUPPORTED_MEDIA_TYPE', status: 415 },
  /** Over the per-token request rate; `Retry-After` says when to come back. */
  rateLimited: { code: 'RECSYS_RATE_LIMITED', status: 429 },
  headersTooLarge: { code: 'RECSYS_HEADERS_TOO_LARGE', status: 431 },
  internal: { code: 'RECSYS_INTERNAL', status: 500 },
  /** A dependency is not reachable (yet); retry later. */
  notReady: { code: 'RECSYS_NOT_READY', status: 503 },
  /** Kafka did not acknowledge in time; the write may still land, retry with the same eventId. */
  kafkaUnavailable: { code: 'RECSYS_KAFKA_UNAVAILABLE', status: 503 },
  /** The server is stopping; retry against another instance. */
  shuttingDown: { code: 'RECSYS_SHUTTING_DOWN', status: 503 },
  /** More feed requests in flight than the process takes; `Retry-After` says when to come back. */
  overloaded: { code: 'RECSYS_OVERLOADED', status: 503 },
} as const satisfies Record<string, HttpErrorKind>;
