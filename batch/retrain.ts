/**
 * The retrain trigger: `POST /v1/admin/retrain` takes Prometheus Alertmanager's webhook
 * (payload version "4") and starts one retrain when an alert it watches (by default
 * `RecsysOnlineCtrLow`, see `deploy/prometheus/`) is firing. Alertmanager re-sends a firing
 * alert every `repeat_interval` and on every group change, so the endpoint is built to be hit
 * repeatedly:
 *
 * | situation                                  | answer                                        |
 * | ------------------------------------------ | --------------------------------------------- |
 * | a watched alert fires, nothing running     | 202 `{status:'accepted', runId}`              |
 * | a retrain is already running               | 202 `{status:'already_running', runId}` (coalesced: the running one covers it) |
 * | the last retrain started < minIntervalMs ago | 429 `RECSYS_RETRAIN_RATE_LIMITED` + Retry-After |
 * | only resolved or unwatched alerts          | 200 `{status:'ignored', reason}`              |
 * | bad token / not JSON / not Alertmanager v4 | 401 / 415 or 400 / 400 (`{error:{code,message}}`) |
 * | body over maxBodyBytes                     | 413                                           |
 *
 * Alertmanager retries 5xx only, so none of these make it hammer the endpoint. Coalescing
 * answers 2xx rather than 409 on purpose: the request's intent (a retrain with fresh data) is
 * being served, and a 4xx would be logged by Alertmanager as a failed notification.
 *
 * @example
 *   mountRetrainTrigger(server.app, { onTrigger: () => runBatch(config), log, metrics,
 *     token: process.env.RECSYS_RETRAIN_TOKEN, minIntervalMs: 3_600_000 });
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { Counter, Gauge } from 'prom-client';
import {
  HTTP_ERRORS,
  type HttpErrorKind,
  type HttpResponse,
  type Logger,
  readBody,
  type Registry,
  sendError,
  sendJson,
  type TemplatedApp,
} from '../core/index.js';

export const RETRAIN_PATH = '/v1/admin/retrain';

export interface RetrainTriggerOptions {
  /** Runs one retrain; its promise settles when the retrain is over (failures are logged). */
  onTrigger: () => Promise<void>;
  log: Logger;
  metrics: Registry;
  /** When set, requests must carry `Authorization: Bearer <token>`. */
  token?: string;
  /** Least time between the starts of two retrains, ms. */
  minIntervalMs: number;
  /** Alert names that start a retrain. @default ['RecsysOnlineCtrLow'] */
  alertNames?: readonly string[];
  /** Largest accepted body, bytes (Alertmanager groups can be large). @default 262144 */
  maxBodyBytes?: number;
  /** Clock, for tests. @default Date.now */
  now?: () => number;
}

export interface RetrainTrigger {
  /** The id of the retrain in progress, or null. */
  running(): string | null;
  /** Resolves when no retrain is running (for shutdown and tests). */
  idle(): Promise<void>;
}

/** The parts of Alertmanager's webhook payload (version 4) the trigger reads. */
export interface AlertmanagerPayload {
  version: '4';
  status: 'firing' | 'resolved';
  receiver?: string;
  groupKey?: string;
  alerts: {
    status: 'firing' | 'resolved';
    labels: Record<string, string>;
    annotations?: Record<string, string>;
    startsAt?: string;
    fingerprint?: string;
  }[];
}

/** Parses and checks a webhook body; returns the payload or a message naming the bad part. */
export function parseAlertmanagerPayload(body: Buffer): AlertmanagerPayload | string {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (err) {
    return `body is not JSON: ${(err as Error).message}`;
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    return 'body must be a JSON object';
  }
  const p = json as Record<string, unknown>;
  if (p.version !== '4') return `version must be "4" (Alertmanager webhook), got ${str(p.version)}`;
  if (p.status !== 'firing' && p.status !== 'resolved') {
    return `status must be "firing" or "resolved", got ${str(p.status)}`;
  }
  if (!Array.isArray(p.alerts)) return 'alerts must be an array';
  for (const [i, a] of p.alerts.entries()) {
    if (a === null || typeof a !== 'object') return `alerts[${i}] must be an object`;
    const alert = a as Record<string, unknown>;
    if (alert.status !== 'firing' && alert.status !== 'resolved') {
      return `alerts[${i}].status must be "firing" or "resolved", got ${str(alert.status)}`;
    }
    const labels = alert.labels as Record<string, unknown> | null | undefined;
    if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) {
      return `alerts[${i}].labels must be an object`;
    }
    if (typeof labels.alertname !== 'string') {
      return `alerts[${i}].labels.alertname must be a string`;
    }
  }
  return json as AlertmanagerPayload;
}

function str(v: unknown): string {
  return v === undefined ? 'nothing' : JSON.stringify(v).slice(0, 40);
}

/** The trigger's metrics; label children resolved once (the outcome set is closed). */
function retrainMetrics(registry: Registry) {
  const triggers = new Counter({
    name: 'recsys_retrain_triggers_total',
    help: 'Retrain webhook requests, by outcome (accepted, already_running, rate_limited, ignored, invalid, unauthorized); accepted ones started a retrain',
    labelNames: ['outcome'],
    registers: [registry],
  });
  return {
    outcome: {
      accepted: triggers.labels('accepted'),
      alreadyRunning: triggers.labels('already_running'),
      rateLimited: triggers.labels('rate_limited'),
      ignored: triggers.labels('ignored'),
      invalid: triggers.labels('invalid'),
      unauthorized: triggers.labels('unauthorized'),
    },
    runs: new Counter({
      name: 'recsys_retrain_runs_total',
      help: 'Retrains the trigger started, by result (succeeded, failed)',
      labelNames: ['result'],
      registers: [registry],
    }),
    runningGauge: new Gauge({
      name: 'recsys_retrain_running',
      help: '1 while a triggered retrain runs',
      registers: [registry],
    }),
  };
}

export function mountRetrainTrigger(
  app: TemplatedApp,
  options: RetrainTriggerOptions,
): RetrainTrigger {
  const log = options.log.child({ component: 'retrain-trigger' });
  const watched = new Set(options.alertNames ?? ['RecsysOnlineCtrLow']);
  const maxBodyBytes = options.maxBodyBytes ?? 256 * 1024;
  const now = options.now ?? Date.now;
  const expected = options.token ? Buffer.from(`Bearer ${options.token}`) : null;

  const { outcome, runs, runningGauge } = retrainMetrics(options.metrics);

  let current: { id: string; done: Promise<void> } | null = null;
  let lastStartMs = -Infinity;

  const reply = (
    res: HttpResponse,
    state: { aborted: boolean },
    status: number,
    body: unknown,
  ): void => sendJson(res, status, body, state);
  const fail = (
    res: HttpResponse,
    state: { aborted: boolean },
    kind: HttpErrorKind,
    message: string,
    headers: Record<string, string> = {},
  ): void => sendError(res, kind, message, state, {}, headers);

  const start = (alerts: string[]): string => {
    const id = randomUUID();
    lastStartMs = now();
    runningGauge.set(1);
    log.info({ runId: id, alerts }, 'retrain triggered');
    const t0 = Date.now();
    const done = Promise.resolve()
      .then(() => options.onTrigger())
      .then(
        () => {
          runs.labels('succeeded').inc();
          log.info({ runId: id, seconds: (Date.now() - t0) / 1000 }, 'retrain finished');
        },
        (err: unknown) => {
          runs.labels('failed').inc();
          log.error({ runId: id, err }, 'retrain failed');
        },
      )
      .finally(() => {
        current = null;
        runningGauge.set(0);
      });
    current = { id, done };
    return id;
  };

  app.post(RETRAIN_PATH, (res, req) => {
    // Headers must be read before the handler returns (uWS frees the request after).
    const authorization = req.getHeader('authorization');
    const contentType = req.getHeader('content-type');
    const state = { aborted: false };
    if (expected) {
      const given = Buffer.from(authorization);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        outcome.unauthorized.inc();
        res.onAborted(() => {
          state.aborted = true;
        });
        fail(res, state, HTTP_ERRORS.retrainUnauthorized, 'missing or wrong bearer token');
        return;
      }
    }
    if (!/^application\/json\b/i.test(contentType)) {
      outcome.invalid.inc();
      res.onAborted(() => {
        state.aborted = true;
      });
      fail(
        res,
        state,
        HTTP_ERRORS.unsupportedMediaType,
        `content-type must be application/json, got "${contentType}"`,
      );
      return;
    }
    readBody(
      res,
      req,
      maxBodyBytes,
      (body, bodyState) => {
        const payload = parseAlertmanagerPayload(body);
        if (typeof payload === 'string') {
          outcome.invalid.inc();
          fail(res, bodyState, HTTP_ERRORS.retrainBadPayload, payload);
          return;
        }
        const firing = [
          ...new Set(
            payload.alerts
              .filter((a) => a.status === 'firing' && watched.has(a.labels.alertname ?? ''))
              .map((a) => a.labels.alertname as string),
          ),
        ];
        if (firing.length === 0) {
          outcome.ignored.inc();
          reply(res, bodyState, 200, {
            status: 'ignored',
            reason: `no firing alert among ${[...watched].join(', ')}`,
          });
          return;
        }
        if (current) {
          outcome.alreadyRunning.inc();
          reply(res, bodyState, 202, { status: 'already_running', runId: current.id });
          return;
        }
        const waitMs = lastStartMs + options.minIntervalMs - now();
        if (waitMs > 0) {
          outcome.rateLimited.inc();
          fail(
            res,
            bodyState,
            HTTP_ERRORS.retrainRateLimited,
            `the last retrain started less than ${options.minIntervalMs} ms ago; next one possible in ${waitMs} ms`,
            { 'retry-after': String(Math.ceil(waitMs / 1000)) },
          );
          return;
        }
        outcome.accepted.inc();
        const runId = start(firing);
        reply(res, bodyState, 202, { status: 'accepted', runId, alerts: firing });
      },
      () => outcome.invalid.inc(),
    );
  });

  return {
    running: () => current?.id ?? null,
    idle: async () => {
      while (current) await current.done;
    },
  };
}
