/**
 * Every error the stack raises on purpose derives from {@link RecsysError}: a stable `code` from
 * the one table (`error-codes.ts`) callers can switch on, a `retriable` flag the retry helper
 * honours (the table's unless given), and the original `cause`. Areas declare their own
 * subclasses beside their code (e.g. `CatalogRecordError` in `store/catalog.ts`).
 */
import { DEPENDENCY_CODES, ERROR_CODES, type Dependency, type ErrorCode } from './error-codes.js';

export class RecsysError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;

  constructor(
    code: ErrorCode,
    message: string,
    options: { cause?: unknown; retriable?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retriable = options.retriable ?? ERROR_CODES[code].retriable;
  }
}

/** A configuration value that cannot be used; names the environment variable. */
export class ConfigError extends RecsysError {
  readonly variable: string;
  constructor(
    variable: string,
    message: string,
    code: 'RECSYS_CONFIG_INVALID' | 'RECSYS_CONFIG_PUBLISHED_SECRET' = 'RECSYS_CONFIG_INVALID',
  ) {
    super(code, `${variable}: ${message}`);
    this.variable = variable;
  }
}

/** A backing service (Kafka, Redis, ...) did not answer; worth retrying. */
export class DependencyUnavailableError extends RecsysError {
  readonly dependency: Dependency;
  constructor(dependency: Dependency, message: string, options: { cause?: unknown } = {}) {
    super(DEPENDENCY_CODES[dependency], `${dependency}: ${message}`, {
      cause: options.cause,
      retriable: true,
    });
    this.dependency = dependency;
  }
}

/**
 * What a consumer does about an error (`stream/poison.ts`):
 * - `retriable`: the dependency is away or busy (connections, timeouts, Redis LOADING / BUSY /
 *   TRYAGAIN / READONLY / MASTERDOWN / CLUSTERDOWN, Kafka's transient errors, a
 *   `DependencyUnavailableError`, an errno such as ENOSPC): wait and try again for as long as it
 *   takes; the partition pauses, nothing is given up;
 * - `resource`: Redis refused a write for want of memory (OOM under `noeviction`): it may pass
 *   (a batch publish frees its old version, an operator raises the limit), so retry a bounded
 *   number of attempts, then give the records up to the DLQ rather than stall every partition;
 * - `unknown`: an error of no known kind: treated as `resource` (bounded, then the DLQ), so no
 *   unforeseen error stalls a partition forever;
 * - `permanent`: the same input fails the same way (a Lua error, WRONGTYPE, an unusable record, a
 *   non-retriable `RecsysError`): find the record and dead-letter it;
 * - `fatal`: a programming error (TypeError, RangeError, ...): stop, never retry or dead-letter.
 */
export type ErrorClass = 'retriable' | 'resource' | 'unknown' | 'permanent' | 'fatal';

/** Redis reply prefixes of a server that is starting, busy, failing over or read-only. */
const REDIS_TRANSIENT = new Set([
  'LOADING',
  'BUSY',
  'TRYAGAIN',
  'READONLY',
  'MASTERDOWN',
  'CLUSTERDOWN',
  'MOVED',
  'ASK',
  'NOREPLICAS',
]);
/** Kafka protocol errors the same records meet again whatever the cluster does. */
const KAFKA_PERMANENT = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD',
  'CORRUPT_MESSAGE',
]);
/**
 * ioredis' own errors while it has no connection (they carry no code), and a Redis Cluster
 * client's while no node answers or the slots move (a failover).
 */
export const REDIS_CLIENT_DOWN =
  /^(Connection is closed|Stream isn't writeable|Command timed out|Too many Cluster redirections|None of startup nodes is available|Cluster isn't ready|Failed to refresh slots cache)/;
/** @elastic/elasticsearch transport errors. */
const ES_TRANSPORT = new Set(['ConnectionError', 'TimeoutError', 'NoLivingConnectionsError']);

interface ErrorShape {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  retriable?: unknown;
  type?: unknown;
  meta?: { statusCode?: unknown };
}

/** Sorts an error into an {@link ErrorClass}; see there. */
export function classifyError(err: unknown): ErrorClass {
  if (err instanceof RecsysError) return err.retriable ? 'retriable' : 'permanent';
  if (
    err instanceof TypeError ||
    err instanceof RangeError ||
    err instanceof SyntaxError ||
    err instanceof ReferenceError
  ) {
    return 'fatal';
  }
  const e = (err ?? {}) as ErrorShape;
  const name = typeof e.name === 'string' ? e.name : '';
  const message = typeof e.message === 'string' ? e.message : '';
  if (name === 'ReplyError') {
    // Redis 7 keeps the reply's prefix for errors raised inside a script (`WRONGTYPE ...
    // script: <sha>, on @user_script:12.`); a Lua runtime error is `ERR user_script:...`.
    const prefix = message.split(' ', 1)[0] ?? '';
    if (REDIS_TRANSIENT.has(prefix)) return 'retriable';
    return prefix === 'OOM' ? 'resource' : 'permanent';
  }
  if (name === 'MaxRetriesPerRequestError' || name === 'AbortError') return 'retriable';
  if (name === 'ClusterAllFailedError') return 'retriable';
  if (name === 'TimeoutError' || REDIS_CLIENT_DOWN.test(message)) return 'retriable';
  if (ES_TRANSPORT.has(name)) return 'retriable';
  if (name === 'ResponseError' && typeof e.meta?.statusCode === 'number') {
    const status = e.meta.statusCode;
    return status === 429 || status >= 500 ? 'retriable' : 'permanent';
  }
  if (name.startsWith('KafkaJS')) {
    return typeof e.type === 'string' && KAFKA_PERMANENT.has(e.type) ? 'permanent' : 'retriable';
  }
  // Node system errors (ECONNREFUSED, ETIMEDOUT, ENOSPC, EACCES, ...): the machine or the
  // network, not the record.
  if (typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code)) return 'retriable';
  if (e.retriable === true) return 'retriable';
  if (e.retriable === false) return 'permanent';
  return 'unknown';
}

/**
 * Is this error worth another attempt (the default of `retry`)? Programming errors and
 * permanent ones are not; OOM and errors of no known kind are, since every `retry` caller
 * bounds its attempts (the consumer loop bounds them by class, see {@link classifyError}).
 */
export function isRetriable(err: unknown): boolean {
  const c = classifyError(err);
  return c === 'retriable' || c === 'resource' || c === 'unknown';
}
