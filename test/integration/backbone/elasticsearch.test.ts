/**
 * The project's Elasticsearch client against curl: a document the client indexes is found by the
 * client's query and by a plain HTTP search, with the same source.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createElastic, elasticHealth } from '../../../stream/elastic.js';
import { config, esCurlAuth, requireServices, run, uniq } from '../harness.js';

interface Doc {
  '@timestamp': string;
  user: { id: string };
  event: { action: string };
  item: string;
  price: number;
}

describe('elasticsearch', () => {
  test(
    'a document indexed by the client is found by the client and by curl',
    { timeout: 60_000 },
    async (t) => {
      if (!(await requireServices(t, 'elasticsearch'))) return;
      const es = createElastic(config.elasticsearch);
      const index = uniq('test-backbone');
      // A token no other document has, so a hit can only be ours.
      const item = uniq('item').replaceAll('-', '');
      const doc: Doc = {
        '@timestamp': new Date().toISOString(),
        user: { id: 'u-alice' },
        event: { action: 'click' },
        item,
        price: 19.99,
      };
      try {
        await es.indices.create({
          index,
          settings: { number_of_shards: 1, number_of_replicas: 0 },
        });
        const indexed = await es.index({ index, id: 'e-1', document: doc, refresh: 'wait_for' });
        assert.equal(indexed.result, 'created');

        const found = await es.search<Doc>({ index, query: { match: { item } } });
        assert.equal(found.hits.hits.length, 1);
        assert.equal(found.hits.hits[0]?._id, 'e-1');
        assert.deepEqual(found.hits.hits[0]?._source, doc);
        const none = await es.search<Doc>({ index, query: { match: { item: 'nosuchitem' } } });
        assert.equal(none.hits.hits.length, 0);

        const res = await run('curl', [
          '-s',
          '-f',
          '--max-time',
          '10',
          ...esCurlAuth(),
          `${config.elasticsearch.url}/${index}/_search?q=item:${item}`,
        ]);
        assert.equal(res.code, 0, `curl exited ${res.code}: ${res.stderr}`);
        const body = JSON.parse(res.stdout) as {
          hits: {
            total: { value: number };
            hits: Array<{ _index: string; _id: string; _source: unknown }>;
          };
        };
        assert.equal(body.hits.total.value, 1);
        assert.equal(body.hits.hits[0]?._index, index);
        assert.equal(body.hits.hits[0]?._id, 'e-1');
        assert.deepEqual(body.hits.hits[0]?._source, doc);
      } finally {
        await es.indices.delete({ index }, { ignore: [404] });
        await es.close();
      }
    },
  );

  test('elasticHealth passes against the running cluster', { timeout: 30_000 }, async (t) => {
    if (!(await requireServices(t, 'elasticsearch'))) return;
    const es = createElastic(config.elasticsearch);
    try {
      await elasticHealth(es, 2000);
      // And it does fail when the cluster cannot answer: nothing listens on port 1.
      const dead = createElastic({ url: 'http://127.0.0.1:1', apiKey: '' });
      try {
        await assert.rejects(
          elasticHealth(dead, 1000),
          /^DependencyUnavailableError: elasticsearch: /,
        );
      } finally {
        await dead.close();
      }
    } finally {
      await es.close();
    }
  });
});
