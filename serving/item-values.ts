/** Per-item and per-user values the rank features read (`rank-features.ts` re-exports them). */

/**
 * The `item_popularity_log` feature of a popularity (a count; NaN or below 0 counts as 0). Per
 * item, not per request: the item table keeps it, so a feed computes no logarithm for it.
 */
export function popularityLog(popularity: number): number {
  return Math.log1p(Math.max(0, popularity || 0));
}

/** log1p(price) of a usable price (finite, at least 0), else NaN (the price is unknown). */
export function priceLog(price: number | null): number {
  return price !== null && Number.isFinite(price) && price >= 0 ? Math.log1p(price) : Number.NaN;
}

/**
 * The user's price level for {@link RankContext.userPriceLevel}: mean log1p(price) over the
 * given items (the catalog entries of the user's recent items) with a known price; null if none.
 */
export function userPriceLevel(
  items: Iterable<{ price: number | null } | null | undefined>,
): number | null {
  let sum = 0;
  let k = 0;
  for (const it of items) {
    const p = it?.price;
    if (p !== null && p !== undefined && Number.isFinite(p) && p >= 0) {
      sum += Math.log1p(p);
      k++;
    }
  }
  return k === 0 ? null : sum / k;
}
