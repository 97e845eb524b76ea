/**
 * An ingest process whose Kafka or schema registry is unreachable stays up: `/healthz` is 200,
 * `/readyz` is 503 and names the missing dependency, the process keeps retrying instead of
 * crashing, and `POST /v1/events` answers 503 with a JSON error.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { sleep } from '../../../core/retry.js';
import { requireServices } from '../harness.js';
import {
  bridgeSetup,
  Cleanup,
  freePort,
  validEvent,
  type BridgeProcess,
} from './bridge-process.js';

interface Readyz {
  status: string;
  checks: Record<string, { ok: boolean; error?: string }>;
}

const cleanup = new Cleanup();
after(() => cleanup.run());

async function getJson(url: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as unknown };
}

/** Polls until the HTTP server answers `/healthz` (the process is up). */
async function waitHealthy(bridge: BridgeProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    assert.ok(bridge.alive, `bridge exited:\n${bridge.output}`);
    try {
      const res = await getJson(`${bridge.baseUrl}/healthz`);
      assert.equal(res.status, 200);
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await sleep(200);
  }
}

/** Polls `/readyz` until it is 503 naming `dependency` as failing. */
async function waitNotReady(bridge: BridgeProcess, dependency: string): Promise<Readyz> {
  const deadline = Date.now() + 20_000;
  let last: { status: number; body: unknown } | null = null;
  for (;;) {
    last = await getJson(`${bridge.baseUrl}/readyz`);
    const body = last.body as Readyz;
    if (last.status === 503 && body.checks?.[dependency]?.ok === false) return body;
    assert.ok(Date.now() < deadline, `readyz never named ${dependency}: ${JSON.stringify(last)}`);
    await sleep(250);
  }
}

async function degraded(
  t: TestContext,
  dependency: 'kafka' | 'registry',
  overrides: Record<string, string>,
): Promise<void> {
  if (!(await requireServices(t, 'kafka', 'registry', 'mosquitto'))) return;
  const setup = await bridgeSetup(overrides);
  const bridge = cleanup.bridge(setup);
  await waitHealthy(bridge);

  const ready = await waitNotReady(bridge, dependency);
  assert.equal(ready.status, 'not ready');
  assert.match(ready.checks[dependency]?.error ?? '', new RegExp(dependency));
  // The dependency that is up is reported up: readiness names the culprit, not everything.
  const other = dependency === 'kafka' ? 'registry' : 'kafka';
  assert.equal(ready.checks[other]?.ok, true, `${other} reported down: ${JSON.stringify(ready)}`);

  // Still running after a while (it retries; it does not crash), still not ready.
  await sleep(5000);
  assert.ok(bridge.alive, `bridge exited:\n${bridge.output}`);
  const health = await getJson(`${bridge.baseUrl}/healthz`);
  assert.equal(health.status, 200);
  const again = await getJson(`${bridge.baseUrl}/readyz`);
  assert.equal(again.status, 503);
  assert.equal((again.body as Readyz).checks[dependency]?.ok, false);

  const res = await fetch(`${bridge.baseUrl}/v1/events`, {
    method: 'POST',
    headers: setup.postHeaders,
    body: JSON.stringify(validEvent('readiness-user')),
    signal: AbortSignal.timeout(20_000),
  });
  assert.equal(res.status, 503);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  const body = (await res.json()) as { error?: { code?: string; message?: string } };
  assert.equal(typeof body.error?.code, 'string', JSON.stringify(body));
  assert.equal(typeof body.error?.message, 'string', JSON.stringify(body));
  assert.ok(bridge.alive, `bridge exited:\n${bridge.output}`);
  await bridge.kill();
}

test(
  'Kafka unreachable: healthz 200, readyz 503 naming kafka, POST 503, no crash',
  { timeout: 90_000 },
  async (t) => {
    const port = await freePort();
    await degraded(t, 'kafka', { RECSYS_KAFKA_BROKERS: `127.0.0.1:${port}` });
  },
);

test(
  'registry unreachable: healthz 200, readyz 503 naming registry, POST 503, no crash',
  { timeout: 90_000 },
  async (t) => {
    const port = await freePort();
    await degraded(t, 'registry', {
      RECSYS_SCHEMA_REGISTRY_URL: `http://127.0.0.1:${port}/apis/ccompat/v7`,
    });
  },
);
