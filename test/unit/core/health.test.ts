/** Readiness reports: a failing optional check leaves the process ready, named degraded. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkHealth } from '../../../core/health.js';

describe('checkHealth with optional checks', () => {
  it('stays ok when only an optional check fails, and names it degraded', async () => {
    const fail = (): never => {
      throw new Error('down');
    };
    const report = await checkHealth({ redis: () => undefined, kafka: fail }, 1000, ['kafka']);
    assert.equal(report.ok, true);
    assert.deepEqual(report.degraded, ['kafka']);
    assert.equal(report.checks.kafka?.ok, false);
    const required = await checkHealth({ redis: fail, kafka: fail }, 1000, ['kafka']);
    assert.equal(required.ok, false);
    const healthy = await checkHealth({ redis: () => undefined }, 1000, ['kafka']);
    assert.equal(healthy.degraded, undefined);
  });
});
