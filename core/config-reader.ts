/**
 * The typed readers `loadConfig` (`config.ts`) builds its sections with: each reads one
 * documented variable (`config-variables.ts`), falls back to its default and fails with the
 * variable's name when the value cannot be used.
 */
import { VARIABLES } from './config-variables.js';
import { ConfigError } from './errors.js';

export type Env = Readonly<Record<string, string | undefined>>;

const DEFAULTS: Readonly<Record<string, string>> = Object.fromEntries(
  VARIABLES.map((v) => [v.name, v.default]),
);

export type Reader = ReturnType<typeof reader>;

/** Typed readers over `env`, each falling back to the variable's documented default. */
export function reader(env: Env) {
  const str = (name: string): string => {
    const fallback = DEFAULTS[name];
    if (fallback === undefined) throw new Error(`undocumented variable ${name}`);
    const value = env[name];
    return value === undefined || value === '' ? fallback : value;
  };
  const int = (name: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const raw = str(name);
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ConfigError(name, `expected an integer in [${min}, ${max}], got "${raw}"`);
    }
    return n;
  };
  const num = (name: string, min: number, max: number): number => {
    const raw = str(name);
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new ConfigError(name, `expected a number in [${min}, ${max}], got "${raw}"`);
    }
    return n;
  };
  const url = (name: string, protocols: string[]): string => {
    const raw = str(name);
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw new ConfigError(name, `not a URL: "${raw}"`);
    }
    if (!protocols.includes(parsed.protocol)) {
      throw new ConfigError(name, `expected ${protocols.join(' or ')} URL, got "${raw}"`);
    }
    return raw.replace(/\/+$/, '');
  };
  const list = (name: string): string[] => {
    const items = str(name)
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    if (items.length === 0)
      throw new ConfigError(name, 'expected a non-empty comma-separated list');
    return items;
  };
  const flag = (name: string): boolean => {
    const raw = str(name);
    if (raw === '1' || raw === 'true') return true;
    if (raw === '0' || raw === 'false') return false;
    throw new ConfigError(name, `expected 1 or 0, got "${raw}"`);
  };
  const home = env.HOME ?? '/root';
  return { str, int, num, url, list, flag, home };
}

/** Freezes `value` and everything it holds (the config is read-only once loaded). */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
