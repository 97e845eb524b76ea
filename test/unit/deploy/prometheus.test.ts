/**
 * deploy/prometheus: the files parse as YAML and carry what the retrain loop relies on — the
 * online-CTR recording rule, the RecsysOnlineCtrLow alert (with `for`, labels, annotations)
 * over metrics that rule defines, Prometheus loading the rule files and sending to
 * Alertmanager, and Alertmanager routing that alert to the trigger's webhook path. When
 * promtool / amtool are installed they check the files too.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { RETRAIN_PATH } from '../../../batch/retrain.js';

const dir = join(process.cwd(), 'deploy', 'prometheus');
const load = async (file: string): Promise<Record<string, unknown>> =>
  parse(await readFile(join(dir, file), 'utf8')) as Record<string, unknown>;

interface Rule {
  record?: string;
  alert?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function has(tool: string): boolean {
  return spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0;
}

describe('deploy/prometheus', () => {
  test('rules: online CTR recording rule and the RecsysOnlineCtrLow alert', async () => {
    const doc = (await load('rules/recsys.rules.yml')) as {
      groups: { name: string; rules: Rule[] }[];
    };
    assert.ok(Array.isArray(doc.groups) && doc.groups.length > 0);
    const rules = doc.groups.flatMap((g) => {
      assert.equal(typeof g.name, 'string');
      assert.ok(Array.isArray(g.rules) && g.rules.length > 0, `group ${g.name} has rules`);
      return g.rules;
    });
    for (const r of rules) {
      assert.ok((r.record === undefined) !== (r.alert === undefined), 'record xor alert');
      assert.equal(typeof r.expr, 'string');
      if (r.record) assert.match(r.record, /^[a-z_]+(:[a-z0-9_]+)+$/, 'level:metric:operations');
    }
    const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));
    const ctr = rules.find((r) => r.record === 'recsys:online_ctr:ratio30m');
    assert.ok(ctr, 'online CTR is recorded');
    assert.match(rules.map((r) => r.expr).join('\n'), /recsys_served_items_total/);
    assert.match(rules.map((r) => r.expr).join('\n'), /type="click"/);

    const alert = rules.find((r) => r.alert === 'RecsysOnlineCtrLow');
    assert.ok(alert);
    assert.match(alert.expr, /recsys:online_ctr:ratio30m < 0\.\d+/);
    for (const used of alert.expr.match(/recsys:[a-z0-9_:]+/g) ?? []) {
      assert.ok(recorded.has(used), `${used} is recorded`);
    }
    assert.equal(alert.for, '15m');
    assert.ok(alert.labels?.severity);
    assert.ok(alert.annotations?.summary && alert.annotations.description);
    if (has('promtool')) {
      const res = spawnSync('promtool', ['check', 'rules', join(dir, 'rules/recsys.rules.yml')]);
      assert.equal(res.status, 0, res.stderr.toString());
    }
  });

  test('prometheus.yml loads the rules, scrapes /metrics, alerts to Alertmanager', async () => {
    const doc = (await load('prometheus.yml')) as {
      rule_files: string[];
      alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
      scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[];
    };
    assert.ok(doc.rule_files.some((f) => f.startsWith('rules/')));
    assert.ok(doc.alerting.alertmanagers[0]?.static_configs[0]?.targets.length);
    const recsys = doc.scrape_configs.find((s) => s.job_name === 'recsys');
    assert.ok(recsys);
    const targets = recsys.static_configs.flatMap((s) => s.targets);
    assert.ok(targets.includes('127.0.0.1:8080'));
    for (const t of targets) assert.match(t, /^[\w.-]+:\d+$/);
    if (has('promtool')) {
      const res = spawnSync('promtool', ['check', 'config', join(dir, 'prometheus.yml')]);
      assert.equal(res.status, 0, res.stderr.toString());
    }
  });

  test('alertmanager.yml routes RecsysOnlineCtrLow to the retrain webhook', async () => {
    const doc = (await load('alertmanager.yml')) as {
      route: { receiver: string; routes: { receiver: string; matchers: string[] }[] };
      receivers: { name: string; webhook_configs?: { url: string }[] }[];
    };
    const names = new Set(doc.receivers.map((r) => r.name));
    assert.ok(names.has(doc.route.receiver));
    const route = doc.route.routes.find((r) =>
      r.matchers.some((m) => /alertname\s*=\s*"?RecsysOnlineCtrLow"?/.test(m)),
    );
    assert.ok(route, 'a route matches the alert');
    const receiver = doc.receivers.find((r) => r.name === route.receiver);
    const url = new URL(receiver?.webhook_configs?.[0]?.url ?? '');
    assert.equal(url.pathname, RETRAIN_PATH);
    assert.equal(url.host, '127.0.0.1:8080');
    if (has('amtool')) {
      const res = spawnSync('amtool', ['check-config', join(dir, 'alertmanager.yml')]);
      assert.equal(res.status, 0, res.stderr.toString());
    }
  });
});
