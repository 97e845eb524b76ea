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
  constructor(variable: string, message: string) {
    super('RECSYS_CONFIG_INVALID', `${variable}: ${message}`);
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

/** Is this error worth another attempt? Programming errors (TypeError, ...) never are. */
export function isRetriable(err: unknown): boolean {
  if (err instanceof RecsysError) return err.retriable;
  if (err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError) {
    return false;
  }
  // Errors from third-party clients (kafkajs, ioredis, fetch) carry their own flag or
  // are network errors; treat unknown errors as transient unless they say otherwise.
  const flagged = (err as { retriable?: unknown } | null)?.retriable;
  return flagged === undefined ? true : Boolean(flagged);
}
