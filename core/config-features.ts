/** The session-feature settings as `loadConfig` (`config.ts`) reads them. */
import { ConfigError } from './errors.js';
import type { Reader } from './config-reader.js';

/** The event types (schemas/ defines them; core cannot import it, a unit test keeps both equal). */
export const EVENT_TYPE_NAMES: readonly string[] = [
  'view',
  'click',
  'like',
  'add_to_cart',
  'purchase',
];

export interface FeaturesConfig {
  halfLifeMs: number;
  sessionGapMs: number;
  recentItems: number;
  maxCategories: number;
  /** eventIds remembered per user at most (the eventId window, `store/event-ids.ts`). */
  dedupWindow: number;
  /** eventIds are remembered at least this long (by the bridge's receivedAt), ms. */
  dedupAgeMs: number;
  ttlSec: number;
  /** Event types that consume an item (never shown to the user again). */
  consumedTypes: string[];
  consumedItems: number;
  /** Previous distinct items of the user an event pairs with in online co-visitation (0 = off). */
  coVisitWindow: number;
}

export function featureSettings(r: Reader): FeaturesConfig {
  const { int, list } = r;
  return {
    halfLifeMs: int('RECSYS_FEATURES_HALF_LIFE_MS', 1000),
    sessionGapMs: int('RECSYS_FEATURES_SESSION_GAP_MS', 1000),
    recentItems: int('RECSYS_FEATURES_RECENT_ITEMS', 1, 1000),
    maxCategories: int('RECSYS_FEATURES_MAX_CATEGORIES', 1, 1000),
    dedupWindow: int('RECSYS_FEATURES_DEDUP_WINDOW', 0, 100_000),
    dedupAgeMs: int('RECSYS_FEATURES_DEDUP_AGE_MS', 60_000, 30 * 86_400_000),
    ttlSec: int('RECSYS_FEATURES_TTL_S', 1),
    consumedTypes: list('RECSYS_FEATURES_CONSUMED_TYPES').map((t) => {
      if (!EVENT_TYPE_NAMES.includes(t)) {
        throw new ConfigError(
          'RECSYS_FEATURES_CONSUMED_TYPES',
          `"${t}" is not an event type (${EVENT_TYPE_NAMES.join(', ')})`,
        );
      }
      return t;
    }),
    consumedItems: int('RECSYS_FEATURES_CONSUMED_ITEMS', 0, 100_000),
    coVisitWindow: int('RECSYS_FEATURES_COVISIT_WINDOW', 0, 100),
  };
}
