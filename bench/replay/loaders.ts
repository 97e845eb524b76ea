/**
 * Interaction logs into one shape ({@link LogEvent}), in file order:
 *
 * - CSV with a header row: columns found by name (first alias present, case-insensitive; see
 *   {@link CSV_COLUMNS}): user, item, timestamp, and optionally type, value (a rating) and
 *   category. Quoted cells are not supported (ids and types never need them).
 * - MovieLens `u.data` (tab-separated `user item rating ts`) and `ratings.dat`
 *   (`user::item::rating::ts`).
 * - OTTO session JSON Lines: `{"session":1,"events":[{"aid":2,"ts":3,"type":"clicks"}]}`; the
 *   session is the user.
 * - MovieLens `u.item` (`id|title|...|19 genre flags`) as a catalog: the first genre set.
 *
 * Types: clicks -> click, carts -> add_to_cart, orders -> purchase; CSV synonyms in
 * {@link TYPE_SYNONYMS}, an unknown or missing type -> view; a CSV row whose type is in
 * {@link IGNORED_TYPES} (REES46 `remove_from_cart`: no interest in the item) is skipped. A rating (MovieLens, or a CSV value
 * column without a type column) becomes like when >= {@link LIKE_RATING}, else view: a 4 or 5
 * says the user liked the film, a lower rating only that they watched it.
 *
 * Timestamps: digits are epoch seconds below 1e11, else epoch ms; anything else ISO 8601.
 * Ids: characters outside the events' id alphabet `[A-Za-z0-9_.:@-]` become `_`.
 * A row whose user, item or time does not parse is counted in `skipped`, not loaded; so is a
 * CSV row with fewer cells than the header (a file cut inside its last line).
 *
 * @example
 *   const log = parseLog(readFileSync('u.data', 'utf8'), 'u.data');
 *   log.events[0]; // { user: '196', item: '242', ts: 881250949000, type: 'view', value: 3 }
 */
import type { EventType } from '../../schemas/index.js';

/** One interaction of the log, before re-timing. */
export interface LogEvent {
  user: string;
  item: string;
  /** Epoch ms as in the file. */
  ts: number;
  type: EventType;
  /** A rating or other value the log carries. */
  value?: number;
}

export interface ParsedLog {
  format: LogFormat;
  events: LogEvent[];
  /** Rows that could not be read. */
  skipped: number;
  /** itemId -> categoryL1, when the log itself carries categories (CSV category column). */
  categories: Map<string, string>;
}

export type LogFormat = 'csv' | 'movielens-tab' | 'movielens-dat' | 'otto-jsonl';

/** A rating at or above this is a like; below, a view. */
export const LIKE_RATING = 4;

export const CSV_COLUMNS = {
  user: ['user', 'userid', 'user_id', 'visitorid', 'visitor_id', 'customer_id', 'session', 'uid'],
  item: ['item', 'itemid', 'item_id', 'productid', 'product_id', 'movieid', 'movie_id', 'aid'],
  timestamp: ['timestamp', 'ts', 'time', 'event_time', 'datetime', 'date'],
  type: ['type', 'event', 'event_type', 'action', 'behavior', 'behaviour'],
  value: ['value', 'rating', 'score'],
  category: ['categoryl1', 'category', 'category_id', 'categoryid', 'genre'],
} as const;

/** Lower-cased event names of public logs and their type here. */
export const TYPE_SYNONYMS: Readonly<Record<string, EventType>> = {
  view: 'view',
  pv: 'view',
  detail: 'view',
  click: 'click',
  clicks: 'click',
  like: 'like',
  fav: 'like',
  favorite: 'like',
  add_to_cart: 'add_to_cart',
  addtocart: 'add_to_cart',
  cart: 'add_to_cart',
  carts: 'add_to_cart',
  purchase: 'purchase',
  buy: 'purchase',
  order: 'purchase',
  orders: 'purchase',
  transaction: 'purchase',
};

/** Lower-cased CSV event names that are no interaction with the item: rows skipped. */
export const IGNORED_TYPES: ReadonlySet<string> = new Set(['remove_from_cart']);

const BAD_ID_CHARS = /[^A-Za-z0-9_.:@-]/g;

/** An id in the events' alphabet (at most 128 characters), or null when empty. */
export function cleanId(raw: string | undefined): string | null {
  const id = (raw ?? '').trim().replace(BAD_ID_CHARS, '_').slice(0, 128);
  return id === '' ? null : id;
}

/** Epoch ms of a timestamp cell, or NaN. */
export function parseTs(raw: string | number | undefined): number {
  if (typeof raw === 'number') return raw < 1e11 ? raw * 1000 : raw;
  const s = (raw ?? '').trim();
  if (/^\d+(\.\d+)?$/.test(s)) {
    const n = Number(s);
    return n < 1e11 ? Math.round(n * 1000) : Math.round(n);
  }
  return s === '' ? NaN : Date.parse(s);
}

/** The event type of a rating. */
export function ratingType(rating: number): EventType {
  return rating >= LIKE_RATING ? 'like' : 'view';
}

/** Guesses the format from the first non-empty line (and the file name for `::`). */
export function detectFormat(text: string): LogFormat {
  const first = text.slice(0, 4096).split(/\r?\n/, 2)[0] ?? '';
  if (first.trimStart().startsWith('{')) return 'otto-jsonl';
  if (first.includes('::')) return 'movielens-dat';
  if (first.includes('\t') && /^\s*\S+\t\S+\t[\d.]+\t\d+\s*$/.test(first)) return 'movielens-tab';
  return 'csv';
}

/** Parses a whole log; `format` overrides the guess. */
export function parseLog(text: string, name: string, format = detectFormat(text)): ParsedLog {
  switch (format) {
    case 'otto-jsonl':
      return parseOtto(text, name);
    case 'movielens-tab':
      return parseMovieLens(text, '\t', format);
    case 'movielens-dat':
      return parseMovieLens(text, '::', format);
    default:
      return parseCsv(text, name);
  }
}

function parseMovieLens(text: string, sep: string, format: LogFormat): ParsedLog {
  const events: LogEvent[] = [];
  let skipped = 0;
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const [u, i, r, t] = line.split(sep);
    const user = cleanId(u);
    const item = cleanId(i);
    const rating = Number(r);
    const ts = parseTs(t);
    if (!user || !item || !Number.isFinite(rating) || !Number.isFinite(ts)) {
      skipped++;
      continue;
    }
    events.push({ user, item, ts, type: ratingType(rating), value: rating });
  }
  return { format, events, skipped, categories: new Map() };
}

function parseOtto(text: string, name: string): ParsedLog {
  const events: LogEvent[] = [];
  let skipped = 0;
  text.split(/\r?\n/).forEach((line, n) => {
    if (line.trim() === '') return;
    let session: { session?: unknown; events?: unknown };
    try {
      session = JSON.parse(line) as typeof session;
    } catch (err) {
      throw new Error(`${name}:${n + 1}: bad JSON: ${(err as Error).message}`);
    }
    const user = cleanId(String(session.session ?? ''));
    for (const e of Array.isArray(session.events) ? session.events : []) {
      const { aid, ts, type } = (e ?? {}) as { aid?: unknown; ts?: unknown; type?: unknown };
      const item = cleanId(aid === undefined ? '' : String(aid));
      const at = typeof ts === 'number' ? ts : parseTs(String(ts ?? ''));
      const t = TYPE_SYNONYMS[String(type).toLowerCase()];
      if (!user || !item || !Number.isFinite(at) || !t) {
        skipped++;
        continue;
      }
      // OTTO times are ms (the Kaggle parquet copies use seconds: parseTs tells them apart).
      events.push({ user, item, ts: at < 1e11 ? at * 1000 : at, type: t });
    }
  });
  return { format: 'otto-jsonl', events, skipped, categories: new Map() };
}

function findColumn(header: string[], aliases: readonly string[]): number {
  for (const alias of aliases) {
    const i = header.indexOf(alias);
    if (i >= 0) return i;
  }
  return -1;
}

function parseCsv(text: string, name: string): ParsedLog {
  const lines = text.split(/\r?\n/);
  const headerLine = lines.find((l) => l.trim() !== '') ?? '';
  const sep = headerLine.includes('\t') && !headerLine.includes(',') ? '\t' : ',';
  const header = headerLine.split(sep).map((h) => h.trim().toLowerCase().replace(/^"|"$/g, ''));
  const col = Object.fromEntries(
    Object.entries(CSV_COLUMNS).map(([k, aliases]) => [k, findColumn(header, aliases)]),
  ) as Record<keyof typeof CSV_COLUMNS, number>;
  for (const need of ['user', 'item', 'timestamp'] as const) {
    if (col[need] < 0) {
      throw new Error(
        `${name}: no ${need} column in the header (${header.join(',')}); expected one of ${CSV_COLUMNS[need].join(', ')}`,
      );
    }
  }
  const events: LogEvent[] = [];
  const categories = new Map<string, string>();
  let skipped = 0;
  let seenHeader = false;
  for (const line of lines) {
    if (line.trim() === '') continue;
    if (!seenHeader) {
      seenHeader = true;
      continue;
    }
    const cells = line.split(sep);
    const user = cleanId(cells[col.user]);
    const item = cleanId(cells[col.item]);
    const ts = parseTs(cells[col.timestamp]);
    const rawType = col.type >= 0 ? (cells[col.type] ?? '').trim().toLowerCase() : '';
    if (
      cells.length < header.length ||
      !user ||
      !item ||
      !Number.isFinite(ts) ||
      IGNORED_TYPES.has(rawType)
    ) {
      skipped++;
      continue;
    }
    const rawValue = col.value >= 0 ? cells[col.value]?.trim() : undefined;
    const value = rawValue ? Number(rawValue) : NaN;
    let type: EventType = 'view';
    if (col.type >= 0) type = TYPE_SYNONYMS[rawType] ?? 'view';
    else if (Number.isFinite(value)) type = ratingType(value);
    const event: LogEvent = { user, item, ts, type };
    if (Number.isFinite(value)) event.value = value;
    events.push(event);
    const category = col.category >= 0 ? cleanId(cells[col.category]) : null;
    if (category) categories.set(item, category);
  }
  return { format: 'csv', events, skipped, categories };
}

/**
 * MovieLens `u.item` as itemId -> categoryL1, the first genre whose flag is set (genre names
 * in u.genre order, as `u.genre` lists them; "unknown" when none is set). The file is
 * ISO-8859-1: read it as latin1.
 */
export function parseMovieLensItems(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const cells = line.split('|');
    const id = cleanId(cells[0]);
    if (!id) continue;
    const flags = cells.slice(-MOVIELENS_GENRES.length);
    const k = flags.findIndex((f) => f.trim() === '1');
    out.set(id, cleanId(MOVIELENS_GENRES[k < 0 ? 0 : k]) ?? 'unknown');
  }
  return out;
}

/** The 19 genres of MovieLens 100K, in `u.genre` order (index = flag position). */
export const MOVIELENS_GENRES = [
  'unknown',
  'Action',
  'Adventure',
  'Animation',
  "Children's",
  'Comedy',
  'Crime',
  'Documentary',
  'Drama',
  'Fantasy',
  'Film-Noir',
  'Horror',
  'Musical',
  'Mystery',
  'Romance',
  'Sci-Fi',
  'Thriller',
  'War',
  'Western',
] as const;
