/**
 * Ports: each process kind has its own default (8080 serving, 8090 stream, 8095 batch),
 * RECSYS_HTTP_PORT overrides it for one process, two kinds configured on one port fail at start,
 * and a uWS server binds its port exclusively unless it shares it on purpose (serving workers):
 * a second exclusive server on a taken port fails with PortInUseError naming the port and its
 * variable, while a second process shares a shared one.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import {
  bindFailure,
  ConfigError,
  createHttpServer,
  createLogger,
  listenPort,
  loadConfig,
  PortInUseError,
  Registry,
  type HttpServer,
} from '../../../core/index.js';

const run = promisify(execFile);
const log = createLogger('silent', 'test');
const server = (port: number, sharedPort: boolean, portVariable?: string): HttpServer =>
  createHttpServer({
    host: '127.0.0.1',
    port,
    sharedPort,
    ...(portVariable ? { portVariable } : {}),
    log,
    metrics: new Registry(),
    readiness: async () => ({ ok: true, checks: { self: { ok: true, ms: 0 } } }),
  });

describe('ports', () => {
  it('gives each process kind its own default, and RECSYS_HTTP_PORT overrides it', () => {
    const config = loadConfig({ RECSYS_ENV: 'development' });
    assert.deepEqual(listenPort(config, 'serving'), {
      port: 8080,
      variable: 'RECSYS_SERVING_PORT',
    });
    assert.deepEqual(listenPort(config, 'stream'), { port: 8090, variable: 'RECSYS_STREAM_PORT' });
    assert.deepEqual(listenPort(config, 'batch'), { port: 8095, variable: 'RECSYS_BATCH_PORT' });
    const one = loadConfig({ RECSYS_ENV: 'development', RECSYS_HTTP_PORT: '9999' });
    assert.deepEqual(listenPort(one, 'batch'), { port: 9999, variable: 'RECSYS_HTTP_PORT' });
    assert.throws(
      () => loadConfig({ RECSYS_ENV: 'development', RECSYS_BATCH_PORT: '8090' }),
      (err: unknown) => err instanceof ConfigError && err.variable === 'RECSYS_BATCH_PORT',
    );
  });

  it('a second exclusive server on a taken port fails, naming the port and variable', async () => {
    const first = server(0, false);
    const port = await first.listen();
    try {
      const second = server(port, false, 'RECSYS_STREAM_PORT');
      await assert.rejects(second.listen(), (err: unknown) => {
        assert.ok(err instanceof PortInUseError);
        assert.equal(err.code, 'RECSYS_PORT_IN_USE');
        assert.equal(err.port, port);
        assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port} \\(RECSYS_STREAM_PORT\\)`));
        return true;
      });
      // Nor may a shared server join an exclusive one.
      await assert.rejects(server(port, true).listen(), PortInUseError);
    } finally {
      first.close();
    }
  });

  it('processes that share the port on purpose both listen (serving workers)', async () => {
    // A named port: uSockets sets SO_REUSEPORT only when a port is given, not for port 0.
    const free = await bindFailure('127.0.0.1', 0);
    assert.equal(free, null);
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port: p } = probe.address() as AddressInfo;
        probe.close(() => resolve(p));
      });
    });
    const first = server(port, true);
    assert.equal(await first.listen(), port);
    try {
      // Another process, as a second worker is (within one process uSockets refuses the bind).
      const core = join(process.cwd(), 'dist', 'core', 'index.js');
      const script = `
        const { createHttpServer, createLogger, Registry } = await import(${JSON.stringify(core)});
        const s = createHttpServer({ host: '127.0.0.1', port: ${port}, sharedPort: true,
          log: createLogger('silent', 't'), metrics: new Registry(),
          readiness: async () => ({ ok: true, checks: {} }) });
        console.log('bound', await s.listen()); s.close(); process.exit(0);`;
      const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script]);
      assert.match(stdout, new RegExp(`bound ${port}`));
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.equal(res.status, 200);
    } finally {
      first.close();
    }
  });

  it('exports each readiness check as recsys_readiness_check on /metrics', async () => {
    const s = server(0, false);
    const port = await s.listen();
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(text, /recsys_readiness_check\{check="self"\} 1/);
    } finally {
      s.close();
    }
  });
});
