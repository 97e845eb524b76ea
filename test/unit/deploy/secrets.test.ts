/** deploy/local's per-machine secrets: made once, kept private, the same on every read. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../../core/config.js';
import { localIngestTokens, localSecret, secretPath } from '../../../deploy/local/secrets.js';

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
      assert.deepEqual(loadConfig({ RECSYS_INGEST_TOKENS: tokens }).auth.ingestTokens, [first]);
    } finally {
      await rm(a.localDir, { recursive: true, force: true });
      await rm(b.localDir, { recursive: true, force: true });
    }
  });
});
