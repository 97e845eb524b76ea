/**
 * The indexer when Elasticsearch misbehaves, through an HTTP proxy in front of the real cluster
 * (the shared cluster must stay up): bulk items the cluster reports busy (429) are the only ones
 * sent again, and while Elasticsearch cannot be reached readiness names it, nothing is lost, and
 * indexing resumes on its own when it is back.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { startIndexer } from '../../../stream/roles/indexer.js';
import type { StreamRole } from '../../../core/index.js';
import { config as baseConfig, requireServices } from '../harness.js';
import { count, docsMetric, IndexerFixture, makeEvents, quiet, waitFor } from './support.js';

/**
 * Forwards to Elasticsearch. `down` drops every connection; `tamperBulks` makes the next bulk
 * responses report every other created item as 429 (Elasticsearch did index it). Records the
 * `_id`s of every bulk request.
 */
class FaultyElastic {
  mode: 'pass' | 'down' = 'pass';
  tamperBulks = 0;
  readonly injected = new Set<string>();
  readonly sent = new Map<string, number>();
  readonly server = createServer((req, res) => void this.#handle(req, res));

  constructor(readonly target: string) {}

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (this.mode === 'down') {
      req.socket.destroy();
      return;
    }
    const body = Buffer.concat(chunks);
    const bulk = new URL(req.url ?? '/', 'http://x').pathname.endsWith('/_bulk');
    const ids: string[] = [];
    if (bulk) {
      const lines = body.toString().split('\n');
      for (let i = 0; i < lines.length; i += 2) {
        if (!lines[i]) continue;
        const action = JSON.parse(lines[i] as string) as Record<string, { _id: string }>;
        const id = (Object.values(action)[0] as { _id: string })._id;
        ids.push(id);
        this.sent.set(id, (this.sent.get(id) ?? 0) + 1);
      }
    }
    const headers: Record<string, string> = {};
    for (const h of ['content-type', 'accept']) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const method = req.method ?? 'GET';
    let upstream: Response;
    try {
      upstream = await fetch(`${this.target}${req.url}`, {
        method,
        headers,
        body: method === 'GET' || method === 'HEAD' ? undefined : body,
      });
    } catch {
      req.socket.destroy();
      return;
    }
    let text = await upstream.text();
    if (bulk && this.tamperBulks > 0 && upstream.status === 200) {
      this.tamperBulks--;
      const parsed = JSON.parse(text) as {
        errors: boolean;
        items: Array<Record<string, { status: number; error?: object }>>;
      };
      parsed.items.forEach((item, i) => {
        const r = Object.values(item)[0] as { status: number; error?: object };
        if (i % 2 === 1 && r.status === 201) {
          r.status = 429;
          r.error = { type: 'es_rejected_execution_exception', reason: 'injected by the test' };
          this.injected.add(ids[i] as string);
          parsed.errors = true;
        }
      });
      text = JSON.stringify(parsed);
    }
    const out: Record<string, string> = { 'content-type': 'application/json' };
    for (const h of ['content-type', 'x-elastic-product']) {
      const v = upstream.headers.get(h);
      if (v) out[h] = v;
    }
    res.writeHead(upstream.status, out);
    res.end(text);
  }
}

describe('indexer: Elasticsearch failures', () => {
  const fx = new IndexerFixture();
  const { id, es, streams } = fx;
  const proxy = new FaultyElastic(baseConfig.elasticsearch.url);
  const metrics = new Registry();
  let indexer: StreamRole | null = null;
  let startError: Error | null = new Error('not started');
  const M = 400;

  before(async () => {
    try {
      await fx.setup();
      startError = null;
    } catch (err) {
      startError = err as Error;
    }
  });

  after(async () => {
    await indexer?.stop().catch(() => undefined);
    await proxy.close().catch(() => undefined);
    await fx.cleanup();
  });

  test(
    'only the documents the cluster reported busy are sent again',
    { timeout: 90_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka', 'registry', 'elasticsearch'))) return;
      assert.ifError(startError);
      await fx.sendEvents(makeEvents(id, M));
      const url = await proxy.listen();
      proxy.tamperBulks = 1;
      indexer = startIndexer({
        config: fx.configFor('g1', { RECSYS_ES_URL: url }),
        log: quiet,
        metrics,
      });
      await indexer.ready;
      assert.equal(
        await waitFor(
          () => count(es, streams.events),
          (n) => n >= M,
          60_000,
        ),
        M,
      );
      const injected = proxy.injected.size;
      assert.ok(injected > 0, 'no bulk response was tampered with');
      const duplicates = await waitFor(
        () => docsMetric(metrics, 'events', 'duplicate'),
        (n) => n >= injected,
        30_000,
      );
      // The resend met the documents Elasticsearch had in fact indexed: duplicates, not copies.
      assert.equal(duplicates, injected);
      assert.equal(await docsMetric(metrics, 'events', 'created'), M - injected);
      const resent = [...proxy.sent].filter(([, n]) => n > 1).map(([docId]) => docId);
      assert.deepEqual(resent.sort(), [...proxy.injected].sort(), 'resent = exactly the 429 items');
      assert.ok([...proxy.sent.values()].every((n) => n <= 2));
      const failures = await metrics.getSingleMetric('recsys_indexer_bulk_failures_total')?.get();
      assert.ok((failures?.values[0]?.value ?? 0) >= 1);
    },
  );

  test(
    'while Elasticsearch is away readiness names it, and nothing is lost',
    { timeout: 120_000 },
    async (t) => {
      if (!(await requireServices(t, 'kafka', 'registry', 'elasticsearch'))) return;
      assert.ifError(startError);
      assert.ok(indexer, 'indexer not started');
      const role = indexer;
      proxy.mode = 'down';
      await fx.sendEvents(makeEvents(id, M, M));
      const report = await waitFor(
        () => role.readiness(),
        (r) => !r.ok && r.checks.indexer?.ok === false,
        30_000,
        250,
      );
      assert.equal(report.ok, false);
      assert.equal(report.checks.elasticsearch?.ok, false, JSON.stringify(report));
      assert.equal(report.checks.kafka?.ok, true, JSON.stringify(report));
      assert.equal(report.checks.indexer?.ok, false, 'the consumer is retrying its chunk');
      assert.equal(await count(es, streams.events), M, 'nothing new while away');

      proxy.mode = 'pass';
      const t0 = performance.now();
      assert.equal(
        await waitFor(
          () => count(es, streams.events),
          (n) => n >= 2 * M,
          60_000,
        ),
        2 * M,
      );
      t.diagnostic(
        `caught up ${Math.round(performance.now() - t0)} ms after Elasticsearch returned`,
      );
      const healthy = await waitFor(
        () => role.readiness(),
        (r) => r.ok,
        30_000,
        250,
      );
      assert.equal(healthy.ok, true, JSON.stringify(healthy));
      assert.equal(await docsMetric(metrics, 'events', 'rejected'), 0);
    },
  );
});
