/**
 * Every error code the stack raises or answers with, declared once: the HTTP status an endpoint
 * answers it with (500 for errors that never reach a client as themselves) and whether another
 * attempt may succeed. `RecsysError` takes its default `retriable` from here; HTTP answers are
 * `{ error: { code, message } }` with this status. docs/errors.md lists this table.
 *
 * @example
 *   throw new RecsysError('RECSYS_CSV_COLUMNS', 'no userId column');
 *   sendError(res, HTTP_ERRORS.badRequest, 'limit must be 1..100');
 */
export interface ErrorCodeInfo {
  readonly status: number;
  readonly retriable: boolean;
  readonly doc: string;
}

export const ERROR_CODES = {
  // Requests (HTTP answers).
  RECSYS_EVENT_REJECTED: {
    status: 400,
    retriable: false,
    doc: 'an event field is missing, of the wrong type or out of range; the message names it',
  },
  RECSYS_BAD_REQUEST: {
    status: 400,
    retriable: false,
    doc: 'a path parameter or query value is malformed or out of range',
  },
  RECSYS_UNAUTHENTICATED: {
    status: 401,
    retriable: false,
    doc: 'no token, or one that fails verification (signature, issuer, expiry) or is no service token',
  },
  RECSYS_FORBIDDEN: {
    status: 403,
    retriable: false,
    doc: "the token is valid but names another user (a feed, or an event's userId)",
  },
  RECSYS_ORIGIN_DENIED: {
    status: 403,
    retriable: false,
    doc: 'the request Origin is not in RECSYS_CORS_ORIGINS',
  },
  RECSYS_NOT_FOUND: { status: 404, retriable: false, doc: 'no such route' },
  RECSYS_METHOD_NOT_ALLOWED: {
    status: 405,
    retriable: false,
    doc: 'the route takes another method',
  },
  RECSYS_PAYLOAD_TOO_LARGE: { status: 413, retriable: false, doc: 'body over its byte limit' },
  RECSYS_URI_TOO_LONG: { status: 414, retriable: false, doc: 'URL over its byte limit' },
  RECSYS_UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    retriable: false,
    doc: 'body is not application/json',
  },
  RECSYS_RATE_LIMITED: {
    status: 429,
    retriable: true,
    doc: 'over the per-user request rate; Retry-After says when to come back',
  },
  RECSYS_HEADERS_TOO_LARGE: { status: 431, retriable: false, doc: 'headers over their byte limit' },
  RECSYS_INTERNAL: {
    status: 500,
    retriable: false,
    doc: 'an unexpected error (a bug); the answer says no more, the server log has the details',
  },
  RECSYS_NOT_READY: {
    status: 503,
    retriable: true,
    doc: 'a dependency is not reachable (yet); retry later',
  },
  RECSYS_SHUTTING_DOWN: {
    status: 503,
    retriable: true,
    doc: 'the server is stopping; retry against another instance',
  },
  RECSYS_OVERLOADED: {
    status: 503,
    retriable: true,
    doc: 'too many feeds in flight (an upgrade: also sockets or event-loop delay); Retry-After says when',
  },
  RECSYS_WS_TOO_MANY_SOCKETS: {
    status: 429,
    retriable: true,
    doc: 'the user holds RECSYS_WS_MAX_PER_USER live sockets: the new one is closed 4429, reason this code',
  },
  RECSYS_INGEST_QUEUE_FULL: {
    status: 503,
    retriable: true,
    doc: 'the bridge holds RECSYS_INGEST_MAX_QUEUED_BYTES for Kafka already; Retry-After says when to retry',
  },
  RECSYS_RETRAIN_BAD_PAYLOAD: {
    status: 400,
    retriable: false,
    doc: 'the retrain trigger body is not an Alertmanager webhook or {reason}',
  },
  RECSYS_RETRAIN_UNAUTHORIZED: {
    status: 401,
    retriable: false,
    doc: 'the retrain trigger token is missing or wrong',
  },
  RECSYS_RETRAIN_RATE_LIMITED: {
    status: 429,
    retriable: true,
    doc: 'a retrain started less than the minimum interval ago',
  },
  // Dependencies (DependencyUnavailableError): always worth retrying.
  RECSYS_KAFKA_UNAVAILABLE: {
    status: 503,
    retriable: true,
    doc: 'Kafka did not answer or acknowledge in time; a write may still land (retry with the same eventId)',
  },
  RECSYS_REDIS_UNAVAILABLE: { status: 503, retriable: true, doc: 'Redis did not answer' },
  RECSYS_REGISTRY_UNAVAILABLE: {
    status: 503,
    retriable: true,
    doc: 'the schema registry did not answer',
  },
  RECSYS_MQTT_UNAVAILABLE: { status: 503, retriable: true, doc: 'the MQTT broker did not answer' },
  RECSYS_ELASTICSEARCH_UNAVAILABLE: {
    status: 503,
    retriable: true,
    doc: 'Elasticsearch did not answer',
  },
  RECSYS_MLFLOW_UNAVAILABLE: {
    status: 503,
    retriable: true,
    doc: 'MLflow did not answer, or answered 5xx/429',
  },
  // Data and schemas.
  RECSYS_CONFIG_INVALID: {
    status: 500,
    retriable: false,
    doc: 'a configuration value cannot be used; names the variable',
  },
  RECSYS_CONFIG_PUBLISHED_SECRET: {
    status: 500,
    retriable: false,
    doc: 'a secret is a published value (a development default, change-me...); names the variable',
  },
  RECSYS_SCHEMA_INCOMPATIBLE: {
    status: 500,
    retriable: false,
    doc: 'the registry refused a schema as incompatible with the registered one',
  },
  RECSYS_SCHEMA_REGISTER_FAILED: {
    status: 500,
    retriable: false,
    doc: 'the registry answered a schema registration with an error',
  },
  RECSYS_AVRO_UNDECODABLE: {
    status: 500,
    retriable: false,
    doc: 'a Kafka record is not a registry-framed Avro value of a known schema (dead-lettered)',
  },
  RECSYS_CATALOG_INVALID: { status: 400, retriable: false, doc: 'a catalog record is malformed' },
  RECSYS_CSV_COLUMNS: {
    status: 400,
    retriable: false,
    doc: 'an imported CSV lacks a required column',
  },
  RECSYS_ES_REQUEST_REFUSED: {
    status: 500,
    retriable: false,
    doc: 'Elasticsearch refused a bulk request as a whole (400, 413); resending cannot help',
  },
  RECSYS_LAKE_WRITE_FAILED: {
    status: 500,
    retriable: true,
    doc: 'a Parquet file of the lake could not be written',
  },
  // Batch, models and the registry.
  RECSYS_BATCH_PUBLISH_FAILED: {
    status: 500,
    retriable: true,
    doc: 'writing a batch version to Redis failed; the live version is untouched',
  },
  RECSYS_BATCH_NO_ROLLBACK: {
    status: 500,
    retriable: false,
    doc: 'no earlier batch version left to roll back to',
  },
  RECSYS_PYTHON_FAILED: {
    status: 500,
    retriable: false,
    doc: 'the Python training environment or script failed',
  },
  RECSYS_MODEL_INVALID: {
    status: 500,
    retriable: false,
    doc: 'an ONNX model cannot be loaded or has the wrong inputs',
  },
  RECSYS_MODEL_FEATURES_MISMATCH: {
    status: 500,
    retriable: false,
    doc: "a model's feature list differs from the serving code's",
  },
  RECSYS_REGISTRY_BAD_INPUT: {
    status: 400,
    retriable: false,
    doc: 'a model registry call got invalid arguments',
  },
  RECSYS_REGISTRY_UNSUPPORTED_URL: {
    status: 500,
    retriable: false,
    doc: 'RECSYS_MODEL_REGISTRY_URL names no known registry backend',
  },
  RECSYS_REGISTRY_VERSION_NOT_FOUND: {
    status: 404,
    retriable: false,
    doc: 'no such model version',
  },
  RECSYS_REGISTRY_CORRUPT: {
    status: 500,
    retriable: false,
    doc: 'stored model data does not match what was registered',
  },
  RECSYS_REGISTRY_LOCKED: {
    status: 503,
    retriable: true,
    doc: 'another process holds the registry lock',
  },
  RECSYS_REGISTRY_REJECTED: { status: 500, retriable: false, doc: 'MLflow answered a 4xx' },
  RECSYS_REGISTRY_VERSION_FAILED: {
    status: 500,
    retriable: false,
    doc: 'MLflow reported the model version failed or never ready',
  },
  RECSYS_REGISTRY_ARTIFACTS_NOT_PROXIED: {
    status: 500,
    retriable: false,
    doc: 'the MLflow server does not proxy artifacts (--serve-artifacts)',
  },
  RECSYS_PORT_IN_USE: {
    status: 500,
    retriable: false,
    doc: 'a process cannot listen on its HTTP port (another process has it); names the port and its variable',
  },
  // Local stack (deploy/local).
  RECSYS_LOCAL_INSTALL_FAILED: {
    status: 500,
    retriable: false,
    doc: 'a local service could not be installed',
  },
  RECSYS_LOCAL_START_FAILED: {
    status: 500,
    retriable: false,
    doc: 'a local service did not become ready; the message has its log tail',
  },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The backing services a `DependencyUnavailableError` can name, and their codes. */
export const DEPENDENCY_CODES = {
  kafka: 'RECSYS_KAFKA_UNAVAILABLE',
  redis: 'RECSYS_REDIS_UNAVAILABLE',
  registry: 'RECSYS_REGISTRY_UNAVAILABLE',
  mqtt: 'RECSYS_MQTT_UNAVAILABLE',
  elasticsearch: 'RECSYS_ELASTICSEARCH_UNAVAILABLE',
  mlflow: 'RECSYS_MLFLOW_UNAVAILABLE',
} as const satisfies Record<string, ErrorCode>;

export type Dependency = keyof typeof DEPENDENCY_CODES;

/** What an HTTP route answers: a code of the table and its status. */
export interface HttpErrorKind {
  readonly code: ErrorCode;
  readonly status: number;
}

function kind<C extends ErrorCode>(code: C): { code: C; status: number } {
  return { code, status: ERROR_CODES[code].status };
}

/** The codes HTTP routes answer with, by the name routes use. */
export const HTTP_ERRORS = {
  eventRejected: kind('RECSYS_EVENT_REJECTED'),
  badRequest: kind('RECSYS_BAD_REQUEST'),
  unauthenticated: kind('RECSYS_UNAUTHENTICATED'),
  forbidden: kind('RECSYS_FORBIDDEN'),
  originDenied: kind('RECSYS_ORIGIN_DENIED'),
  notFound: kind('RECSYS_NOT_FOUND'),
  methodNotAllowed: kind('RECSYS_METHOD_NOT_ALLOWED'),
  payloadTooLarge: kind('RECSYS_PAYLOAD_TOO_LARGE'),
  uriTooLong: kind('RECSYS_URI_TOO_LONG'),
  unsupportedMediaType: kind('RECSYS_UNSUPPORTED_MEDIA_TYPE'),
  rateLimited: kind('RECSYS_RATE_LIMITED'),
  headersTooLarge: kind('RECSYS_HEADERS_TOO_LARGE'),
  internal: kind('RECSYS_INTERNAL'),
  notReady: kind('RECSYS_NOT_READY'),
  kafkaUnavailable: kind('RECSYS_KAFKA_UNAVAILABLE'),
  redisUnavailable: kind('RECSYS_REDIS_UNAVAILABLE'),
  shuttingDown: kind('RECSYS_SHUTTING_DOWN'),
  overloaded: kind('RECSYS_OVERLOADED'),
  ingestQueueFull: kind('RECSYS_INGEST_QUEUE_FULL'),
  retrainBadPayload: kind('RECSYS_RETRAIN_BAD_PAYLOAD'),
  retrainUnauthorized: kind('RECSYS_RETRAIN_UNAUTHORIZED'),
  retrainRateLimited: kind('RECSYS_RETRAIN_RATE_LIMITED'),
} as const satisfies Record<string, HttpErrorKind>;

/**
 * The message a 5xx answer (or a WebSocket error frame) carries: fixed per code, never the
 * internal error's own text (which can name hosts, keys or code paths); the caller logs that.
 */
export function publicMessage(code: ErrorCode): string {
  return code === 'RECSYS_INTERNAL' ? 'internal error' : ERROR_CODES[code].doc;
}
