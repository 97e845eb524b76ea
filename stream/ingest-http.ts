/**
 * `POST /v1/events`: one event (a JSON object) or a batch (a JSON array), from a backend with a
 * service token or from a user with their JWT (`ingest-auth.ts`), as `Authorization: Bearer`.
 * 401 without a valid credential, 403 when a user posts another user's event; these two are
 * counted and answered, never dead-lettered (a flood of them must not fill the DLQ). Then:
 * 202 once every event is in Kafka; 400 naming the first bad field (the batch is all or
 * nothing, and the rejections go to the DLQ); 413 past the body or batch bound; 415 for a
 * non-JSON body; 503 with `Retry-After` when the bridge already holds its bound of bytes for
 * Kafka (`RECSYS_INGEST_QUEUE_FULL`, before the body is parsed) or Kafka does not acknowledge
 * the events, or the DLQ records of a refusal, in time (the client retries; eventId makes a
 * retried event harmless). A request that times out withdraws its events Kafka has not taken.
 */
import {
  deadlineSignal,
  DependencyUnavailableError,
  HTTP_ERRORS,
  type HttpErrorKind,
  type HttpResponse,
  type IngestConfig,
  publicMessage,
  type Logger,
  readBody,
  sendError,
  sendJson,
  type TemplatedApp,
} from '../core/index.js';
import { EventRejectedError } from '../schemas/index.js';
import type { Counter } from 'prom-client';
import { AuthError } from '../core/auth.js';
import type { IngestPipeline } from './ingest.js';
import { IngestQueueFullError } from './producer.js';
import { foreignEvent, type IngestAuth, type IngestPrincipal } from './ingest-auth.js';

export interface IngestHttpOptions {
  /** Checks the `Authorization` header. */
  auth: IngestAuth;
  limits: IngestConfig;
  /** Largest request body, bytes. */
  maxBodyBytes: number;
  /** How long a request waits for Kafka before answering 503. */
  timeoutMs: number;
  log: Logger;
  /** Counts every refused request by status and error code. */
  refused: Counter<'status' | 'code'>;
  /** True once the bridge stops: requests then get 503 `RECSYS_SHUTTING_DOWN`. */
  stopping?: () => boolean;
}

class KafkaTimeoutError extends DependencyUnavailableError {
  constructor(ms: number) {
    super('kafka', `Kafka did not acknowledge within ${ms} ms`);
  }
}

/** Seconds a 503 tells the client to wait: about one produce retry, or a drained batch. */
const RETRY_AFTER_S = '1';

/** `pipeline()` is null while the role is still connecting; requests then get 503. */
export function mountIngest(
  app: TemplatedApp,
  pipeline: () => IngestPipeline | null,
  opts: IngestHttpOptions,
): void {
  const { refuse, unavailable } = refusals(opts);

  app.post('/v1/events', (res, req) => {
    const authorization = req.getHeader('authorization');
    if (!authorization) {
      res.onAborted(() => undefined);
      refuse(res, HTTP_ERRORS.unauthenticated, 'no token: send Authorization: Bearer <token>');
      return;
    }
    // Verified before the body is read (below).
    const who: Promise<IngestPrincipal | AuthError> = opts.auth
      .authenticate(authorization)
      .catch((err: unknown) => {
        if (err instanceof AuthError) return err;
        opts.log.error({ err }, 'http ingest: token check failed');
        return new AuthError('token could not be checked');
      });
    // Refusals that need no body are answered without reading it (a refused flood buffers
    // nothing): the content type, and a bridge stopping, starting, or at its byte bound.
    const early = earlyRefusal(req.getHeader('content-type'), pipeline(), opts);
    if (early) {
      const state = { aborted: false };
      res.onAborted(() => {
        state.aborted = true;
      });
      // An unknown sender learns nothing but 401, whatever else is wrong with the request.
      void who.then((principal) =>
        principal instanceof AuthError
          ? refuse(res, HTTP_ERRORS.unauthenticated, principal.message, state)
          : early.kind === HTTP_ERRORS.ingestQueueFull
            ? unavailable(res, early.error, state)
            : refuse(res, early.kind, early.message, state),
      );
      return;
    }
    // The body is read only once the sender is known: an unknown one gets its 401 before a
    // byte of the body is buffered, whatever its size (not a 413 that would read it first).
    readBody(
      res,
      req,
      opts.maxBodyBytes,
      (body, state) => void handle(body, state),
      () => opts.refused.labels('413', HTTP_ERRORS.payloadTooLarge.code).inc(),
      who.then((p) =>
        p instanceof AuthError
          ? (state: { aborted: boolean }) =>
              refuse(res, HTTP_ERRORS.unauthenticated, p.message, state)
          : null,
      ),
    );

    async function handle(body: Buffer, state: { aborted: boolean }): Promise<void> {
      const principal = await who;
      // Admitted above: only a known sender's body is read.
      if (principal instanceof AuthError) return;
      // Checked again: the state may have changed while the body arrived.
      const active = pipeline();
      const late = earlyRefusal('application/json', active, opts);
      if (late || !active) {
        if (late?.kind === HTTP_ERRORS.ingestQueueFull) return unavailable(res, late.error, state);
        return refuse(res, late?.kind ?? HTTP_ERRORS.notReady, late?.message ?? '', state);
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch (err) {
        const rejection = new EventRejectedError(
          'bad_json',
          null,
          `body is not valid JSON: ${(err as Error).message}`,
        );
        try {
          await active.rejectHttpBody(rejection, body);
        } catch (e) {
          // Not in the DLQ: not an answer the client may stop at.
          return unavailable(res, e, state);
        }
        return refuse(res, HTTP_ERRORS.eventRejected, rejection.message, state, {
          reason: rejection.reason,
          field: null,
        });
      }
      const events = Array.isArray(parsed) ? parsed : [parsed];
      if (events.length === 0) {
        return refuse(res, HTTP_ERRORS.eventRejected, 'batch is empty', state, {
          reason: 'bad_value',
          field: null,
        });
      }
      const foreign = foreignEvent(events, principal);
      if (foreign >= 0) {
        const where = Array.isArray(parsed) ? `events[${foreign}]: ` : '';
        return refuse(
          res,
          HTTP_ERRORS.forbidden,
          `${where}userId must be the token's subject`,
          state,
          Array.isArray(parsed) ? { index: foreign } : {},
        );
      }
      if (events.length > opts.limits.maxBatchEvents) {
        return refuse(
          res,
          HTTP_ERRORS.payloadTooLarge,
          `batch of ${events.length} events; the limit is ${opts.limits.maxBatchEvents}`,
          state,
        );
      }
      const deadline = deadlineSignal(opts.timeoutMs, () => new KafkaTimeoutError(opts.timeoutMs));
      try {
        const result = await active.ingestHttp(events, body, deadline.signal);
        const first = result.rejections[0];
        if (first) {
          const where = Array.isArray(parsed) ? `events[${first.index}]: ` : '';
          const kind =
            first.error.reason === 'too_large'
              ? HTTP_ERRORS.payloadTooLarge
              : HTTP_ERRORS.eventRejected;
          return refuse(res, kind, where + first.error.message, state, {
            reason: first.error.reason,
            field: first.error.field,
            index: Array.isArray(parsed) ? first.index : undefined,
            rejected: result.rejections.length,
          });
        }
        sendJson(res, 202, { accepted: result.accepted }, state);
      } catch (err) {
        try {
          return unavailable(res, err, state);
        } catch {
          opts.log.error({ err }, 'http ingest failed');
          refuse(res, HTTP_ERRORS.internal, publicMessage('RECSYS_INTERNAL'), state);
        }
      } finally {
        deadline.clear();
      }
    }
  });
}

/** Why a request is refused before its body is read, if it is. */
function earlyRefusal(
  contentType: string,
  pipeline: IngestPipeline | null,
  opts: IngestHttpOptions,
): { kind: HttpErrorKind; message: string; error?: IngestQueueFullError } | null {
  if (!/^application\/(?:[\w.+-]+\+)?json\b/i.test(contentType)) {
    const message = `expected content-type application/json, got "${contentType || 'none'}"`;
    return { kind: HTTP_ERRORS.unsupportedMediaType, message };
  }
  if (opts.stopping?.()) {
    const kind = HTTP_ERRORS.shuttingDown;
    return { kind, message: publicMessage(kind.code) };
  }
  if (!pipeline) {
    const message = 'ingest is starting: Kafka or the schema registry is not reachable yet';
    return { kind: HTTP_ERRORS.notReady, message };
  }
  if (!pipeline.hasRoom()) {
    const { heldBytes, limitBytes } = pipeline.queue;
    const kind = HTTP_ERRORS.ingestQueueFull;
    return { kind, message: '', error: new IngestQueueFullError(heldBytes, limitBytes) };
  }
  return null;
}

/**
 * How the route answers a refusal: every one is answered and counted here, so none goes unseen
 * in /metrics; 401 names the scheme, 503 says when to retry.
 */
function refusals(opts: IngestHttpOptions): {
  refuse: (
    res: HttpResponse,
    kind: HttpErrorKind,
    message: string,
    state?: { aborted: boolean },
    details?: Record<string, unknown>,
  ) => void;
  /** 503 for Kafka trouble (a timeout, a full queue); rethrows anything else. */
  unavailable: (res: HttpResponse, err: unknown, state: { aborted: boolean }) => void;
} {
  const refuse = (
    res: HttpResponse,
    kind: HttpErrorKind,
    message: string,
    state?: { aborted: boolean },
    details?: Record<string, unknown>,
  ): void => {
    opts.refused.labels(String(kind.status), kind.code).inc();
    const headers: Record<string, string> | undefined =
      kind.status === 401
        ? { 'www-authenticate': 'Bearer' }
        : kind.status === 503
          ? { 'retry-after': RETRY_AFTER_S }
          : undefined;
    sendError(res, kind, message, state, details, headers);
  };
  /** 503 for Kafka trouble (a timeout, a full queue); rethrows anything else. */
  const unavailable = (res: HttpResponse, err: unknown, state: { aborted: boolean }): void => {
    if (err instanceof IngestQueueFullError) {
      const full = HTTP_ERRORS.ingestQueueFull;
      return refuse(res, full, publicMessage(full.code), state);
    }
    if (err instanceof DependencyUnavailableError) {
      opts.log.warn({ err: err.message }, 'http ingest: Kafka did not acknowledge');
      const kafka = HTTP_ERRORS.kafkaUnavailable;
      return refuse(res, kafka, publicMessage(kafka.code), state);
    }
    throw err;
  };

  return { refuse, unavailable };
}
