/**
 * The alert rules' unit tests (`promtool test rules`), and Prometheus's and Alertmanager's own
 * checks of the shipped configuration. promtool and amtool come with the Debian packages that
 * deploy/local installs (`npm test` runs `cli.js up` first); under CI=true a missing tool fails
 * the test, elsewhere it is skipped with the install command.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';

const dir = join(process.cwd(), 'deploy', 'prometheus');

function tool(t: TestContext, name: string, pkg: string): boolean {
  if (spawnSync(name, ['--version'], { stdio: 'ignore' }).status === 0) return true;
  const message = `${name} is not installed (apt-get install ${pkg}, or npm run stack -- up)`;
  if (process.env.CI === 'true') assert.fail(message);
  t.skip(message);
  return false;
}

function run(cmd: string, args: string[]): { status: number | null; output: string } {
  const res = spawnSync(cmd, args, { cwd: dir, encoding: 'utf8' });
  return { status: res.status, output: `${res.stdout}\n${res.stderr}` };
}

describe('promtool and amtool', () => {
  test('the alert rules pass their unit tests', (t) => {
    if (!tool(t, 'promtool', 'prometheus')) return;
    const res = run('promtool', ['test', 'rules', 'tests/recsys.rules.test.yml']);
    assert.equal(res.status, 0, res.output);
    assert.match(res.output, /SUCCESS/);
  });

  test('a rule test expecting silence where the bridge is gone fails (the runner can fail)', (t) => {
    if (!tool(t, 'promtool', 'prometheus')) return;
    const file = join(mkdtempSync(join(tmpdir(), 'promtool-')), 'wrong.test.yml');
    writeFileSync(
      file,
      [
        `rule_files: ['${join(dir, 'rules', 'recsys.rules.yml')}']`,
        'evaluation_interval: 1m',
        'tests:',
        '  - interval: 1m',
        '    input_series: []',
        '    alert_rule_test:',
        '      - { eval_time: 10m, alertname: RecsysIngestBridgeAbsent, exp_alerts: [] }',
        '',
      ].join('\n'),
    );
    const res = run('promtool', ['test', 'rules', file]);
    rmSync(dirname(file), { recursive: true, force: true });
    assert.notEqual(res.status, 0, res.output);
    assert.match(res.output, /RecsysIngestBridgeAbsent/);
  });

  test('prometheus.yml passes promtool check config', (t) => {
    if (!tool(t, 'promtool', 'prometheus')) return;
    const res = run('promtool', ['check', 'config', 'prometheus.yml']);
    assert.equal(res.status, 0, res.output);
  });

  test('alertmanager.yml passes amtool check-config', (t) => {
    if (!tool(t, 'amtool', 'prometheus-alertmanager')) return;
    const res = run('amtool', ['check-config', 'alertmanager.yml']);
    assert.equal(res.status, 0, res.output);
  });
});
