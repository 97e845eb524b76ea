import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON logs to stdout, one logger per process; children carry the component name. */
export function createLogger(level: string, name = 'recsys'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}
