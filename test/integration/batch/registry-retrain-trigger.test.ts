/**
 * `POST /v1/admin/retrain` on a real uWebSockets.js server, driven with curl and the payload
 * Alertmanager 0.2x sends (webhook version 4): a firing `RecsysOnlineCtrLow` starts one retrain
 * (202 + run id), triggers while it runs coalesce (202 already_running), a new one within
 * `minIntervalMs` is refused (429 + Retry-After), resolved or other alerts are ignored (200),
 * garbage is 400 in the JSON error format, oversized bodies 413, a wrong token 401, and the
 * counters on /metrics add up.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { mountRetrainTrigger, type RetrainTrigger } from '../../../batch/retrain.js';
import { createHttpServer, createMetricsRegistry, type HttpServer } from '../../../core/index.js';
import { log, run } from '../harness.js';

/** What Alertmanager posts (fields as in its notify/webhook package, version "4"). */
function alertmanagerPayload(
  status: 'firing' | 'resolved',
  alertname = 'RecsysOnlineCtrLow',
): string {
  return JSON.stringify({
    receiver: 'recsys-retrain',
    status,
    alerts: [
      {
        status,
        labels: { alertname, severity: 'warning', service: 'recsys' },
        annotations: {
          summary: 'Online CTR below threshold',
          description: 'CTR over 30m is 0.8%, below 2% for 15 minutes',
        },
        startsAt: '2026-11-25T10:00:00.000Z',
        endsAt: status === 'resolved' ? '2026-11-25T11:00:00.000Z' : '0001-01-01T00:00:00Z',
        generatorURL: 'http://127.0.0.1:9090/graph?g0.expr=recsys%3Aonline_ctr%3Aratio30m',
        fingerprint: 'c0ffee1234567890',
      },
    ],
    groupLabels: { alertname },
    commonLabels: { alertname, severity: 'warning', service: 'recsys' },
    commonAnnotations: { summary: 'Online CTR below threshold' },
    externalURL: 'http://127.0.0.1:9093',
    version: '4',
    groupKey: `{}:{alertname="${alertname}"}`,
    truncatedAlerts: 0,
  });
}

describe('retrain trigger: POST /v1/admin/retrain', () => {
  const metrics = createMetricsRegistry('test-retrain');
  let server: HttpServer;
  let base: string;
  let trigger: RetrainTrigger;
  let clock = 1_000_000;
  let started = 0;
  let release: () => void = () => undefined;

  before(async () => {
    server = createHttpServer({
      host: '127.0.0.1',
      port: 0,
      log,
      metrics,
      readiness: async () => ({ ok: true, checks: {} }),
    });
    trigger = mountRetrainTrigger(server.app, {
      // Each retrain runs until the test releases it.
      onTrigger: () => {
        started += 1;
        return new Promise<void>((resolve) => {
          release = resolve;
        });
      },
      log,
      metrics,
      token: 's3cret',
      minIntervalMs: 60_000,
      maxBodyBytes: 16 * 1024,
      now: () => clock,
    });
    base = `http://127.0.0.1:${await server.listen()}`;
  });
  after(async () => {
    release();
    await trigger.idle();
    server.close();
  });

  const curl = async (
    body: string,
    headers: string[] = ['content-type: application/json', 'authorization: Bearer s3cret'],
  ): Promise<{ status: number; json: Record<string, unknown>; headers: string }> => {
    const args = ['-s', '-i', '-X', 'POST', `${base}/v1/admin/retrain`, '--data-binary', '@-'];
    for (const h of headers) args.push('-H', h);
    const res = await run('curl', args, { input: body });
    assert.equal(res.code, 0, res.stderr);
    const [head = '', text = ''] = res.stdout.split(/\r\n\r\n/);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
    return { status, json: JSON.parse(text) as Record<string, unknown>, headers: head };
  };

  test('firing alert starts a retrain; repeats coalesce; then rate limit; then again', async () => {
    const first = await curl(alertmanagerPayload('firing'));
    assert.equal(first.status, 202, JSON.stringify(first.json));
    assert.equal(first.json.status, 'accepted');
    assert.match(String(first.json.runId), /^[0-9a-f-]{36}$/);
    assert.equal(trigger.running(), first.json.runId);
    assert.equal(started, 1);

    // Alertmanager re-sends while the retrain runs: coalesced into the running one.
    const again = await curl(alertmanagerPayload('firing'));
    assert.equal(again.status, 202);
    assert.deepEqual(again.json, { status: 'already_running', runId: first.json.runId });
    assert.equal(started, 1);

    release();
    await trigger.idle();
    assert.equal(trigger.running(), null);

    // Finished, but the last start is less than minIntervalMs ago.
    clock += 30_000;
    const limited = await curl(alertmanagerPayload('firing'));
    assert.equal(limited.status, 429);
    assert.equal((limited.json.error as { code: string }).code, 'RECSYS_RETRAIN_RATE_LIMITED');
    assert.match(limited.headers, /retry-after: 30/i);
    assert.equal(started, 1);

    clock += 30_001;
    const second = await curl(alertmanagerPayload('firing'));
    assert.equal(second.status, 202);
    assert.equal(second.json.status, 'accepted');
    assert.notEqual(second.json.runId, first.json.runId);
    assert.equal(started, 2);
    release();
    await trigger.idle();
  });

  test('resolved and unwatched alerts are acknowledged and ignored', async () => {
    clock += 120_000;
    const resolved = await curl(alertmanagerPayload('resolved'));
    assert.equal(resolved.status, 200);
    assert.equal(resolved.json.status, 'ignored');
    const other = await curl(alertmanagerPayload('firing', 'SomethingElse'));
    assert.equal(other.status, 200);
    assert.equal(other.json.status, 'ignored');
    assert.equal(trigger.running(), null);
  });

  test('garbage is 400 with the JSON error format; oversize 413; type 415; token 401', async () => {
    for (const [body, message] of [
      ['{not json', /not JSON/],
      ['[1,2]', /JSON object/],
      ['{"version":"3","status":"firing","alerts":[]}', /version must be "4"/],
      ['{"version":"4","status":"firing","alerts":{}}', /alerts must be an array/],
      ['{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{}}]}', /alertname/],
    ] as const) {
      const res = await curl(body);
      assert.equal(res.status, 400, body);
      const error = res.json.error as { code: string; message: string };
      assert.equal(error.code, 'RECSYS_RETRAIN_BAD_PAYLOAD');
      assert.match(error.message, message);
    }
    const big = await curl(JSON.stringify({ pad: 'x'.repeat(20_000) }));
    assert.equal(big.status, 413);
    assert.equal((big.json.error as { code: string }).code, 'RECSYS_PAYLOAD_TOO_LARGE');
    const type = await curl(alertmanagerPayload('firing'), [
      'content-type: text/plain',
      'authorization: Bearer s3cret',
    ]);
    assert.equal(type.status, 415);
    const noToken = await curl(alertmanagerPayload('firing'), ['content-type: application/json']);
    assert.equal(noToken.status, 401);
    const wrong = await curl(alertmanagerPayload('firing'), [
      'content-type: application/json',
      'authorization: Bearer s3creT',
    ]);
    assert.equal(wrong.status, 401);
    assert.equal(trigger.running(), null, 'none of these started a retrain');
  });

  test('counters on /metrics', async () => {
    const res = await run('curl', ['-sf', `${base}/metrics`]);
    const value = (outcome: string): number =>
      Number(
        new RegExp(`recsys_retrain_triggers_total\\{outcome="${outcome}"[^}]*\\} (\\d+)`).exec(
          res.stdout,
        )?.[1] ?? 'NaN',
      );
    assert.equal(value('accepted'), 2);
    assert.equal(value('already_running'), 1);
    assert.equal(value('rate_limited'), 1);
    assert.equal(value('ignored'), 2);
    assert.equal(value('invalid'), 7); // 5 bad payloads, 1 oversize, 1 content type
    assert.equal(value('unauthorized'), 2);
    assert.match(res.stdout, /recsys_retrain_runs_total\{result="succeeded"[^}]*\} 2/);
    assert.match(res.stdout, /recsys_retrain_running\{[^}]*\} 0/);
  });
});
