/**
 * The reranker's features, defined once: batch training (`batch/rerank.ts`, through
 * {@link fillFeatures}) and serving (on its columns) both fill their matrices with
 * {@link fillFeatureRows}, so the two cannot drift. The ONNX model carries {@link FEATURE_NAMES}
 * in its metadata and the ranker refuses a model whose names differ.
 *
 * Changing a feature (its meaning or its position) means appending or renaming in
 * {@link FEATURE_NAMES}: old models are then refused at load instead of scoring garbage.
 *
 * Every value is finite (never NaN): a missing input becomes 0 and, where 0 is also a real
 * value, a separate 0/1 flag says it was missing. NaN would work in LightGBM (missing-value
 * branches) but is where LightGBM and the ONNX tree ensemble are most likely to disagree.
 *
 * @example
 *   const out = new Float32Array(candidates.length * FEATURE_COUNT);
 *   fillFeatures(out, { now, session, userPriceLevel: null }, candidates);
 *   const scores = await ranker.score(out, candidates.length);
 */
import type { EventType } from '../schemas/index.js';
import type { SessionFeatures } from '../store/session-features.js';
import { sourceRanks } from './source-ranks.js';
import { popularityLog, priceLog } from './item-values.js';

export { popularityLog, priceLog, userPriceLevel } from './item-values.js';

/** Candidate sources the mixer draws from, in feature order. `covis` = real-time neighbours. */
export const SOURCES = ['batch', 'covis', 'trending', 'popularity'] as const;
export type CandidateSource = (typeof SOURCES)[number];

const TYPES = ['view', 'click', 'like', 'add_to_cart', 'purchase'] as const satisfies EventType[];

/** Ordered, stable feature names: the column order of the matrix and of the model's input. */
export const FEATURE_NAMES: readonly string[] = Object.freeze([
  // covis: the sum over the user's recent items of the neighbour score / (1 + the item's
  // position among them), so an item co-visited with several recent items ranks higher.
  ...SOURCES.map((s) => (s === 'covis' ? 'score_covis_sum' : `score_${s}`)),
  // 1 / rank of the candidate's score among this request's candidates of the same source (1 for
  // the best, 0 when the source did not propose it): scale-free, unlike the raw scores.
  ...SOURCES.map((s) => `rrank_${s}`),
  'n_sources',
  'item_known',
  'item_popularity_log',
  'item_age_days_log',
  'price_log',
  'price_known',
  'price_vs_user',
  'cat_affinity_share',
  'cat_affinity_rrank',
  'recent_rrank',
  'purchased_rrank',
  'user_known',
  'user_events_log',
  'session_length_log',
  'since_last_activity_s_log',
  ...TYPES.map((t) => `user_share_${t}`),
  // Sums over all the user's recent items of EASE weights and batch co-visitation (profile.ts).
  'profile_ease',
  'profile_covis',
]);

export const FEATURE_COUNT = FEATURE_NAMES.length;

/** The catalog facts of a candidate that features read (`CatalogItem` and `RankItem` have them). */
export interface ItemFacts {
  categoryL1: string;
  price: number | null;
  /** When the item entered the catalog, epoch ms. */
  createdAt: number;
}

/** The catalog facts one candidate needs in training: `ItemFacts` plus a popularity. */
export interface RankItem extends ItemFacts {
  /** Interactions with the item over the popularity window (a count; the feature is log1p). */
  popularity: number;
}

export interface RankCandidate {
  itemId: string;
  /** Score from each source that proposed the item; absent = not proposed. */
  scores: Partial<Record<CandidateSource, number>>;
  /** Catalog facts, or null for an item not (yet) in the catalog. */
  item: RankItem | null;
  /** [profile_ease, profile_covis] (`profileScores`); absent = 0. */
  profile?: readonly [number, number];
}

export interface RankContext {
  /** The time features are computed at, epoch ms (request time, or the cut-off in training). */
  now: number;
  /** The user's live features (`readFeatures`/`parseFeatures` at `now`), null for a new user. */
  session: SessionFeatures | null;
  /**
   * The user's price level: mean log1p(price) of their recent items with a known price, or null.
   * The session hash keeps no prices, so the caller derives it from the catalog entries of
   * `session.recent` (see {@link userPriceLevel}).
   */
  userPriceLevel: number | null;
}

const DAY_MS = 86_400_000;

// Column offsets, computed once from the names so a reordering of FEATURE_NAMES cannot silently
// misplace a value (the test checks every name has a writer).
const col = (name: string): number => {
  const i = FEATURE_NAMES.indexOf(name);
  if (i < 0) throw new Error(`feature ${name} missing from FEATURE_NAMES`);
  return i;
};
const C_SCORE = col('score_batch');
const C_RRANK = col('rrank_batch');
const C_NSRC = col('n_sources');
const C_ITEM_KNOWN = col('item_known');
const C_POP = col('item_popularity_log');
const C_AGE = col('item_age_days_log');
const C_PRICE = col('price_log');
const C_PRICE_KNOWN = col('price_known');
const C_PRICE_VS = col('price_vs_user');
const C_AFF = col('cat_affinity_share');
const C_AFF_RANK = col('cat_affinity_rrank');
const C_RECENT = col('recent_rrank');
const C_BOUGHT = col('purchased_rrank');
const C_USER_KNOWN = col('user_known');
const C_USER_EVENTS = col('user_events_log');
const C_SESSION_LEN = col('session_length_log');
const C_SINCE_LAST = col('since_last_activity_s_log');
const C_SHARE = col('user_share_view');
const C_PROFILE = col('profile_ease');
const SOURCE_COUNT = SOURCES.length;

/** Per category number: affinity share at 2c, 1/rank at 2c + 1; zero outside a fill. */
let affinityScratch = new Float64Array(0);

/**
 * What features read about items, as columns indexed by an item's key: serving passes its
 * `ItemTable` (keys for its whole batch version), {@link fillFeatures} builds one for its
 * candidates (key = position).
 */
export interface ItemColumns {
  /** 1 when the item is in the catalog; the other columns are read only there. */
  readonly known: Uint8Array;
  /** {@link priceLog} of the item's price: NaN when the catalog has no (usable) price. */
  readonly priceLog: Float64Array;
  /** When the item entered the catalog, epoch ms. */
  readonly createdAt: Float64Array;
  /** Category number (`categoryIndex`). */
  readonly category: Int32Array;
  /** {@link popularityLog} of the item's train popularity; NaN counts as 0. */
  readonly popularityLog: Float64Array;
  /** Category name -> its number in `category`. */
  readonly categoryIndex: ReadonlyMap<string, number>;
  /** The key of an item id, undefined for an id the columns do not have. */
  find(itemId: string): number | undefined;
}

/**
 * Candidates as columns, the form serving builds (`serving/mix.ts`); row i is candidate
 * i, whose item is `keys[i]` in `items`. {@link fillFeatures} turns `RankCandidate` objects
 * into this form, so both paths run the same code.
 */
export interface RankRows {
  n: number;
  /** The item of each row: its key in `items`. */
  keys: ArrayLike<number>;
  /** Bit s is set when `SOURCES[s]` proposed the candidate. */
  proposed: Uint8Array;
  /** The score `SOURCES[s]` gave candidate i, at `i * SOURCES.length + s`. */
  scores: Float64Array;
  items: ItemColumns;
  /**
   * Optional, from mixing (`CandidateRows.sourcePos`): candidate i's position in source s's
   * score order, at `i * SOURCES.length + s`. Without it each source's rows are sorted here;
   * with it they are placed by position, and only rows of equal float32 score are put back in
   * row order: the same ranks either way (unit-tested), without the sorts.
   */
  sourcePos?: Int32Array;
  /** Optional `profileScores` of the rows ([ease, covis] at 2i, 2i + 1); absent = zeros. */
  profile?: Float64Array;
}

/**
 * Fills `out` (row-major, `candidates.length * FEATURE_COUNT`, from offset 0) with the features
 * of each candidate for one user. The form training uses; serving calls {@link fillFeatureRows}
 * on its columns directly.
 */
export function fillFeatures(
  out: Float32Array,
  ctx: RankContext,
  candidates: readonly RankCandidate[],
): void {
  const n = candidates.length;
  // Columns for these candidates, key = position (an item listed twice keeps its first key).
  const index = new Map<string, number>();
  const categoryIndex = new Map<string, number>();
  const items = {
    known: new Uint8Array(n),
    priceLog: new Float64Array(n),
    createdAt: new Float64Array(n),
    category: new Int32Array(n),
    popularityLog: new Float64Array(n),
    categoryIndex,
    find: (id: string) => index.get(id),
  };
  const keys = new Int32Array(n);
  candidates.forEach((c, i) => {
    const first = index.get(c.itemId);
    if (first !== undefined) {
      keys[i] = first;
      return;
    }
    index.set(c.itemId, i);
    keys[i] = i;
    const item = c.item;
    if (item === null) return;
    items.known[i] = 1;
    items.priceLog[i] = priceLog(item.price);
    items.createdAt[i] = item.createdAt;
    let cat = categoryIndex.get(item.categoryL1);
    if (cat === undefined) categoryIndex.set(item.categoryL1, (cat = categoryIndex.size));
    items.category[i] = cat;
    items.popularityLog[i] = popularityLog(item.popularity);
  });
  const rows: RankRows = {
    n,
    keys,
    proposed: new Uint8Array(n),
    scores: new Float64Array(n * SOURCE_COUNT),
    items,
    profile: new Float64Array(2 * n),
  };
  for (let i = 0; i < n; i++) {
    const scores = (candidates[i] as RankCandidate).scores;
    let bits = 0;
    for (let s = 0; s < SOURCE_COUNT; s++) {
      const v = scores[SOURCES[s] as CandidateSource];
      if (v !== undefined) {
        bits |= 1 << s;
        rows.scores[i * SOURCE_COUNT + s] = v;
      }
    }
    rows.proposed[i] = bits;
    const p = (candidates[i] as RankCandidate).profile;
    if (p) rows.profile?.set(p, 2 * i);
  }
  fillFeatureRows(out, ctx, rows);
}

/**
 * Fills `out` (row-major, `rows.n * FEATURE_COUNT`, from offset 0) with the features of each
 * candidate row for one user: row i at matrix row `at[i]` (default i; features never depend on
 * where a row is written, only on the rows' own order).
 *
 * Steps: (1) per-request values once: user-level features, the (share, 1/rank) of the user's
 * categories by category number, the recent/purchased item key -> 1/position maps, the
 * per-source reciprocal ranks; (2) one pass over the rows writing numbers only (column reads at
 * the row's key, no string lookups, no allocation per candidate).
 */
export function fillFeatureRows(
  out: Float32Array,
  ctx: RankContext,
  rows: RankRows,
  at?: ArrayLike<number>,
): void {
  const n = rows.n;
  if (out.length < n * FEATURE_COUNT) {
    throw new RangeError(`feature buffer holds ${out.length} values, need ${n * FEATURE_COUNT}`);
  }

  const user = userValues(ctx, rows.items);
  const { scores: sc, rranks: rr } = sourceRanks(rows, SOURCE_COUNT);
  writeRows(out, ctx, rows, user, sc, rr, at);
  for (const c of user.touchedCategories) {
    affinityScratch[2 * c] = 0;
    affinityScratch[2 * c + 1] = 0;
  }
}

/** What every row of one user shares (step 1a). */
interface UserValues {
  userKnown: number;
  userEvents: number;
  sessionLen: number;
  sinceLast: number;
  shares: number[];
  /** Category numbers with an affinity entry in `affinityScratch`. */
  touchedCategories: number[];
  /** Item key -> 1 / position among the user's recent (purchased) items. */
  recent: Map<number, number>;
  purchased: Map<number, number>;
}

/**
 * Step 1a: the user-level values, and per category number [share of the user's total affinity,
 * 1 / rank among the user's categories] into `affinityScratch` (cleared again after the fill).
 */
function userValues(ctx: RankContext, items: ItemColumns): UserValues {
  const { now, session } = ctx;
  let userKnown = 0;
  let userEvents = 0;
  let sessionLen = 0;
  let sinceLast = 0;
  const shares = [0, 0, 0, 0, 0];
  const touchedCategories: number[] = [];
  const recent = new Map<number, number>();
  const purchased = new Map<number, number>();
  if (session) {
    userKnown = 1;
    userEvents = Math.log1p(session.total);
    if (session.session) {
      sessionLen = Math.log1p(session.session.length);
      sinceLast = Math.log1p(Math.max(0, now - session.session.last) / 1000);
    }
    if (session.total > 0) {
      for (let t = 0; t < TYPES.length; t++) {
        shares[t] = (session.counts[TYPES[t] as EventType] ?? 0) / session.total;
      }
    }
    let sum = 0;
    for (const [, v] of session.affinities) sum += v > 0 ? v : 0;
    if (affinityScratch.length < 2 * items.categoryIndex.size) {
      affinityScratch = new Float64Array(4 * items.categoryIndex.size);
    }
    // `affinities` is sorted strongest first (parseFeatures), so the index is the rank.
    session.affinities.forEach(([cat, v], i) => {
      const c = items.categoryIndex.get(cat);
      // A category no row has, or listed twice (the first, stronger, entry stays).
      if (c === undefined || (affinityScratch[2 * c + 1] as number) > 0) return;
      affinityScratch[2 * c] = sum > 0 && v > 0 ? v / sum : 0;
      affinityScratch[2 * c + 1] = 1 / (i + 1);
      touchedCategories.push(c);
    });
    // Newest first: the first position wins for an item listed twice.
    session.recent.forEach((id, i) => {
      const k = items.find(id);
      if (k !== undefined && !recent.has(k)) recent.set(k, 1 / (i + 1));
    });
    session.purchased.forEach((id, i) => {
      const k = items.find(id);
      if (k !== undefined && !purchased.has(k)) purchased.set(k, 1 / (i + 1));
    });
  }
  return {
    userKnown,
    userEvents,
    sessionLen,
    sinceLast,
    shares,
    touchedCategories,
    recent,
    purchased,
  };
}

/** Step 2: one row per candidate, numbers only (column reads at the row's key). */
function writeRows(
  out: Float32Array,
  ctx: RankContext,
  rows: RankRows,
  user: UserValues,
  sc: Float64Array,
  rr: Float32Array,
  at: ArrayLike<number> | undefined,
): void {
  const n = rows.n;
  const { now } = ctx;
  const items = rows.items;
  const aff = affinityScratch;
  const priceLevel = ctx.userPriceLevel;
  const { recent, purchased, touchedCategories, shares } = user;
  const profile = rows.profile;
  for (let i = 0; i < n; i++) {
    const o = (at === undefined ? i : (at[i] as number)) * FEATURE_COUNT;
    let nSources = 0;
    for (let s = 0; s < SOURCE_COUNT; s++) {
      // Read back from (1b): rr > 0 exactly when the source proposed the item.
      const r = rr[s * n + i] as number;
      const v = sc[s * n + i] as number;
      out[o + C_SCORE + s] = r > 0 && Number.isFinite(v) ? v : 0;
      out[o + C_RRANK + s] = r;
      if (r > 0) nSources++;
    }
    out[o + C_NSRC] = nSources;

    const k = rows.keys[i] as number;
    if (items.known[k] === 1) {
      out[o + C_ITEM_KNOWN] = 1;
      const pl = items.popularityLog[k] as number;
      out[o + C_POP] = pl === pl ? pl : 0;
      // Age in days on a log scale: the difference between 1 and 8 days old matters more than
      // between 100 and 107. A createdAt in the future counts as brand new.
      const createdAt = items.createdAt[k] as number;
      const ageMs = Number.isFinite(createdAt) ? Math.max(0, now - createdAt) : 0;
      // Rounded to 1/1000: ages of items added seconds apart are a float32 step apart, and a
      // split between such neighbours routes differently in ONNX (float32) than in LightGBM.
      out[o + C_AGE] = Math.round(Math.log1p(ageMs / DAY_MS) * 1000) / 1000;
      const lp = items.priceLog[k] as number;
      if (lp === lp) {
        out[o + C_PRICE] = lp;
        out[o + C_PRICE_KNOWN] = 1;
        // Ratio on the log scale: 0 = the user's usual price level, +0.69 = about twice it.
        out[o + C_PRICE_VS] = priceLevel === null ? 0 : lp - priceLevel;
      } else {
        out[o + C_PRICE] = 0;
        out[o + C_PRICE_KNOWN] = 0;
        out[o + C_PRICE_VS] = 0;
      }
      const c = items.category[k] as number;
      out[o + C_AFF] = touchedCategories.length > 0 ? (aff[2 * c] as number) : 0;
      out[o + C_AFF_RANK] = touchedCategories.length > 0 ? (aff[2 * c + 1] as number) : 0;
    } else {
      out[o + C_ITEM_KNOWN] = 0;
      out[o + C_POP] = 0;
      out[o + C_AGE] = 0;
      out[o + C_PRICE] = 0;
      out[o + C_PRICE_KNOWN] = 0;
      out[o + C_PRICE_VS] = 0;
      out[o + C_AFF] = 0;
      out[o + C_AFF_RANK] = 0;
    }
    out[o + C_RECENT] = recent.size > 0 ? (recent.get(k) ?? 0) : 0;
    out[o + C_BOUGHT] = purchased.size > 0 ? (purchased.get(k) ?? 0) : 0;

    out[o + C_USER_KNOWN] = user.userKnown;
    out[o + C_USER_EVENTS] = user.userEvents;
    out[o + C_SESSION_LEN] = user.sessionLen;
    out[o + C_SINCE_LAST] = user.sinceLast;
    for (let t = 0; t < TYPES.length; t++) out[o + C_SHARE + t] = shares[t] as number;
    out[o + C_PROFILE] = profile === undefined ? 0 : (profile[2 * i] as number);
    out[o + C_PROFILE + 1] = profile === undefined ? 0 : (profile[2 * i + 1] as number);
  }
}
