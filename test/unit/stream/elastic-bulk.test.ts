import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { errors } from '@elastic/elasticsearch';
import {
  BulkWriter,
  ElasticsearchRefusedError,
  elasticRetriable,
  type BulkItem,
} from '../../../stream/elastic-bulk.js';
import type { ElasticClient } from '../../../stream/elastic.js';

interface Call {
  operations: string[];
  options: Record<string, unknown>;
  /** Answers with one item status per document (or an error body). */
  answer: (statuses: Array<number | { status: number; type: string; reason: string }>) => void;
  fail: (err: Error) => void;
}

/** A stand-in for the client's `bulk`: records requests, answers when the test says. */
function fakeClient() {
  const calls: Call[] = [];
  let concurrent = 0;
  let maxConcurrent = 0;
  const client = {
    bulk(params: { operations: string[] }, options: Record<string, unknown>) {
      concurrent++;
      maxConcurrent = Math.max(maxConcurrent, concurrent);
      return new Promise((resolve, reject) => {
        calls.push({
          operations: params.operations,
          options,
          answer: (statuses) => {
            concurrent--;
            resolve({
              errors: statuses.some((s) => typeof s !== 'number' || s >= 300),
              items: statuses.map((s) =>
                typeof s === 'number'
                  ? { create: { status: s } }
                  : { create: { status: s.status, error: { type: s.type, reason: s.reason } } },
              ),
            });
          },
          fail: (err) => {
            concurrent--;
            reject(err);
          },
        });
      });
    },
  } as unknown as ElasticClient;
  return { client, calls, maxConcurrent: () => maxConcurrent };
}

const tick = () => new Promise((r) => setImmediate(r));
const item = (id: string, index = 'logs-recsys.events-t'): BulkItem => ({
  index,
  id,
  source: JSON.stringify({ n: id }),
});
const docsIn = (call: Call) => call.operations.length / 2;

function responseError(status: number): errors.ResponseError {
  return new errors.ResponseError({
    body: { error: { type: 'x_exception', reason: 'because' }, status },
    statusCode: status,
    headers: {},
    warnings: null,
    meta: {} as never,
  });
}

describe('BulkWriter', () => {
  it('sends create operations with the serialized source, and no client retries', async () => {
    const fake = fakeClient();
    const writer = new BulkWriter({ client: fake.client, maxDocs: 10, maxInFlight: 1 });
    const p = writer.write([item('a"1'), item('b', 'other')]);
    await tick();
    assert.equal(fake.calls.length, 1);
    const call = fake.calls[0] as Call;
    assert.deepEqual(call.operations, [
      JSON.stringify({ create: { _index: 'logs-recsys.events-t', _id: 'a"1' } }),
      JSON.stringify({ n: 'a"1' }),
      JSON.stringify({ create: { _index: 'other', _id: 'b' } }),
      JSON.stringify({ n: 'b' }),
    ]);
    assert.equal(call.options.maxRetries, 0);
    call.answer([201, 201]);
    assert.deepEqual(await p, [{ outcome: 'created' }, { outcome: 'created' }]);
  });

  it('gives each document its own outcome: created, duplicate, rejected, retry', async () => {
    const fake = fakeClient();
    const bulks: Array<[number, boolean]> = [];
    const writer = new BulkWriter({
      client: fake.client,
      maxDocs: 10,
      maxInFlight: 1,
      onBulk: (_s, docs, incomplete) => bulks.push([docs, incomplete]),
    });
    const p = writer.write(['a', 'b', 'c', 'd', 'e'].map((id) => item(id)));
    await tick();
    const parse = { status: 400, type: 'document_parsing_exception', reason: 'field [x]' };
    const busy = { status: 429, type: 'es_rejected_execution_exception', reason: 'queue full' };
    const down = { status: 503, type: 'unavailable_shards_exception', reason: 'primary' };
    fake.calls[0]?.answer([201, 409, parse, busy, down]);
    assert.deepEqual(await p, [
      { outcome: 'created' },
      { outcome: 'duplicate' },
      { outcome: 'rejected', ...parse },
      { outcome: 'retry', ...busy },
      { outcome: 'retry', ...down },
    ]);
    assert.deepEqual(bulks, [[5, true]]);
  });

  it('a bulk whose documents all landed is not counted as incomplete', async () => {
    const fake = fakeClient();
    const bulks: boolean[] = [];
    const writer = new BulkWriter({
      client: fake.client,
      maxDocs: 10,
      maxInFlight: 1,
      onBulk: (_s, _d, incomplete) => bulks.push(incomplete),
    });
    const p = writer.write([item('a'), item('b')]);
    await tick();
    fake.calls[0]?.answer([201, 409]);
    await p;
    assert.deepEqual(bulks, [false]);
  });

  it('rejects an _id Elasticsearch would refuse for the whole bulk, without sending it', async () => {
    const fake = fakeClient();
    const writer = new BulkWriter({ client: fake.client, maxDocs: 10, maxInFlight: 1 });
    const long = 'é'.repeat(257); // 514 bytes in UTF-8
    const p = writer.write([item(long), item('ok'), item('')]);
    await tick();
    assert.equal(fake.calls.length, 1);
    assert.equal(docsIn(fake.calls[0] as Call), 1, 'only the valid id went out');
    fake.calls[0]?.answer([201]);
    const [a, b, c] = await p;
    assert.equal(a?.outcome, 'rejected');
    assert.equal(b?.outcome, 'created');
    assert.equal(c?.outcome, 'rejected');
  });

  it('resolves at once when every item is refused locally', async () => {
    const fake = fakeClient();
    const writer = new BulkWriter({ client: fake.client, maxDocs: 10, maxInFlight: 1 });
    const [r] = await writer.write([item('x'.repeat(600))]);
    assert.equal(r?.outcome, 'rejected');
    assert.equal(fake.calls.length, 0);
  });

  it('a request that fails for the cluster marks every document retry', async () => {
    for (const err of [
      new errors.ConnectionError('ECONNREFUSED'),
      new errors.TimeoutError('timed out'),
      responseError(503),
      responseError(429),
      responseError(403),
    ]) {
      const fake = fakeClient();
      const writer = new BulkWriter({ client: fake.client, maxDocs: 10, maxInFlight: 1 });
      const p = writer.write([item('a'), item('b')]);
      await tick();
      fake.calls[0]?.fail(err);
      const results = await p;
      assert.ok(
        results.every((r) => r.outcome === 'retry'),
        `${err.name}: ${JSON.stringify(results)}`,
      );
    }
  });

  it('a request refused as malformed rejects the write with a non-retriable error', async () => {
    const fake = fakeClient();
    const writer = new BulkWriter({ client: fake.client, maxDocs: 10, maxInFlight: 1 });
    const p = writer.write([item('a')]);
    await tick();
    fake.calls[0]?.fail(responseError(400));
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof ElasticsearchRefusedError);
      assert.equal(err.status, 400);
      assert.equal(err.retriable, false);
      return true;
    });
  });

  it('keeps at most maxInFlight requests of at most maxDocs, gathering waiting writers', async () => {
    const fake = fakeClient();
    const writer = new BulkWriter({ client: fake.client, maxDocs: 4, maxInFlight: 2 });
    const writes = [0, 1, 2, 3, 4].map((w) =>
      writer.write([0, 1, 2].map((i) => item(`w${w}-${i}`))),
    );
    await tick();
    // A writer meeting a free slot goes out at once (low latency while quiet): two requests.
    assert.equal(fake.calls.length, 2);
    assert.deepEqual(fake.calls.map(docsIn), [3, 3]);
    fake.calls[0]?.answer([201, 201, 201]);
    await tick();
    // The freed slot takes what gathered meanwhile, up to maxDocs.
    assert.equal(fake.calls.length, 3);
    assert.equal(docsIn(fake.calls[2] as Call), 4);
    // Answer every request as it comes until all writers are done.
    const answered = new Set<Call>([fake.calls[0] as Call]);
    for (let open = fake.calls.filter((c) => !answered.has(c)); open.length > 0;) {
      for (const c of open) {
        answered.add(c);
        c.answer(new Array(docsIn(c)).fill(201));
      }
      await tick();
      open = fake.calls.filter((c) => !answered.has(c));
    }
    const results = await Promise.all(writes);
    assert.equal(fake.maxConcurrent(), 2);
    assert.ok(fake.calls.every((c) => docsIn(c) <= 4));
    assert.equal(
      fake.calls.reduce((n, c) => n + docsIn(c), 0),
      15,
      'every document sent exactly once',
    );
    assert.ok(results.flat().every((r) => r.outcome === 'created'));
  });

  it('a writer resolves only when all of its documents have an outcome', async () => {
    const fake = fakeClient();
    const writer = new BulkWriter({ client: fake.client, maxDocs: 2, maxInFlight: 1 });
    let done = false;
    const p = writer.write([item('a'), item('b'), item('c')]).then((r) => {
      done = true;
      return r;
    });
    await tick();
    fake.calls[0]?.answer([201, 201]);
    await tick();
    assert.equal(done, false, 'resolved before its third document was indexed');
    fake.calls[1]?.answer([409]);
    const results = await p;
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['created', 'created', 'duplicate'],
    );
  });
});

describe('elasticRetriable', () => {
  it('retries what the cluster caused, not what the request caused', () => {
    assert.equal(elasticRetriable(new errors.ConnectionError('down')), true);
    assert.equal(elasticRetriable(new errors.TimeoutError('slow')), true);
    for (const s of [401, 403, 404, 408, 429, 500, 502, 503]) {
      assert.equal(elasticRetriable(responseError(s)), true, String(s));
    }
    for (const s of [400, 413]) assert.equal(elasticRetriable(responseError(s)), false, String(s));
    assert.equal(elasticRetriable(new TypeError('bug')), false);
  });
});
