/**
 * What every serving route checks before it does work: request bounds (URL, headers, declared
 * body), CORS, path and query values, tokens, the per-user rate and load shedding; and the
 * wrapper that turns a throw inside a uWS handler into a 500 instead of a dead process.
 *
 * @example
 *   const guards = new Guards(config, { maxUrlBytes: 2048, maxHeaderBytes: 8192 }, log);
 *   const bad = guards.checkBounds(req); // call synchronously: req dies at the first await
 */
import {
  HTTP_ERRORS,
  publicMessage,
  sendError,
  type Config,
  type HttpErrorKind,
  type HttpRequest,
  type HttpResponse,
  type Logger,
} from '../core/index.js';
import { TokenVerifier } from '../core/auth.js';
import { RateLimiter } from './rate-limit.js';

export interface GuardLimits {
  /** Longest path plus query string, bytes (414 beyond). */
  maxUrlBytes: number;
  /** Most bytes of header names and values together (431 beyond). */
  maxHeaderBytes: number;
}

const NO_STORE = 'no-store';
const USER_ID_MAX = 256;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

export class Guards {
  readonly auth: TokenVerifier;
  readonly limiter: RateLimiter;
  readonly limitMessage: string;
  readonly userIdMessage = `userId must be 1 to ${USER_ID_MAX} printable characters`;
  /** Requests in flight (feeds and socket upgrades being authorised). */
  inFlight = 0;
  /** Live feed builds under way (the live hub sets it). */
  liveBuilds: () => number = () => 0;
  /** Set once the server stops: new requests are refused. */
  closing = false;
  readonly #config: Readonly<Config>;
  readonly #limits: GuardLimits;
  readonly #log: Logger;
  readonly #anyOrigin: boolean;
  readonly #origins: Set<string>;
  readonly #anyOriginHeaders: Record<string, string>;
  readonly #noCorsHeaders: Record<string, string>;

  constructor(config: Readonly<Config>, limits: GuardLimits, log: Logger) {
    this.#config = config;
    this.#limits = limits;
    this.#log = log;
    this.auth = new TokenVerifier(config.serving);
    this.limiter = new RateLimiter({ ratePerSec: config.serving.rateLimitPerSec });
    this.limitMessage = `limit must be an integer from 1 to ${config.serving.maxLimit}`;
    // Headers precomputed once: with `*` every answer carries the same ones; otherwise the
    // request's Origin is echoed when listed (and caches are told answers vary by Origin).
    this.#anyOrigin = config.serving.corsOrigins.includes('*');
    this.#origins = new Set(config.serving.corsOrigins);
    this.#anyOriginHeaders = {
      'access-control-allow-origin': '*',
      'access-control-expose-headers': 'retry-after',
      'cache-control': NO_STORE,
    };
    this.#noCorsHeaders = { vary: 'Origin', 'cache-control': NO_STORE };
  }

  get anyOrigin(): boolean {
    return this.#anyOrigin;
  }

  /** The CORS (and caching) headers of an answer to `origin`. */
  corsFor(origin: string): Record<string, string> {
    if (this.#anyOrigin) return this.#anyOriginHeaders;
    if (origin && this.#origins.has(origin)) {
      return {
        'access-control-allow-origin': origin,
        'access-control-expose-headers': 'retry-after',
        vary: 'Origin',
        'cache-control': NO_STORE,
      };
    }
    return this.#noCorsHeaders;
  }

  originAllowed(origin: string): boolean {
    return this.#anyOrigin || !origin || this.#origins.has(origin);
  }

  /** The bound a request breaks, or null; call synchronously (req dies at the first await). */
  checkBounds(req: HttpRequest): { kind: HttpErrorKind; message: string } | null {
    const urlBytes = req.getUrl().length + (req.getQuery() ?? '').length;
    const { maxUrlBytes, maxHeaderBytes } = this.#limits;
    if (urlBytes > maxUrlBytes) {
      return {
        kind: HTTP_ERRORS.uriTooLong,
        message: `URL is ${urlBytes} bytes; the limit is ${maxUrlBytes}`,
      };
    }
    let headerBytes = 0;
    req.forEach((k, v) => {
      headerBytes += k.length + v.length;
    });
    if (headerBytes > maxHeaderBytes) {
      return {
        kind: HTTP_ERRORS.headersTooLarge,
        message: `headers are ${headerBytes} bytes; the limit is ${maxHeaderBytes}`,
      };
    }
    const declared = Number(req.getHeader('content-length') || '0');
    const maxBody = this.#config.http.maxBodyBytes;
    if (!(declared <= maxBody)) {
      return {
        kind: HTTP_ERRORS.payloadTooLarge,
        message: `body is ${declared} bytes; the limit is ${maxBody}`,
      };
    }
    if (this.closing) return { kind: HTTP_ERRORS.shuttingDown, message: 'server is shutting down' };
    return null;
  }

  /** The `limit` query value, the default when absent, null when invalid. */
  parseLimit(raw: string): number | null {
    if (raw === '') return this.#config.serving.defaultLimit;
    if (!/^[0-9]{1,6}$/.test(raw)) return null;
    const n = Number(raw);
    return n >= 1 && n <= this.#config.serving.maxLimit ? n : null;
  }

  /** A decoded user id path parameter, null when malformed. */
  parseUserId(raw: string): string | null {
    let id: string;
    try {
      id = decodeURIComponent(raw);
    } catch {
      return null;
    }
    if (id.length === 0 || id.length > USER_ID_MAX || CONTROL_CHARS.test(id)) return null;
    return id;
  }

  /** Feeds the process works on now: requests, upgrades being authorised, live builds. */
  load(): number {
    return this.inFlight + this.liveBuilds();
  }

  /** True when the process takes no more feeds now (load shedding). */
  overloaded(): boolean {
    return this.load() >= this.#config.serving.maxInFlight;
  }

  /**
   * A throw inside a uWS handler would end the process; answer 500 instead and keep serving.
   * (A throw after the response was written is logged only.)
   */
  catchThrows(
    route: string,
    handler: (res: HttpResponse, req: HttpRequest) => void,
  ): (res: HttpResponse, req: HttpRequest) => void {
    return (res, req) => {
      try {
        handler(res, req);
      } catch (err) {
        this.#log.error({ err, route }, 'request handler threw');
        try {
          sendError(res, HTTP_ERRORS.internal, publicMessage('RECSYS_INTERNAL'));
        } catch {
          // Already answered or aborted.
        }
      }
    };
  }
}
