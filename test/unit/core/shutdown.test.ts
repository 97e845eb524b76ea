import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../../core/log.js';
import {
  ABANDONED,
  EXIT_CLEAN,
  EXIT_DEADLINE,
  EXIT_FAILED,
  onShutdown,
  type ShutdownBudget,
} from '../../../core/shutdown.js';

const log = createLogger('silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('onShutdown', () => {
  it('runs the steps in order and exits 0 when all finish', async () => {
    const order: string[] = [];
    const exits: number[] = [];
    const shutdown = onShutdown({
      log,
      timeoutMs: 1000,
      signals: [],
      exit: (code) => exits.push(code),
      steps: [
        {
          name: 'a',
          run: async () => {
            await sleep(10);
            order.push('a');
          },
        },
        { name: 'b', run: () => void order.push('b') },
      ],
    });
    assert.equal(shutdown.stopping, false);
    const first = shutdown.stop('test');
    assert.equal(shutdown.stopping, true);
    assert.equal(shutdown.stop('again'), first, 'once');
    assert.equal(await first, EXIT_CLEAN);
    assert.deepEqual(order, ['a', 'b']);
    assert.deepEqual(exits, [EXIT_CLEAN]);
  });

  it('exits 1 when a step fails, still running the later ones', async () => {
    const order: string[] = [];
    const shutdown = onShutdown({
      log,
      timeoutMs: 1000,
      signals: [],
      exit: () => undefined,
      steps: [
        {
          name: 'fails',
          run: () => {
            throw new Error('boom');
          },
        },
        { name: 'after', run: () => void order.push('after') },
      ],
    });
    assert.equal(await shutdown.stop('test'), EXIT_FAILED);
    assert.deepEqual(order, ['after']);
  });

  it('exits 124 at the deadline, aborting the budget of the step that hangs', async () => {
    let seen: ShutdownBudget | null = null;
    let abortedAt = 0;
    const t0 = performance.now();
    const shutdown = onShutdown({
      log,
      timeoutMs: 80,
      signals: [],
      exit: () => undefined,
      steps: [
        {
          name: 'hangs',
          run: (budget) => {
            seen = budget;
            budget.signal.addEventListener('abort', () => (abortedAt = performance.now() - t0));
            return new Promise(() => undefined);
          },
        },
        { name: 'never', run: () => assert.fail('no step after the deadline') },
      ],
    });
    assert.equal(await shutdown.stop('test'), EXIT_DEADLINE);
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 75 && elapsed < 500, `exited after ${elapsed} ms`);
    assert.ok(abortedAt >= 75, 'the step was told before the exit');
    assert.equal((seen as unknown as ShutdownBudget).remainingMs(), 0);
  });

  it('gives each step what is left of one overall budget', async () => {
    const left: number[] = [];
    const shutdown = onShutdown({
      log,
      timeoutMs: 1000,
      signals: [],
      exit: () => undefined,
      steps: [
        { name: 'slow', run: () => sleep(100) },
        { name: 'measures', run: (b) => void left.push(b.remainingMs()) },
      ],
    });
    await shutdown.stop('test');
    assert.ok((left[0] as number) <= 905 && (left[0] as number) > 600, `left ${left[0]}`);
  });

  it('exits 124 when a step hands its work back unfinished', async () => {
    const shutdown = onShutdown({
      log,
      timeoutMs: 1000,
      signals: [],
      exit: () => undefined,
      steps: [{ name: 'gives up', run: () => ABANDONED }],
    });
    assert.equal(await shutdown.stop('test'), EXIT_DEADLINE);
  });

  it('starts on its signal, and a second signal changes nothing', async () => {
    const exits: number[] = [];
    let runs = 0;
    let release: () => void = () => undefined;
    const done = new Promise<void>((r) => (release = r));
    onShutdown({
      log,
      timeoutMs: 1000,
      signals: ['SIGUSR2'],
      exit: (code) => {
        exits.push(code);
        release();
      },
      steps: [
        {
          name: 'counts',
          run: async () => {
            runs++;
            await sleep(20);
          },
        },
      ],
    });
    process.kill(process.pid, 'SIGUSR2');
    await sleep(5);
    process.kill(process.pid, 'SIGUSR2');
    await done;
    assert.equal(runs, 1);
    assert.deepEqual(exits, [EXIT_CLEAN]);
  });
});
