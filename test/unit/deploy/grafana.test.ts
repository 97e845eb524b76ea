/**
 * deploy/grafana: the dashboards are Grafana JSON whose every panel queries the provisioned
 * Prometheus datasource by uid with at least one PromQL target, panel ids are unique per
 * dashboard, the provisioning files parse, and together the panels cover what operators watch
 * (ingest and DLQ, lag and record age, freshness, feed rate/latency/shedding, live sockets and
 * pushes, model version and online quality, Redis memory, Kafka and Elasticsearch health).
 * That every expression parses and returns data is test/integration/deploy/dashboards.test.ts.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';

const dir = join(process.cwd(), 'deploy', 'grafana');

interface Panel {
  id: number;
  title: string;
  datasource?: { uid?: string };
  targets?: { expr?: string; datasource?: { uid?: string } }[];
}

describe('deploy/grafana', () => {
  const datasources = parse(
    readFileSync(join(dir, 'provisioning', 'datasources', 'prometheus.yml'), 'utf8'),
  ) as { datasources: { uid: string; type: string }[] };
  const uid = datasources.datasources[0]?.uid;

  test('provisioning: a Prometheus datasource and a file provider', () => {
    assert.equal(datasources.datasources[0]?.type, 'prometheus');
    assert.ok(uid);
    const providers = parse(
      readFileSync(join(dir, 'provisioning', 'dashboards', 'recsys.yml'), 'utf8'),
    ) as { providers: { type: string; options: { path: string } }[] };
    assert.equal(providers.providers[0]?.type, 'file');
  });

  test('every panel queries the provisioned datasource; the panels cover what operators watch', () => {
    const files = readdirSync(join(dir, 'dashboards')).filter((f) => f.endsWith('.json'));
    assert.ok(files.length >= 2);
    const exprs: string[] = [];
    for (const file of files) {
      const doc = JSON.parse(readFileSync(join(dir, 'dashboards', file), 'utf8')) as {
        uid: string;
        title: string;
        panels: Panel[];
      };
      assert.ok(doc.uid && doc.title, `${file}: uid and title`);
      const ids = doc.panels.map((p) => p.id);
      assert.equal(new Set(ids).size, ids.length, `${file}: unique panel ids`);
      for (const p of doc.panels) {
        assert.equal(p.datasource?.uid, uid, `${file} "${p.title}": datasource`);
        assert.ok(p.targets && p.targets.length > 0, `${file} "${p.title}": targets`);
        for (const t of p.targets) {
          assert.ok(t.expr && t.expr.length > 0, `${file} "${p.title}": expr`);
          assert.equal(t.datasource?.uid, uid);
          exprs.push(t.expr);
        }
      }
    }
    const all = exprs.join('\n');
    for (const metric of [
      'recsys_ingest_events_total',
      'recsys_ingest_dlq_total',
      'recsys_consumer_lag_messages',
      'recsys_consumer_record_age_seconds_bucket',
      'recsys_http_request_seconds_bucket',
      'recsys_feed_shed_total',
      'recsys_ws_open_sockets',
      'recsys_live_push_seconds_bucket',
      'recsys_model_info',
      'recsys:online_ctr:ratio30m',
      'recsys:online_hit_rate:ratio30m',
      'recsys_redis_used_memory_bytes',
      'recsys_readiness_check{check=~"(.+[.])?kafka"}',
      'recsys_readiness_check{check=~"(.+[.])?elasticsearch"}',
    ]) {
      assert.ok(all.includes(metric), `a panel shows ${metric}`);
    }
  });
});
