/**
 * The uWebSockets.js HTTP server every process serves from: `/healthz` (the process runs),
 * `/readyz` (every dependency answers, per named check; 200 `degraded` when only optional ones
 * fail), `/metrics` (Prometheus), plus the
 * routes a role mounts on `app` before `listen`. Errors are JSON `{ error: { code, message } }`
 * with the status of their code (`error-codes.ts`).
 *
 * @example
 *   const server = createHttpServer({ host, port, log, metrics, readiness });
 *   server.app.get('/hello', (res) => sendJson(res, 200, { hello: 'world' }));
 *   const boundPort = await server.listen();
 */
import uWS from 'uWebSockets.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from './log.js';
import type { HealthReport } from './health.js';
import { HTTP_ERRORS, publicMessage, type HttpErrorKind } from './error-codes.js';
import { bindFailure, PortInUseError } from './ports.js';

export type { HttpRequest, HttpResponse, TemplatedApp };

const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  202: '202 Accepted',
  204: '204 No Content',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  413: '413 Payload Too Large',
  414: '414 URI Too Long',
  415: '415 Unsupported Media Type',
  429: '429 Too Many Requests',
  431: '431 Request Header Fields Too Large',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

/** The status line text uWS writes for `status`. */
export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? `${status}`;
}

/**
 * What a handler knows of its request: whether the client went away (nothing may be written
 * then), and whether the connection must close after the answer (a body left unread on a paused
 * socket would stall the next request on it).
 */
export interface RequestState {
  aborted: boolean;
  close?: boolean;
}

/**
 * Writes a JSON response; safe to call after an await (corks, and skips aborted requests).
 * `headers` are written as given (e.g. CORS, Retry-After).
 */
export function sendJson(
  res: HttpResponse,
  status: number,
  body: unknown,
  state?: RequestState,
  headers?: Readonly<Record<string, string>>,
): void {
  if (state?.aborted) return;
  const text = JSON.stringify(body);
  res.cork(() => {
    res.writeStatus(statusText(status)).writeHeader('content-type', 'application/json');
    if (headers) for (const name in headers) res.writeHeader(name, headers[name] as string);
    res.end(text, state?.close === true);
  });
}

export function sendError(
  res: HttpResponse,
  kind: HttpErrorKind,
  message: string,
  state?: RequestState,
  details: Record<string, unknown> = {},
  headers?: Readonly<Record<string, string>>,
): void {
  sendJson(res, kind.status, { error: { code: kind.code, message, ...details } }, state, headers);
}

/**
 * Reads a request body of at most `maxBytes`. Answers 413 itself (and calls neither callback)
 * once the declared or received size passes the bound, without buffering the excess.
 * With `admit`, the body stays unread (the socket paused) until it settles: `null` reads it;
 * a function is the refusal (a 401), called with the request's state to answer, and the body
 * is never read: a refused sender cannot make the server buffer it, nor learn of a 413. A
 * request answered with its body unread closes its connection after the answer.
 * Must be called synchronously inside the route handler.
 */
export function readBody(
  res: HttpResponse,
  req: HttpRequest,
  maxBytes: number,
  onBody: (body: Buffer, state: { aborted: boolean }) => void,
  onTooLarge?: () => void,
  admit?: Promise<((state: RequestState) => void) | null>,
): void {
  const state: RequestState & { done: boolean } = { aborted: false, done: false };
  res.onAborted(() => {
    state.aborted = true;
  });
  const tooLarge = (message: string): void => {
    state.done = true;
    onTooLarge?.();
    sendError(res, HTTP_ERRORS.payloadTooLarge, message, state);
  };
  const declared = Number(req.getHeader('content-length') || '0');
  if (declared > maxBytes && !admit) {
    tooLarge(`body is ${declared} bytes; the limit is ${maxBytes}`);
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  // Chunks that arrive before `admit` settles (the part sent with the headers) wait here.
  let held: { chunk: Buffer; isLast: boolean }[] | null = admit ? [] : null;
  const take = (chunk: Buffer, isLast: boolean): void => {
    if (state.done) return;
    size += chunk.byteLength;
    if (size > maxBytes) {
      tooLarge(`body exceeds the limit of ${maxBytes} bytes`);
      return;
    }
    chunks.push(chunk);
    if (isLast) {
      state.done = true;
      onBody(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size), state);
    }
  };
  res.onData((chunk, isLast) => {
    // uWS reuses the chunk's memory after this callback returns: copy it.
    const copy = Buffer.from(new Uint8Array(chunk));
    if (held) held.push({ chunk: copy, isLast });
    else take(copy, isLast);
  });
  if (!admit) return;
  res.pause();
  void admit.then((refusal) => {
    if (state.aborted) return;
    const early = held ?? [];
    held = null;
    if (refusal || declared > maxBytes) {
      // Answered with the body unread on a paused socket: close the connection after it.
      state.close = true;
      if (refusal) {
        state.done = true;
        refusal(state);
      } else tooLarge(`body is ${declared} bytes; the limit is ${maxBytes}`);
      return;
    }
    res.resume();
    for (const { chunk, isLast } of early) take(chunk, isLast);
  });
}

export interface HttpServerOptions {
  host: string;
  port: number;
  /** The variable that set `port`, named when it is taken. @default 'RECSYS_HTTP_PORT' */
  portVariable?: string;
  /**
   * Share the port with other processes that say so (SO_REUSEPORT): serving workers only.
   * Otherwise the port is bound exclusively and a second process fails. @default false
   */
  sharedPort?: boolean;
  log: Logger;
  metrics: Registry;
  /** What `/metrics` answers; default `metrics.metrics()` (a cluster worker passes all workers'). */
  metricsText?: () => Promise<string>;
  readiness: () => Promise<HealthReport>;
}

export interface HttpServer {
  app: TemplatedApp;
  /** Starts listening; resolves with the bound port (useful with port 0). */
  listen(): Promise<number>;
  close(): void;
}

/** uSockets' LIBUS_LISTEN_EXCLUSIVE_PORT: bind without SO_REUSEPORT. */
const LISTEN_EXCLUSIVE_PORT = 1;
/** `listen(host, port, options, cb)`, which the native addon takes but the typings omit. */
type ListenWithOptions = (
  host: string,
  port: number,
  options: number,
  cb: (socket: uWS.us_listen_socket | false) => void,
) => void;

/**
 * `recsys_readiness_check{check}`: each readiness check of the process (the checks `/readyz`
 * runs: kafka, redis, elasticsearch, registry, mqtt, model, ...), 1 passing or 0 failing, and
 * `recsys_readiness_degraded{check}`: 1 for an optional check that fails (the process stays
 * ready). Run when Prometheus scrapes, once for both gauges. Dashboards and alerts read the
 * dependencies' health from them.
 */
function readinessGauge(registry: Registry, readiness: () => Promise<HealthReport>): void {
  if (registry.getSingleMetric('recsys_readiness_check')) return;
  let pending: Promise<HealthReport | null> | null = null;
  const read = (): Promise<HealthReport | null> => {
    pending ??= readiness()
      .catch(() => null)
      .finally(() => setImmediate(() => (pending = null)));
    return pending;
  };
  new Gauge({
    name: 'recsys_readiness_check',
    help: 'readiness checks of this process at scrape time (those of /readyz), 1 passing, 0 failing',
    labelNames: ['check'],
    registers: [registry],
    // Several serving workers: the worst of them.
    aggregator: 'min',
    async collect() {
      const report = await read();
      this.reset();
      for (const [check, r] of Object.entries(report?.checks ?? {})) {
        this.labels(check).set(r.ok ? 1 : 0);
      }
    },
  });
  new Gauge({
    name: 'recsys_readiness_degraded',
    help: 'optional readiness checks failing at scrape time (ready, but degraded), 1 per check',
    labelNames: ['check'],
    registers: [registry],
    aggregator: 'max',
    async collect() {
      const report = await read();
      this.reset();
      for (const check of Object.keys(report?.checks ?? {})) {
        this.labels(check).set(report?.degraded?.includes(check) ? 1 : 0);
      }
    },
  });
}

export function createHttpServer(opts: HttpServerOptions): HttpServer {
  const app = uWS.App();
  let socket: uWS.us_listen_socket | null = null;
  readinessGauge(opts.metrics, opts.readiness);

  app.get('/healthz', (res) => sendJson(res, 200, { status: 'ok' }));

  app.get('/readyz', (res) => {
    const state = { aborted: false };
    res.onAborted(() => {
      state.aborted = true;
    });
    opts.readiness().then(
      (report) =>
        sendJson(
          res,
          report.ok ? 200 : 503,
          {
            status: report.ok ? (report.degraded ? 'degraded' : 'ready') : 'not ready',
            checks: report.checks,
            ...(report.degraded ? { degraded: report.degraded } : {}),
          },
          state,
        ),
      (err: Error) => {
        opts.log.error({ err }, 'readiness check threw');
        sendError(res, HTTP_ERRORS.notReady, publicMessage('RECSYS_NOT_READY'), state);
      },
    );
  });

  app.get('/metrics', (res) => {
    const state = { aborted: false };
    res.onAborted(() => {
      state.aborted = true;
    });
    (opts.metricsText ?? (() => opts.metrics.metrics()))().then(
      (text) => {
        if (state.aborted) return;
        res.cork(() => {
          res.writeStatus('200 OK').writeHeader('content-type', opts.metrics.contentType).end(text);
        });
      },
      (err: Error) => {
        opts.log.error({ err }, 'metrics collection failed');
        sendError(res, HTTP_ERRORS.internal, publicMessage('RECSYS_INTERNAL'), state);
      },
    );
  });

  return {
    app,
    listen() {
      // Routes mounted after creation must come before this catch-all.
      app.any('/*', (res, req) =>
        sendError(
          res,
          HTTP_ERRORS.notFound,
          `no route for ${req.getMethod().toUpperCase()} ${req.getUrl()}`,
        ),
      );
      const options = opts.sharedPort ? 0 : LISTEN_EXCLUSIVE_PORT;
      return new Promise((resolve, reject) => {
        (app.listen as unknown as ListenWithOptions)(
          opts.host,
          opts.port,
          options,
          (listenSocket) => {
            if (!listenSocket) {
              // uWS says only that it failed; a plain bind says why.
              void bindFailure(opts.host, opts.port).then((why) => {
                const reason = why === 'EADDRINUSE' || why === null ? 'the port is in use' : why;
                const variable = opts.portVariable ?? 'RECSYS_HTTP_PORT';
                reject(new PortInUseError(opts.host, opts.port, variable, reason));
              });
              return;
            }
            socket = listenSocket;
            const port = uWS.us_socket_local_port(listenSocket);
            opts.log.info({ host: opts.host, port }, 'http listening');
            resolve(port);
          },
        );
      });
    },
    close() {
      if (socket) uWS.us_listen_socket_close(socket);
      socket = null;
    },
  };
}
