/**
 * User tokens: HS256 JWTs signed with `RECSYS_JWT_SECRET`, carrying the issuer
 * `RECSYS_JWT_ISSUER`, the user in `sub` and a required expiry. A token names exactly one user:
 * the server lets it read that user's feed and nobody else's, and
 * HTTP ingest lets it post that user's events only. Shared by serving and stream (ingest).
 *
 * @example
 *   const auth = new TokenVerifier(config.serving);
 *   const { userId } = await auth.verify(token); // throws AuthError
 *   const token = await mintToken(config.serving, 'alice', 3600);
 */
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import type { ServingConfig } from './config.js';
import { RecsysError } from './errors.js';

/** Why a token was refused; the HTTP layer answers 401 with this code. */
export class AuthError extends RecsysError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('RECSYS_UNAUTHENTICATED', message, options);
  }
}

export interface TokenClaims {
  userId: string;
  /** Expiry, epoch seconds. */
  exp: number;
}

type TokenConfig = Pick<ServingConfig, 'jwtSecret' | 'jwtIssuer'>;

/** Longest token accepted before any parsing (a JWT of ours is about 200 bytes). */
export const MAX_TOKEN_BYTES = 4096;
/** Verified tokens remembered (until their expiry). */
const VERIFIED_CACHE = 100_000;
/** Clock skew tolerated between the token minter and this server, seconds. */
const CLOCK_TOLERANCE_S = 5;

export class TokenVerifier {
  readonly #key: Uint8Array;
  readonly #issuer: string;

  constructor(config: TokenConfig) {
    this.#key = new TextEncoder().encode(config.jwtSecret);
    this.#issuer = config.jwtIssuer;
  }

  /** Verifies signature (HS256 only), issuer, expiry and subject. Throws {@link AuthError}. */
  // Tokens already verified, until they expire: a client sends the same token with every
  // request, and jose's HMAC runs through WebCrypto (async, on the thread pool). Bounded; the
  // oldest entries go first.
  readonly #verified = new Map<string, TokenClaims>();

  async verify(token: string): Promise<TokenClaims> {
    if (!token) throw new AuthError('no token');
    if (token.length > MAX_TOKEN_BYTES) throw new AuthError('token too long');
    const known = this.#verified.get(token);
    if (known) {
      if (known.exp > Date.now() / 1000 - CLOCK_TOLERANCE_S) return known;
      this.#verified.delete(token);
    }
    const claims = await this.#verify(token);
    this.#verified.set(token, claims);
    if (this.#verified.size > VERIFIED_CACHE) {
      this.#verified.delete(this.#verified.keys().next().value as string);
    }
    return claims;
  }

  async #verify(token: string): Promise<TokenClaims> {
    try {
      const { payload } = await jwtVerify(token, this.#key, {
        algorithms: ['HS256'],
        issuer: this.#issuer,
        requiredClaims: ['sub', 'exp'],
        clockTolerance: CLOCK_TOLERANCE_S,
      });
      const sub = payload.sub;
      if (typeof sub !== 'string' || sub.length === 0) throw new AuthError('token has no subject');
      return { userId: sub, exp: payload.exp as number };
    } catch (err) {
      if (err instanceof AuthError) throw err;
      throw new AuthError(describe(err), { cause: err });
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed)
    return `token claim "${err.claim}" invalid`;
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'token signature invalid';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'token algorithm not allowed';
  return 'token malformed';
}

/** Signs a token for `userId` valid for `ttlSec` seconds (tests, the demo page, the CLI). */
export async function mintToken(
  config: TokenConfig,
  userId: string,
  ttlSec: number,
): Promise<string> {
  if (!userId) throw new RangeError('userId must not be empty');
  if (!(ttlSec > 0)) throw new RangeError('ttlSec must be positive');
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(userId)
    .setIssuer(config.jwtIssuer)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + Math.ceil(ttlSec))
    .sign(new TextEncoder().encode(config.jwtSecret));
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string): string | null {
  const m = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(header);
  return m ? (m[1] as string) : null;
}

/** Sub-protocol a browser offers (with `bearer.<token>`) since it cannot set headers. */
export const WS_PROTOCOL = 'recsys.feed.v1';
const BEARER_PROTOCOL_PREFIX = 'bearer.';

/**
 * Reads `Sec-WebSocket-Protocol: recsys.feed.v1, bearer.<token>`. Returns the token (or null)
 * and the protocol to answer with: `recsys.feed.v1` when offered, so the token is never echoed.
 */
export function tokenFromProtocols(header: string): { token: string | null; protocol: string } {
  const offered = header
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  const bearer = offered.find((p) => p.startsWith(BEARER_PROTOCOL_PREFIX));
  const token = bearer ? bearer.slice(BEARER_PROTOCOL_PREFIX.length) : null;
  const protocol = offered.includes(WS_PROTOCOL) ? WS_PROTOCOL : (offered[0] ?? '');
  return { token: token || null, protocol };
}
