/**
 * The synthetic interaction model in memory (steps 1 to 5 of `generate.ts`): deterministic, the
 * same options (seed included) give the same events, byte for byte.
 *
 * @example
 *   const data = generateData({ seed: 7, events: 50_000, users: 2_000, items: 1_000 });
 */
import { EVENT_TYPES, type EventType } from '../schemas/index.js';
import type { CatalogItem } from '../store/catalog.js';

export interface GenerateOptions {
  /** PRNG seed; also part of the eventIds and file names. @default 1 */
  seed?: number;
  /** Events to generate (exactly). @default 100_000 */
  events?: number;
  /** @default events / 50 */
  users?: number;
  /** @default events / 100, at least 200 */
  items?: number;
  /** L1 categories. @default 20 */
  categories?: number;
  /** L2 categories per L1. @default 4 */
  subcategories?: number;
  /** Days the events span, ending at `endTs`. @default 14 */
  days?: number;
  /** End of the span, epoch ms. A constant by default so output does not depend on the clock. @default 2026-01-01T00:00:00Z */
  endTs?: number;
  /** Zipf exponent of item popularity. @default 1.0 */
  zipfExponent?: number;
  /** Mean item views per session (geometric). @default 8 */
  viewsPerSession?: number;
  /** Per view, chance the session switches to a fresh category draw. @default 0.15 */
  driftProbability?: number;
  /** Favourite categories per user. @default 3 */
  tastesPerUser?: number;
  /** Share of category draws spread over all categories. @default 0.1 */
  exploreShare?: number;
  /** Funnel as shares of views. @default {click: 0.3, add_to_cart: 0.1, purchase: 0.03, like: 0.05} */
  funnel?: Partial<Record<Exclude<EventType, 'view'>, number>>;
  /** Planted (X, complement) pairs. @default 20 */
  plantedPairs?: number;
  /** Chance a view of X is followed by its complement. @default 0.7 */
  complementProbability?: number;
  /** Share of sessions whose events carry a client sessionId (the rest rely on the gap). @default 0.5 */
  clientSessionShare?: number;
}

/** Fully defaulted options. */
export type GenerateSettings = Required<Omit<GenerateOptions, 'funnel'>> & {
  funnel: Record<Exclude<EventType, 'view'>, number>;
};

export interface PlantedPair {
  itemId: string;
  complementId: string;
}

/**
 * Events as columns (one typed array per field, index = event), the compact form the Parquet
 * writer consumes; ids are indexes (`u<user>`, `i<item>`, type = index in `EVENT_TYPES`).
 */
export interface GeneratedData {
  settings: GenerateSettings;
  count: number;
  user: Int32Array;
  item: Int32Array;
  type: Uint8Array;
  /** Epoch ms. */
  ts: Float64Array;
  /** Global session number; `clientSession[session]` says whether its sessionId is sent. */
  session: Int32Array;
  clientSession: Uint8Array;
  /** Position of the view in its session (context.position). */
  position: Int16Array;
  catalog: CatalogItem[];
  plantedPairs: PlantedPair[];
}

const DAY_MS = 86_400_000;
const GAP_MS = 30 * 60_000;
const T_VIEW = EVENT_TYPES.indexOf('view');
const T_CLICK = EVENT_TYPES.indexOf('click');
const T_CART = EVENT_TYPES.indexOf('add_to_cart');
const T_LIKE = EVENT_TYPES.indexOf('like');
const T_PURCHASE = EVENT_TYPES.indexOf('purchase');

export function generateSettings(o: GenerateOptions = {}): GenerateSettings {
  const events = o.events ?? 100_000;
  const s: GenerateSettings = {
    seed: o.seed ?? 1,
    events,
    users: o.users ?? Math.max(10, Math.round(events / 50)),
    items: o.items ?? Math.max(200, Math.round(events / 100)),
    categories: o.categories ?? 20,
    subcategories: o.subcategories ?? 4,
    days: o.days ?? 14,
    endTs: o.endTs ?? Date.UTC(2026, 0, 1),
    zipfExponent: o.zipfExponent ?? 1.0,
    viewsPerSession: o.viewsPerSession ?? 8,
    driftProbability: o.driftProbability ?? 0.15,
    tastesPerUser: o.tastesPerUser ?? 3,
    exploreShare: o.exploreShare ?? 0.1,
    funnel: { click: 0.3, add_to_cart: 0.1, purchase: 0.03, like: 0.05, ...o.funnel },
    plantedPairs: o.plantedPairs ?? 20,
    complementProbability: o.complementProbability ?? 0.7,
    clientSessionShare: o.clientSessionShare ?? 0.5,
  };
  const f = s.funnel;
  if (!(f.purchase <= f.add_to_cart && f.add_to_cart <= f.click && f.click <= 1 && f.like <= 1)) {
    throw new RangeError('funnel: expected purchase <= add_to_cart <= click <= 1, like <= 1');
  }
  if (s.items < s.categories * 2 || s.plantedPairs * 4 > s.items) {
    throw new RangeError('items: too few for the categories and planted pairs');
  }
  return s;
}

/** mulberry32: tiny, fast, good enough for synthetic data; deterministic per seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0 || 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Index of the first cumulative weight above `u * total` (binary search over `cdf[lo, hi)`). */
function pick(cdf: Float64Array, lo: number, hi: number, u: number): number {
  const base = lo > 0 ? (cdf[lo - 1] as number) : 0;
  const target = base + u * ((cdf[hi - 1] as number) - base);
  while (lo < hi - 1) {
    const mid = (lo + hi) >>> 1;
    if ((cdf[mid - 1] as number) > target) hi = mid;
    else lo = mid;
  }
  // lo is the last index whose preceding cumulative weight is <= target.
  return lo;
}

/** Generates the catalog and events in memory (1M events: about 1 s). */
export function generateData(options: GenerateOptions = {}): GeneratedData {
  const s = generateSettings(options);
  const rand = prng(s.seed);
  const startTs = s.endTs - s.days * DAY_MS;
  // In this order: every step draws from the same random sequence.
  const { itemCat, rank, catCdf, sampleItem, catalog } = makeItems(s, rand, startTs);
  const { complement, plantedPairs } = plantPairs(s, rand, itemCat, rank);
  const { sampleCat, activity } = makeUsers(s, rand, catCdf);
  return makeEvents(s, rand, startTs, {
    sampleItem,
    sampleCat,
    activity,
    complement,
    catalog,
    plantedPairs,
  });
}

type Settings = ReturnType<typeof generateSettings>;

/**
 * Step 1: categories and items. Items are grouped by category in `byCat` so one CDF slice per
 * category samples an item in proportion to its popularity.
 */
function makeItems(s: Settings, rand: () => number, startTs: number) {
  const catWeight = new Float64Array(s.categories);
  for (let c = 0; c < s.categories; c++) catWeight[c] = 1 / Math.sqrt(c + 1);
  const catCdf = cumulative(catWeight);
  const itemCat = new Int32Array(s.items);
  const itemWeight = new Float64Array(s.items);
  const rank = shuffle(
    Int32Array.from({ length: s.items }, (_, i) => i),
    rand,
  );
  for (let i = 0; i < s.items; i++) {
    // The first `categories` items seed every category, so none is empty.
    itemCat[i] = i < s.categories ? i : pick(catCdf, 0, s.categories, rand());
    itemWeight[i] = 1 / Math.pow((rank[i] as number) + 1, s.zipfExponent);
  }
  const byCat = Int32Array.from({ length: s.items }, (_, i) => i).sort(
    (a, b) => (itemCat[a] as number) - (itemCat[b] as number) || a - b,
  );
  const catStart = new Int32Array(s.categories + 1);
  for (let i = 0; i < s.items; i++) (catStart[(itemCat[i] as number) + 1] as number)++;
  for (let c = 0; c < s.categories; c++) {
    catStart[c + 1] = (catStart[c + 1] as number) + (catStart[c] as number);
  }
  const byCatCdf = new Float64Array(s.items);
  let acc = 0;
  for (let k = 0; k < s.items; k++) byCatCdf[k] = acc += itemWeight[byCat[k] as number] as number;
  const sampleItem = (cat: number): number =>
    byCat[pick(byCatCdf, catStart[cat] as number, catStart[cat + 1] as number, rand())] as number;

  const catName = (c: number): string => `c${String(c).padStart(2, '0')}`;
  const catalog: CatalogItem[] = [];
  for (let i = 0; i < s.items; i++) {
    const c = itemCat[i] as number;
    catalog.push({
      itemId: `i${i}`,
      categoryL1: catName(c),
      categoryL2: `${catName(c)}-${Math.floor(rand() * s.subcategories)}`,
      price: Math.round(Math.exp(3 + rand() + rand()) * 100) / 100,
      isAvailable: rand() > 0.02,
      createdAt: startTs - Math.floor(rand() * 180 * DAY_MS),
    });
  }

  return { itemCat, rank, catCdf, sampleItem, catalog };
}

/** Step 5 (set up): planted pairs, X among ranks 10.., Y among the least popular half, other category. */
function plantPairs(s: Settings, rand: () => number, itemCat: Int32Array, rank: Int32Array) {
  const byRank = new Int32Array(s.items);
  for (let i = 0; i < s.items; i++) byRank[rank[i] as number] = i;
  const complement = new Int32Array(s.items).fill(-1);
  const used = new Uint8Array(s.items);
  const plantedPairs: PlantedPair[] = [];
  for (let p = 0; p < s.plantedPairs; p++) {
    const x = byRank[10 + p * 2] as number;
    let y = -1;
    while (y < 0 || used[y] || y === x || itemCat[y] === itemCat[x]) {
      y = byRank[Math.floor(s.items / 2 + rand() * (s.items / 2))] as number;
    }
    used[x] = used[y] = 1;
    complement[x] = y;
    plantedPairs.push({ itemId: `i${x}`, complementId: `i${y}` });
  }

  return { complement, plantedPairs };
}

/** Step 2: users, favourite categories with Dirichlet(1) weights (normalised exponentials). */
function makeUsers(s: Settings, rand: () => number, catCdf: Float64Array) {
  const k = s.tastesPerUser;
  const tasteCat = new Int32Array(s.users * k);
  const tasteCdf = new Float64Array(s.users * k);
  const activity = new Float64Array(s.users);
  for (let u = 0; u < s.users; u++) {
    let sum = 0;
    for (let j = 0; j < k; j++) {
      tasteCat[u * k + j] = pick(catCdf, 0, s.categories, rand());
      sum += tasteCdf[u * k + j] = -Math.log(1 - rand());
    }
    let run = 0;
    for (let j = 0; j < k; j++) tasteCdf[u * k + j] = run += (tasteCdf[u * k + j] as number) / sum;
    activity[u] = Math.exp(gaussian(rand) * 0.8);
  }
  const sampleCat = (u: number): number => {
    if (rand() < s.exploreShare) return Math.floor(rand() * s.categories);
    const r = rand();
    for (let j = 0; j < k - 1; j++)
      if (r < (tasteCdf[u * k + j] as number)) return tasteCat[u * k + j] as number;
    return tasteCat[u * k + k - 1] as number;
  };
  return { sampleCat, activity };
}

/** Steps 3 and 4: sessions and funnels, user by user until exactly `events` events exist. */
function makeEvents(
  s: Settings,
  rand: () => number,
  startTs: number,
  world: {
    sampleItem: (cat: number) => number;
    sampleCat: (u: number) => number;
    activity: Float64Array;
    complement: Int32Array;
    catalog: CatalogItem[];
    plantedPairs: PlantedPair[];
  },
): GeneratedData {
  const { sampleItem, sampleCat, activity, complement, catalog, plantedPairs } = world;
  const n = s.events;
  const user = new Int32Array(n);
  const item = new Int32Array(n);
  const type = new Uint8Array(n);
  const ts = new Float64Array(n);
  const session = new Int32Array(n);
  const position = new Int16Array(n);
  const clientSession: number[] = [];
  const f = s.funnel;
  const eventsPerView = 1 + f.click + f.add_to_cart + f.purchase + f.like;
  const totalActivity = activity.reduce((a, b) => a + b, 0);
  // A little under the expected need, so the first pass reaches every user before `events` runs
  // out; later passes add one session per user after its last until the count is reached.
  const sessionsWanted = (n / (eventsPerView * s.viewsPerSession)) * 0.95;
  const lastTs = new Float64Array(s.users).fill(-Infinity);
  let e = 0;
  let sess = 0;
  const emit = (u: number, it: number, t: number, at: number, pos: number): boolean => {
    if (e >= n) return false;
    user[e] = u;
    item[e] = it;
    type[e] = t;
    ts[e] = at;
    session[e] = sess;
    position[e] = pos;
    e++;
    return true;
  };
  const pClickCart = f.add_to_cart / f.click;
  const pCartBuy = f.purchase / f.add_to_cart;
  for (let pass = 0; pass < 20 && e < n; pass++) {
    for (let u = 0; u < s.users && e < n; u++) {
      const count =
        pass > 0
          ? 1
          : Math.max(1, Math.round(((activity[u] as number) / totalActivity) * sessionsWanted));
      const from = pass > 0 ? Math.max(startTs, (lastTs[u] as number) + GAP_MS + 60_000) : startTs;
      const starts = Array.from({ length: count }, () => from + rand() * (s.endTs - from)).sort(
        (a, b) => a - b,
      );
      for (const scheduled of starts) {
        let t = Math.floor(Math.max(scheduled, (lastTs[u] as number) + GAP_MS + 60_000));
        if (t >= s.endTs - GAP_MS) break;
        clientSession.push(rand() < s.clientSessionShare ? 1 : 0);
        let cat = sampleCat(u);
        let next = -1;
        let views = 1;
        while (rand() > 1 / s.viewsPerSession) views++;
        for (let v = 0; v < views && e < n && t < s.endTs; v++) {
          let it: number;
          if (next >= 0) {
            it = next;
          } else {
            if (v > 0 && rand() < s.driftProbability) cat = sampleCat(u);
            it = sampleItem(cat);
          }
          const comp = complement[it] as number;
          next = comp >= 0 && rand() < s.complementProbability ? comp : -1;
          emit(u, it, T_VIEW, t, v);
          let at = t;
          if (rand() < f.click) {
            emit(u, it, T_CLICK, (at += 1000 + Math.floor(rand() * 10_000)), v);
            if (rand() < pClickCart) {
              emit(u, it, T_CART, (at += 2000 + Math.floor(rand() * 30_000)), v);
              if (rand() < pCartBuy)
                emit(u, it, T_PURCHASE, (at += 5000 + Math.floor(rand() * 60_000)), v);
            }
          }
          if (rand() < f.like) emit(u, it, T_LIKE, (at += 500 + Math.floor(rand() * 5000)), v);
          lastTs[u] = at;
          // Next view: 5 s to a few minutes later, far below the 30-minute session gap.
          t = at + 5000 + Math.floor(-Math.log(1 - rand()) * 40_000);
        }
        sess++;
        if (e >= n) break;
      }
    }
  }
  return {
    settings: s,
    count: e,
    user: user.subarray(0, e),
    item: item.subarray(0, e),
    type: type.subarray(0, e),
    ts: ts.subarray(0, e),
    session: session.subarray(0, e),
    clientSession: Uint8Array.from(clientSession),
    position: position.subarray(0, e),
    catalog,
    plantedPairs,
  };
}

function cumulative(w: Float64Array): Float64Array {
  const out = new Float64Array(w.length);
  let acc = 0;
  for (let i = 0; i < w.length; i++) out[i] = acc += w[i] as number;
  return out;
}

function shuffle(a: Int32Array, rand: () => number): Int32Array {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = a[i] as number;
    a[i] = a[j] as number;
    a[j] = t;
  }
  return a;
}

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}
