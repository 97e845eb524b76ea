/**
 * MLflow's REST API (`/api/2.0/...`) as the registry uses it: JSON in and out, retries with the
 * registry's policy. A network failure, a 5xx or a 429 is `DependencyUnavailableError('mlflow')`;
 * another 4xx is a `RegistryError` (`RECSYS_REGISTRY_REJECTED`) with MLflow's error code.
 * Requests that create something are retried only when the connection was refused (the server
 * cannot have seen them), so a retry never makes a duplicate.
 */
import {
  DependencyUnavailableError,
  retry,
  type Logger,
  type RetryOptions,
} from '../../core/index.js';
import { REGISTRY_ERRORS, RegistryError } from './registry.js';

export interface MlflowRun {
  info: { run_id: string; experiment_id: string; artifact_uri: string };
  data?: {
    metrics?: { key: string; value: number }[];
    params?: { key: string; value: string }[];
    tags?: { key: string; value: string }[];
  };
}

export interface MlflowModelVersion {
  name: string;
  version: string;
  creation_timestamp?: number;
  source: string;
  run_id?: string;
  status?: string;
  status_message?: string;
  tags?: { key: string; value: string }[];
  aliases?: string[];
}

export type Method = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';

export class MlflowClient {
  readonly #base: string;
  readonly #timeoutMs: number;
  readonly #retry: RetryOptions;
  readonly #log: Logger;

  constructor(base: string, timeoutMs: number, retryOptions: RetryOptions, log: Logger) {
    this.#base = base;
    this.#timeoutMs = timeoutMs;
    this.#retry = retryOptions;
    this.#log = log;
  }

  /**
   * One REST call with retries. JSON in and out, except a Buffer body (sent as bytes) and
   * `binary` (the answer as bytes).
   */
  call<T = unknown>(
    method: Method,
    path: string,
    body?: unknown,
    options: { creates?: boolean; binary?: boolean } = {},
  ): Promise<T> {
    const url = `${this.#base}/api/2.0/${path}`;
    return retry(
      async () => {
        let res: Response;
        const t0 = performance.now();
        try {
          res = await fetch(url, {
            method,
            headers:
              body === undefined
                ? {}
                : {
                    'content-type': Buffer.isBuffer(body)
                      ? 'application/octet-stream'
                      : 'application/json',
                  },
            body:
              body === undefined
                ? undefined
                : Buffer.isBuffer(body)
                  ? new Uint8Array(body)
                  : JSON.stringify(body),
            signal: AbortSignal.timeout(this.#timeoutMs),
          });
        } catch (err) {
          throw new NetworkError(`${method} ${path}: ${describe(err)}`, err);
        }
        this.#log.debug(
          { method, path, status: res.status, ms: Math.round(performance.now() - t0) },
          'mlflow call',
        );
        if (res.ok) {
          if (options.binary) return Buffer.from(await res.arrayBuffer()) as T;
          const text = await res.text();
          return (text === '' ? {} : JSON.parse(text)) as T;
        }
        const text = await res.text().catch(() => '');
        let mlflowCode: string | undefined;
        let message = text.slice(0, 500);
        try {
          const parsed = JSON.parse(text) as { error_code?: string; message?: string };
          mlflowCode = parsed.error_code;
          message = parsed.message ?? message;
        } catch {
          // not JSON (a proxy's error page): keep the text
        }
        if (res.status >= 500 || res.status === 429) {
          throw new DependencyUnavailableError(
            'mlflow',
            `${method} ${path} answered ${res.status}: ${message}`,
          );
        }
        throw new RegistryError(
          REGISTRY_ERRORS.rejected,
          `mlflow ${method} ${path} answered ${res.status} ${mlflowCode ?? ''}: ${message}`,
          { status: res.status, ...(mlflowCode ? { mlflowCode } : {}) },
        );
      },
      {
        ...this.#retry,
        retriable: (err) =>
          err instanceof NetworkError
            ? !options.creates || err.refused
            : err instanceof DependencyUnavailableError && !options.creates,
      },
    ).catch((err: unknown) => {
      if (err instanceof NetworkError) {
        throw new DependencyUnavailableError('mlflow', err.message, { cause: err.cause });
      }
      throw err;
    });
  }
}

/** A fetch that failed before any answer; `refused` means the server never saw the request. */
class NetworkError extends Error {
  readonly refused: boolean;
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.refused = errnoOf(cause) === 'ECONNREFUSED';
  }
}

function errnoOf(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: string } } | null)?.cause;
  return cause?.code ?? (err as { code?: string } | null)?.code;
}

function describe(err: unknown): string {
  const code = errnoOf(err);
  const message = err instanceof Error ? err.message : String(err);
  return code ? `${message} (${code})` : message;
}
