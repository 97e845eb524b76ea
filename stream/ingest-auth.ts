/**
 * Who may post to `POST /v1/events`: a user with a JWT (the serving layer's tokens,
 * `core/auth.ts`), who may post only their own events, or a backend with one of the service
 * tokens of `RECSYS_INGEST_TOKENS` (several at once, so a token can be rotated without a gap).
 * Both come as `Authorization: Bearer <token>`.
 *
 * @example
 *   const auth = new IngestAuth(config);
 *   const who = await auth.authenticate(req.getHeader('authorization')); // throws AuthError
 *   const bad = foreignEvent(events, who); // index of an event of another user, or -1
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { AuthError, bearerToken, TokenVerifier } from '../core/auth.js';
import type { Config } from '../core/index.js';

/** A backend (any user's events) or one user (only events whose userId is theirs). */
export type IngestPrincipal = { kind: 'service' } | { kind: 'user'; userId: string };

const SERVICE: IngestPrincipal = Object.freeze({ kind: 'service' });

const digest = (token: string): Buffer => createHash('sha256').update(token).digest();

export class IngestAuth {
  readonly #users: TokenVerifier;
  // Compared as SHA-256 digests: equal lengths for timingSafeEqual, and a token's length does
  // not show in the comparison's time.
  readonly #services: Buffer[];

  constructor(config: Pick<Readonly<Config>, 'serving' | 'auth'>) {
    this.#users = new TokenVerifier(config.serving);
    this.#services = config.auth.ingestTokens.map(digest);
  }

  /** The principal of an `Authorization` header value. Throws {@link AuthError}. */
  async authenticate(header: string): Promise<IngestPrincipal> {
    const token = bearerToken(header);
    if (token === null) {
      throw new AuthError(header ? 'Authorization must be "Bearer <token>"' : 'no token');
    }
    if (this.isService(token)) return SERVICE;
    const { userId } = await this.#users.verify(token);
    return { kind: 'user', userId };
  }

  isService(token: string): boolean {
    if (this.#services.length === 0) return false;
    const d = digest(token);
    let match = false;
    // Every token is compared, matched or not: the time does not say which one matched.
    for (const s of this.#services) match = timingSafeEqual(d, s) || match;
    return match;
  }
}

/**
 * The index of the first event a user may not post (an object whose userId is not theirs), or
 * -1. Non-objects are left to validation (400, DLQ). A service may post any user's events.
 */
export function foreignEvent(events: readonly unknown[], who: IngestPrincipal): number {
  if (who.kind === 'service') return -1;
  return events.findIndex(
    (e) =>
      e !== null &&
      typeof e === 'object' &&
      !Array.isArray(e) &&
      (e as { userId?: unknown }).userId !== who.userId,
  );
}
