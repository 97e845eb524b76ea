/**
 * User tokens (feed and HTTP ingest): HS256 only, issuer, subject and expiry required; header
 * and sub-protocol forms.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT } from 'jose';
import {
  AuthError,
  bearerToken,
  mintToken,
  TokenVerifier,
  tokenFromProtocols,
  WS_PROTOCOL,
} from '../../../core/auth.js';

const cfg = { jwtSecret: 'a-test-secret-of-at-least-32-characters!!', jwtIssuer: 'recsys' };
const key = new TextEncoder().encode(cfg.jwtSecret);
const now = (): number => Math.floor(Date.now() / 1000);

async function refused(token: string, pattern: RegExp): Promise<void> {
  await assert.rejects(new TokenVerifier(cfg).verify(token), (err: unknown) => {
    assert.ok(err instanceof AuthError);
    assert.equal(err.code, 'RECSYS_UNAUTHENTICATED');
    assert.match(err.message, pattern);
    return true;
  });
}

describe('auth', () => {
  it('mints a token the verifier accepts, naming the user', async () => {
    const token = await mintToken(cfg, 'alice', 60);
    const claims = await new TokenVerifier(cfg).verify(token);
    assert.equal(claims.userId, 'alice');
    assert.ok(claims.exp > now() && claims.exp <= now() + 61);
  });

  it('refuses another secret, another issuer, an expired token', async () => {
    await refused(await mintToken({ ...cfg, jwtSecret: 'x'.repeat(40) }, 'alice', 60), /signature/);
    await refused(await mintToken({ ...cfg, jwtIssuer: 'evil' }, 'alice', 60), /"iss"/);
    const expired = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setIssuer('recsys')
      .setExpirationTime(now() - 60)
      .sign(key);
    await refused(expired, /expired/);
  });

  it('requires exp and sub', async () => {
    const noExp = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('alice')
      .setIssuer('recsys')
      .sign(key);
    await refused(noExp, /"exp"/);
    const noSub = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('recsys')
      .setExpirationTime(now() + 60)
      .sign(key);
    await refused(noSub, /"sub"/);
  });

  it('accepts HS256 only (no alg=none, no HS512 with the same secret)', async () => {
    const hs512 = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS512' })
      .setSubject('alice')
      .setIssuer('recsys')
      .setExpirationTime(now() + 60)
      .sign(new TextEncoder().encode(cfg.jwtSecret.repeat(2)));
    await refused(hs512, /algorithm/);
    const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${b64({ alg: 'none' })}.${b64({ sub: 'alice', iss: 'recsys', exp: now() + 60 })}.`;
    await refused(none, /algorithm|malformed/);
    await refused('not-a-jwt', /malformed/);
    await refused('', /no token/);
    await refused('a'.repeat(5000), /too long/);
  });

  it('reads Bearer headers and the WebSocket sub-protocol form', () => {
    assert.equal(bearerToken('Bearer abc.def.ghi'), 'abc.def.ghi');
    assert.equal(bearerToken('bearer   abc'), 'abc');
    assert.equal(bearerToken('Basic abc'), null);
    assert.equal(bearerToken('Bearer'), null);
    assert.equal(bearerToken('Bearer a b'), null);
    assert.deepEqual(tokenFromProtocols(`${WS_PROTOCOL}, bearer.abc.def.ghi`), {
      token: 'abc.def.ghi',
      protocol: WS_PROTOCOL,
    });
    assert.deepEqual(tokenFromProtocols(''), { token: null, protocol: '' });
    assert.deepEqual(tokenFromProtocols('chat'), { token: null, protocol: 'chat' });
  });
});
