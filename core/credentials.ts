/**
 * The credential settings of `loadConfig` (`config.ts`): ingest's service tokens, the rule for
 * the bridge's MQTT client id, and the secrets a process refuses to run with outside
 * development. A value anyone can read in this repository (a secret variable's documented
 * development default) or that is plainly a placeholder (`change-me...`, what example env files
 * ship) is no secret: unless `RECSYS_ENV=development`, `loadConfig` calls
 * {@link refusePublishedSecrets} and a process started with one stops at once with
 * `RECSYS_CONFIG_PUBLISHED_SECRET`, naming the variable. `deploy/local` generates per-machine
 * values (`.local/secrets/`) and passes them instead.
 *
 * @example
 *   refusePublishedSecrets({ RECSYS_JWT_SECRET: [config.serving.jwtSecret] }); // throws ConfigError
 */
import type { Reader } from './config-reader.js';
import { VARIABLES } from './config-variables.js';
import { ConfigError } from './errors.js';

/** Who may post events and how live sockets may carry tokens. */
export interface AuthConfig {
  /** Service credentials of `POST /v1/events` (bearer tokens; several while rotating). */
  ingestTokens: string[];
  /** Whether the live socket accepts `?token=` (off: the token stays out of URLs and logs). */
  liveQueryToken: boolean;
}

/** The variables that hold secrets the processes read (a list variable: each of its items). */
export const SECRET_VARIABLES = [
  'RECSYS_JWT_SECRET',
  'RECSYS_MQTT_PASSWORD',
  'RECSYS_KAFKA_PASSWORD',
  'RECSYS_RETRAIN_TOKEN',
  'RECSYS_INGEST_TOKENS',
] as const;

export type SecretVariable = (typeof SECRET_VARIABLES)[number];

const PUBLISHED_DEFAULTS: ReadonlySet<string> = new Set(
  VARIABLES.filter((v) => (SECRET_VARIABLES as readonly string[]).includes(v.name))
    .map((v) => v.default)
    .filter(Boolean),
);

/** Whether `value` is published: a secret variable's default, or a change-me placeholder. */
export function isPublishedSecret(value: string): boolean {
  return PUBLISHED_DEFAULTS.has(value) || /^change[-_ ]?me/i.test(value.trim());
}

/**
 * Throws a {@link ConfigError} (`RECSYS_CONFIG_PUBLISHED_SECRET`) naming the first variable
 * that holds a published value. Empty values pass: whether a secret is required is its user's
 * rule (`--serve` requires the retrain token; HTTP ingest works without service tokens).
 */
export function refusePublishedSecrets(
  values: Readonly<Partial<Record<SecretVariable, readonly string[]>>>,
): void {
  for (const name of SECRET_VARIABLES) {
    if (!(values[name] ?? []).some((v) => v !== '' && isPublishedSecret(v))) continue;
    throw new ConfigError(
      name,
      'holds a published value (the development default or a change-me placeholder), which ' +
        'is no secret: set a random one of your own (deploy/local generates them in ' +
        '.local/secrets/), or RECSYS_ENV=development on a development machine',
      'RECSYS_CONFIG_PUBLISHED_SECRET',
    );
  }
}

/**
 * The bridge's MQTT client id must hold a `/`. On the device listener a client's id is its
 * username, a userId, which never holds one (it is a topic level): so no device account can
 * connect with the bridge's id and take or discard its session.
 */
export function bridgeClientId(id: string): string {
  if (!id.includes('/')) {
    throw new ConfigError(
      'RECSYS_MQTT_CLIENT_ID',
      `"${id}" holds no "/", so a device whose userId equals it could take the bridge's session`,
    );
  }
  return id;
}

/** RECSYS_ENV: `development` accepts the published secrets, `production` refuses them. */
export function environmentOf(r: Reader): 'production' | 'development' {
  const environment = r.str('RECSYS_ENV');
  if (environment !== 'production' && environment !== 'development') {
    throw new ConfigError('RECSYS_ENV', `expected production or development, got "${environment}"`);
  }
  return environment;
}

/** Ingest's service tokens and the live socket's `?token=` flag. */
export function authSettings(r: Reader): { auth: AuthConfig } {
  const ingestTokens = r
    .str('RECSYS_INGEST_TOKENS')
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  for (const t of ingestTokens) {
    if (t.length < 24 || /\s/.test(t)) {
      throw new ConfigError('RECSYS_INGEST_TOKENS', 'each token needs 24+ non-space characters');
    }
  }
  return { auth: { ingestTokens, liveQueryToken: r.flag('RECSYS_LIVE_QUERY_AUTH') } };
}
