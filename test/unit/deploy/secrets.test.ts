/** deploy/local's per-machine secrets: made once, kept private, the same on every read. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../../core/config.js';
import {
  LOCAL_SECRET_FILES,
  localIngestTokens,
  localSecret,
  secretPath,
  withLocalSecrets,
} from '../../../deploy/local/secrets.js';

describe('local secrets', () => {
  it('makes a secret once (mode 0600), returns it on every call, and one per checkout', async () => {
    const a = { localDir: await mkdtemp(join(tmpdir(), 'secrets-a-')) };
    const b = { localDir: await mkdtemp(join(tmpdir(), 'secrets-b-')) };
    try {
      const [first, again] = await Promise.all([
        localSecret(a, 'ingest-token'),
        localSecret(a, 'ingest-token'),
      ]);
      assert.equal(first, again);
      assert.equal(await localSecret(a, 'ingest-token'), first);
      assert.ok(first.length >= 40);
      assert.equal((await stat(secretPath(a, 'ingest-token'))).mode & 0o777, 0o600);
      assert.notEqual(await localSecret(b, 'ingest-token'), first);
      // A stream process started by `up` accepts it as a service token.
      const tokens = await localIngestTokens(a);
      assert.deepEqual(
        loadConfig({ RECSYS_ENV: 'development', RECSYS_INGEST_TOKENS: tokens }).auth.ingestTokens,
        [first],
      );
    } finally {
      await rm(a.localDir, { recursive: true, force: true });
      await rm(b.localDir, { recursive: true, force: true });
    }
  });

  it('fills the secrets a caller leaves unset, keeps those it sets, and passes loadConfig in production', async () => {
    const localDir = await mkdtemp(join(tmpdir(), 'secrets-env-'));
    try {
      const mine = 'my-own-jwt-secret-of-forty-characters-xx';
      const filled = await withLocalSecrets(localDir, { RECSYS_JWT_SECRET: mine });
      assert.deepEqual(Object.keys(filled).sort(), [
        'RECSYS_MQTT_PASSWORD',
        'RECSYS_RETRAIN_TOKEN',
      ]);
      for (const [variable, file] of Object.entries(LOCAL_SECRET_FILES)) {
        if (variable === 'RECSYS_JWT_SECRET') continue;
        assert.equal(filled[variable], await localSecret({ localDir }, file));
        assert.equal((await stat(secretPath({ localDir }, file))).mode & 0o777, 0o600);
      }
      assert.equal((await stat(join(localDir, 'secrets'))).mode & 0o777, 0o700);
      const all = await withLocalSecrets(localDir, {});
      assert.equal(all.RECSYS_MQTT_PASSWORD, filled.RECSYS_MQTT_PASSWORD, 'the same on every call');
      const config = loadConfig(all);
      assert.equal(config.environment, 'production');
      assert.equal(config.serving.jwtSecret, all.RECSYS_JWT_SECRET);
    } finally {
      await rm(localDir, { recursive: true, force: true });
    }
  });
});
