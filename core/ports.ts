/**
 * Which port a process listens on, and the check that it is free. Each process kind has its own
 * default port (`RECSYS_SERVING_PORT`, `RECSYS_STREAM_PORT`, `RECSYS_BATCH_PORT`) so they can run
 * side by side and Prometheus finds each; `RECSYS_HTTP_PORT` overrides it for one process. A
 * process that finds its port taken stops with {@link PortInUseError}, which names the port and
 * the variable that set it. Only serving workers share a port, on purpose (SO_REUSEPORT).
 *
 * @example
 *   const { port, variable } = listenPort(config, 'stream'); // 8090, 'RECSYS_STREAM_PORT'
 *   await assertPortFree(config.http.host, port, variable);
 */
import { createServer } from 'node:net';
import type { Reader } from './config-reader.js';
import { ConfigError, RecsysError } from './errors.js';

/** The process kinds that listen, each on its own default port. */
export type ProcessKind = 'serving' | 'stream' | 'batch';

export interface HttpConfig {
  host: string;
  /** RECSYS_HTTP_PORT: this process's port whatever its kind, or null (the kind's port). */
  port: number | null;
  ports: Readonly<Record<ProcessKind, number>>;
  maxBodyBytes: number;
}

export const PORT_VARIABLES: Readonly<Record<ProcessKind, string>> = {
  serving: 'RECSYS_SERVING_PORT',
  stream: 'RECSYS_STREAM_PORT',
  batch: 'RECSYS_BATCH_PORT',
};

/** The port a process of `kind` listens on, and the variable that set it. */
export function listenPort(
  config: { readonly http: HttpConfig },
  kind: ProcessKind,
): { port: number; variable: string } {
  if (config.http.port !== null) return { port: config.http.port, variable: 'RECSYS_HTTP_PORT' };
  return { port: config.http.ports[kind], variable: PORT_VARIABLES[kind] };
}

/** A process could not listen on its HTTP port. */
export class PortInUseError extends RecsysError {
  readonly port: number;
  readonly variable: string;
  constructor(host: string, port: number, variable: string, reason: string) {
    super(
      'RECSYS_PORT_IN_USE',
      `cannot listen on ${host}:${port} (${variable}): ${reason}; stop that process or set ${variable} to a free port`,
    );
    this.port = port;
    this.variable = variable;
  }
}

/**
 * Why `host:port` cannot be bound right now (an errno code such as EADDRINUSE), or null when it
 * can. Binds without SO_REUSEPORT, so a port a uWS server holds (with or without it) counts as
 * taken.
 */
export function bindFailure(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve(null)));
  });
}

/** Throws {@link PortInUseError} unless `host:port` is free. Port 0 (any) always is. */
export async function assertPortFree(host: string, port: number, variable: string): Promise<void> {
  if (port === 0) return;
  const failure = await bindFailure(host, port);
  if (failure === null) return;
  throw new PortInUseError(
    host,
    port,
    variable,
    failure === 'EADDRINUSE' ? 'the port is in use by another process' : failure,
  );
}

/** Each process kind's port; two kinds on one port would refuse each other, so it fails here. */
export function kindPorts(r: Reader): Record<ProcessKind, number> {
  const ports = {} as Record<ProcessKind, number>;
  for (const [kind, variable] of Object.entries(PORT_VARIABLES) as [ProcessKind, string][]) {
    ports[kind] = r.int(variable, 1, 65535);
    const clash = Object.entries(ports).find(([k, p]) => k !== kind && p === ports[kind]);
    if (clash)
      throw new ConfigError(
        variable,
        `port ${ports[kind]} is also ${PORT_VARIABLES[clash[0] as ProcessKind]}`,
      );
  }
  return ports;
}
