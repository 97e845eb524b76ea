/**
 * RECSYS_ES_API_KEY. The local integ-test Elasticsearch has no security module, so a gate in
 * front of it plays a secured cluster: it answers 401 (as Elasticsearch does, with
 * `WWW-Authenticate: ApiKey`) to any request without `Authorization: ApiKey <the key>` and
 * passes the rest on. The project's client, deploy/local's readiness probe and curl with the
 * tests' header get through with the key and are refused without it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../../../core/config.js';
import { createElastic, elasticHealth } from '../../../stream/elastic.js';
import { SERVICES } from '../../../deploy/local/stack.js';
import type { StackContext } from '../../../deploy/local/service-def.js';
import { config, esCurlAuth, log, requireServices, run, uniq } from '../harness.js';

/** An id:secret pair in the encoded form Elasticsearch hands out (base64 of `id:key`). */
const API_KEY = Buffer.from(`${uniq('key')}:${randomBytes(16).toString('hex')}`).toString('base64');

const HOP_BY_HOP = new Set(['connection', 'content-length', 'transfer-encoding', 'keep-alive']);

/** The gate: 401 without the key, otherwise the request passed to `target` as it came. */
function gate(target: string, seen: { allowed: number; refused: number }): Server {
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.headers.authorization !== `ApiKey ${API_KEY}`) {
        seen.refused++;
        res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'ApiKey' });
        res.end(
          JSON.stringify({
            error: { type: 'security_exception', reason: 'missing authentication credentials' },
            status: 401,
          }),
        );
        return;
      }
      seen.allowed++;
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (typeof v === 'string' && !HOP_BY_HOP.has(k) && k !== 'host') headers[k] = v;
      }
      const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
      fetch(`${target}${req.url}`, { method: req.method, headers, body }).then(
        async (up) => {
          const out: Record<string, string> = {};
          up.headers.forEach((v, k) => {
            if (!HOP_BY_HOP.has(k) && k !== 'content-encoding') out[k] = v;
          });
          res.writeHead(up.status, out);
          res.end(Buffer.from(await up.arrayBuffer()));
        },
        (err: Error) => {
          res.writeHead(502);
          res.end(err.message);
        },
      );
    });
  });
}

describe('elasticsearch with an API key (RECSYS_ES_API_KEY)', () => {
  const seen = { allowed: 0, refused: 0 };
  let server: Server;
  let withKey: Readonly<Config>;
  let withoutKey: Readonly<Config>;

  before(async () => {
    server = gate(config.elasticsearch.url, seen);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    withKey = loadConfig({ ...process.env, RECSYS_ES_URL: url, RECSYS_ES_API_KEY: API_KEY });
    withoutKey = loadConfig({ ...process.env, RECSYS_ES_URL: url, RECSYS_ES_API_KEY: '' });
  });

  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  test('the client indexes and searches with the key, and is refused without it', async (t) => {
    if (!(await requireServices(t, 'elasticsearch'))) return;
    const es = createElastic(withKey.elasticsearch);
    const anonymous = createElastic(withoutKey.elasticsearch);
    const index = uniq('test-apikey');
    try {
      await elasticHealth(es, 5000);
      await es.index({ index, id: 'd1', document: { item: 'x' }, refresh: 'wait_for' });
      const found = await es.search({ index, query: { match: { item: 'x' } } });
      assert.equal(found.hits.hits[0]?._id, 'd1');
      await assert.rejects(elasticHealth(anonymous, 5000), /^DependencyUnavailableError/);
      await assert.rejects(anonymous.search({ index }), (err: { statusCode?: number }) => {
        assert.equal(err.statusCode, 401);
        return true;
      });
    } finally {
      await es.indices.delete({ index }, { ignore: [404] });
      await es.close();
      await anonymous.close();
    }
    assert.ok(seen.allowed >= 4, `requests through the gate with the key: ${seen.allowed}`);
    assert.ok(seen.refused >= 2, `requests refused: ${seen.refused}`);
  });

  test("deploy/local's probe and curl send it too", async (t) => {
    if (!(await requireServices(t, 'elasticsearch'))) return;
    const probe = (cfg: Readonly<Config>) =>
      SERVICES.elasticsearch.probe({ config: cfg, log } as unknown as StackContext);
    assert.equal(await probe(withKey), true);
    assert.equal(await probe(withoutKey), false);
    const curl = (args: string[]) =>
      run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', ...args]);
    const url = `${withKey.elasticsearch.url}/_cluster/health`;
    assert.equal((await curl([...esCurlAuth(withKey), url])).stdout, '200');
    assert.equal((await curl([...esCurlAuth(withoutKey), url])).stdout, '401');
  });
});
