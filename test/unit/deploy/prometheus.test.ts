/**
 * deploy/prometheus: the files parse as YAML and carry what the stack relies on: the rules read
 * only metrics our processes emit (the online ones from the attribution role), every alert the
 * operator section names exists with labels and annotations, Prometheus finds every process kind
 * on its configured default port, and Alertmanager posts RecsysOnlineCtrLow to the batch
 * trigger's port with a bearer token. The local copies deploy/local writes keep all that.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { RETRAIN_PATH } from '../../../batch/retrain.js';
import { loadConfig } from '../../../core/config.js';
import {
  localAlertmanagerConfig,
  localPrometheusConfig,
  scrapeTargets,
} from '../../../deploy/local/monitoring.js';

const root = process.cwd();
const dir = join(root, 'deploy', 'prometheus');
const text = (file: string): string => readFileSync(join(dir, file), 'utf8');

interface Rule {
  record?: string;
  alert?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const rules = (
  parse(text('rules/recsys.rules.yml')) as { groups: { rules: Rule[] }[] }
).groups.flatMap((g) => g.rules);

/** Metric names the TypeScript sources register with prom-client. */
function emittedMetrics(): Set<string> {
  const names = new Set<string>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts')) {
        for (const m of readFileSync(path, 'utf8').matchAll(/name: '(recsys_[a-z0-9_]+)'/g)) {
          names.add(m[1] as string);
        }
      }
    }
  };
  for (const layer of ['core', 'stream', 'serving', 'batch']) walk(join(root, layer));
  return names;
}

describe('deploy/prometheus', () => {
  test('the rules read metrics our processes emit, and every alert is documented', () => {
    const emitted = emittedMetrics();
    const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));
    for (const r of rules) {
      assert.ok((r.record === undefined) !== (r.alert === undefined), 'record xor alert');
      if (r.record) assert.match(r.record, /^[a-z_]+(:[a-z0-9_]+)+$/, 'level:metric:operations');
      for (const used of r.expr.match(/\brecsys_[a-z0-9_]+/g) ?? []) {
        const base = used.replace(/_(bucket|count|sum)$/, '');
        assert.ok(emitted.has(used) || emitted.has(base), `${used} is emitted by no process`);
      }
      for (const used of r.expr.match(/\brecsys:[a-z0-9_:]+/g) ?? []) {
        assert.ok(recorded.has(used), `${used} is recorded`);
      }
      if (r.alert) {
        assert.ok(r.for, `${r.alert} has a for`);
        assert.ok(r.labels?.severity, `${r.alert} has a severity`);
        assert.ok(r.annotations?.summary && r.annotations.description, `${r.alert} annotations`);
      }
    }
    const alerts = rules.flatMap((r) => (r.alert ? [r.alert] : []));
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    for (const name of [
      'RecsysOnlineCtrLow',
      'RecsysOnlineHitRateLow',
      'RecsysConsumerLagGrowing',
      'RecsysDlqRate',
      'RecsysConsumerDeadLetters',
      'RecsysFeedP99High',
      'RecsysIngestBridgeAbsent',
      'RecsysNoModelLoaded',
    ]) {
      assert.ok(alerts.includes(name), `alert ${name} exists`);
      assert.ok(readme.includes(name), `the README says what ${name} means`);
    }
  });

  test('Prometheus loads the rules, finds every process kind, alerts to Alertmanager', () => {
    const doc = parse(text('prometheus.yml')) as {
      rule_files: string[];
      alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
      scrape_configs: { job_name: string; file_sd_configs?: { files: string[] }[] }[];
    };
    assert.ok(doc.rule_files.includes('rules/*.yml'));
    assert.deepEqual(doc.alerting.alertmanagers[0]?.static_configs[0]?.targets, ['127.0.0.1:9094']);
    const recsys = doc.scrape_configs.find((s) => s.job_name === 'recsys');
    assert.deepEqual(recsys?.file_sd_configs?.[0]?.files, ['targets/*.json']);
    // The shipped targets are the configured defaults, one port per kind.
    const defaults = scrapeTargets(loadConfig({ RECSYS_ENV: 'development' }));
    assert.deepEqual(
      JSON.parse(text('targets/recsys.json')),
      defaults.sort((a, b) => (a.targets[0] as string).localeCompare(b.targets[0] as string)),
    );
    const ports = defaults.map((t) => t.targets[0]);
    assert.equal(new Set(ports).size, 3, 'three process kinds on three ports');
  });

  test('Alertmanager posts RecsysOnlineCtrLow to the batch trigger with a bearer token', () => {
    const doc = parse(text('alertmanager.yml')) as {
      route: { receiver: string; routes: { receiver: string; matchers: string[] }[] };
      receivers: {
        name: string;
        webhook_configs?: {
          url: string;
          http_config?: { authorization?: { type?: string; credentials_file?: string } };
        }[];
      }[];
    };
    const names = new Set(doc.receivers.map((r) => r.name));
    assert.ok(names.has(doc.route.receiver));
    const route = doc.route.routes.find((r) =>
      r.matchers.some((m) => /alertname\s*=\s*"?RecsysOnlineCtrLow"?/.test(m)),
    );
    assert.ok(route, 'a route matches the alert');
    const webhook = doc.receivers.find((r) => r.name === route.receiver)?.webhook_configs?.[0];
    const url = new URL(webhook?.url ?? '');
    assert.equal(url.pathname, RETRAIN_PATH);
    assert.equal(Number(url.port), loadConfig({ RECSYS_ENV: 'development' }).http.ports.batch);
    assert.equal(webhook?.http_config?.authorization?.type, 'Bearer');
    assert.ok(webhook?.http_config?.authorization?.credentials_file);
  });

  test('the local copies point at this checkout, the configured ports and the token file', () => {
    const config = loadConfig({
      RECSYS_ENV: 'development',
      RECSYS_BATCH_PORT: '18095',
      RECSYS_PROMETHEUS_PORT: '19090',
      RECSYS_ALERTMANAGER_PORT: '19094',
    });
    const prom = parse(localPrometheusConfig(text('prometheus.yml'), '/ck', config)) as {
      global: { scrape_interval: string };
      rule_files: string[];
      alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
      scrape_configs: { job_name: string; static_configs?: { targets: string[] }[] }[];
    };
    assert.equal(prom.global.scrape_interval, '5s');
    const targets = prom.alerting.alertmanagers[0]?.static_configs[0]?.targets;
    assert.deepEqual(targets, ['127.0.0.1:19094']);
    const own = prom.scrape_configs
      .flatMap((c) => c.static_configs ?? [])
      .flatMap((c) => c.targets);
    assert.ok(own.includes('127.0.0.1:19090'), `Prometheus scrapes itself: ${own}`);
    assert.deepEqual(prom.rule_files, ['/ck/deploy/prometheus/rules/*.yml']);
    const am = localAlertmanagerConfig(text('alertmanager.yml'), config, '/t/token');
    assert.match(am, /url: http:\/\/127\.0\.0\.1:18095\/v1\/admin\/retrain/);
    assert.match(am, /credentials_file: \/t\/token/);
    assert.throws(
      () => localPrometheusConfig('global: {}', '/ck', config),
      /update monitoring\.ts/,
    );
  });
});
