/** HTTP ingest credentials: service tokens (several, for rotation) and users' JWTs. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AuthError, mintToken } from '../../../core/auth.js';
import { loadConfig } from '../../../core/config.js';
import { foreignEvent, IngestAuth } from '../../../stream/ingest-auth.js';

const A = 'service-token-a-0123456789abcdef';
const B = 'service-token-b-0123456789abcdef';

describe('IngestAuth', () => {
  const config = loadConfig({ RECSYS_ENV: 'development', RECSYS_INGEST_TOKENS: `${A}, ${B}` });
  const auth = new IngestAuth(config);

  it('takes each listed service token, and nothing close to one', async () => {
    assert.deepEqual(await auth.authenticate(`Bearer ${A}`), { kind: 'service' });
    assert.deepEqual(await auth.authenticate(`Bearer ${B}`), { kind: 'service' });
    for (const header of ['', `Bearer ${A}x`, `Bearer ${A.slice(0, -1)}`, A, `Basic ${A}`]) {
      await assert.rejects(auth.authenticate(header), AuthError, header);
    }
  });

  it("takes a user's JWT as that user", async () => {
    const token = await mintToken(config.serving, 'alice', 60);
    assert.deepEqual(await auth.authenticate(`Bearer ${token}`), {
      kind: 'user',
      userId: 'alice',
    });
  });

  it('without RECSYS_INGEST_TOKENS takes JWTs only', async () => {
    const none = new IngestAuth(loadConfig({ RECSYS_ENV: 'development' }));
    assert.equal(none.isService(A), false);
    await assert.rejects(none.authenticate(`Bearer ${A}`), AuthError);
  });

  it('refuses short or spaced service tokens at start, naming the variable', () => {
    assert.throws(
      () => loadConfig({ RECSYS_ENV: 'development', RECSYS_INGEST_TOKENS: 'short' }),
      /RECSYS_INGEST_TOKENS/,
    );
  });
});

describe('foreignEvent', () => {
  const alice = { kind: 'user', userId: 'alice' } as const;

  it("finds the first event of another user (or of none) for a user's token", () => {
    assert.equal(foreignEvent([{ userId: 'alice' }, { userId: 'alice' }], alice), -1);
    assert.equal(foreignEvent([{ userId: 'alice' }, { userId: 'bob' }], alice), 1);
    assert.equal(foreignEvent([{ itemId: 'i1' }], alice), 0);
    // Not an object: left to validation (400, DLQ).
    assert.equal(foreignEvent([42, null, 'x'], alice), -1);
  });

  it('lets a service post any user', () => {
    assert.equal(foreignEvent([{ userId: 'bob' }], { kind: 'service' }), -1);
  });
});
