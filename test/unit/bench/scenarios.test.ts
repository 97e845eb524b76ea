/**
 * deploy/k6/scenarios.json is the one place load scenarios live: it loads with every field a
 * number, the k6 scripts take their rates and thresholds from it (not from literals), and
 * bench:serve reads the same file.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadScenarios } from '../../../bench/scenarios.js';

const root = process.cwd();

describe('load scenarios', () => {
  test('load, and the feed target sits inside the benchmarked rates', () => {
    const s = loadScenarios(root);
    assert.ok(s.feed.rates.includes(s.feed.targets.atRate));
    assert.ok(s.feed.k6Rate <= s.feed.targets.atRate);
  });

  test('a missing number fails with its path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'scenarios-'));
    try {
      const broken = JSON.parse(readFileSync(join(root, 'deploy/k6/scenarios.json'), 'utf8')) as {
        live: { targets: Record<string, unknown> };
      };
      broken.live.targets.pushP99Ms = '100';
      mkdirSync(join(dir, 'deploy', 'k6'), { recursive: true });
      writeFileSync(join(dir, 'deploy', 'k6', 'scenarios.json'), JSON.stringify(broken));
      assert.throws(() => loadScenarios(dir), /live\.targets\.pushP99Ms/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the k6 scripts and bench:serve take their numbers from it', () => {
    const read = (f: string): string => readFileSync(join(root, f), 'utf8');
    assert.match(read('deploy/k6/common.ts'), /open\('\.\/scenarios\.json'\)/);
    assert.match(read('deploy/k6/feed.ts'), /feed\.targets\.p99Ms/);
    assert.match(read('deploy/k6/live.ts'), /from 'k6\/websockets'/);
    assert.match(read('deploy/k6/live.ts'), /live\.targets\.eventToFrameP99Ms/);
    assert.match(read('deploy/k6/ingest.ts'), /ingest\.targets\.p99Ms/);
    assert.match(read('bench/serve.ts'), /loadScenarios\(/);
  });
});
