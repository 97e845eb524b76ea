/**
 * TypeScript mirrors of the Avro contracts in this folder (`*.avsc`). Avro `["null", T]` unions
 * map to `T | null`, `long` (including timestamp-millis) to `number`, `bytes` to `Buffer`.
 * `test/unit/schemas/avro.test.ts` round-trips values of these types through the schemas and
 * compares the enum symbols, so the two cannot drift apart silently.
 */

/** Symbols of `recsys.EventType`, in schema order. */
export const EVENT_TYPES = ['view', 'click', 'add_to_cart', 'like', 'purchase'] as const;
/** What the user did to the item. */
export type EventType = (typeof EVENT_TYPES)[number];

/** Symbols of `recsys.EventSource`, in schema order. */
export const EVENT_SOURCES = ['mqtt', 'http'] as const;
/** The ingest path an event or rejected payload arrived on. */
export type EventSource = (typeof EVENT_SOURCES)[number];

/** `recsys.EventContext`: where the event happened in the client UI. */
export interface EventContext {
  /** Page or screen name, at most 256 characters. */
  page: string | null;
  /** Zero-based slot of the item in the list shown, 0..10000 (Avro `int`). */
  position: number | null;
  /** Device class or name, at most 64 characters. */
  device: string | null;
}

/** `recsys.UserEvent`: value of the events topic (key = userId). */
export interface UserEvent {
  /** Client-made UUID, kept exactly as sent; the idempotency key. */
  eventId: string;
  /** 1..128 characters from `[A-Za-z0-9_.:@-]`. */
  userId: string;
  /** Client session, or null when the client sent none. */
  sessionId: string | null;
  /** 1..128 characters from `[A-Za-z0-9_.:@-]`. */
  itemId: string;
  type: EventType;
  /** When the event happened on the client, epoch ms. */
  ts: number;
  context: EventContext | null;
  /** Finite amount (e.g. price paid), or null. */
  value: number | null;
  /** When the bridge accepted the event, epoch ms. */
  receivedAt: number;
  source: EventSource;
}

/** `recsys.ServedItem`: one item of a served feed, in the order shown. */
export interface ServedItem {
  itemId: string;
  /** Reranker score; higher ranks first. */
  score: number;
  /** Candidate generator that proposed the item, e.g. `batch`, `realtime`, `trending`. */
  source: string;
}

/** `recsys.ServedFeed`: value of the served topic, one per feed served. */
export interface ServedFeed {
  requestId: string;
  userId: string;
  /** When the feed was served, epoch ms. */
  ts: number;
  items: ServedItem[];
  modelVersion: string;
  /** Time spent building the feed, milliseconds. */
  latencyMs: number;
  /** Every candidate with its features as served, on a sampled share of feeds; else null. */
  candidates?: LoggedCandidates | null;
}

/** `recsys.LoggedCandidates`: a feed's candidate rows as the reranker saw them. */
export interface LoggedCandidates {
  featureNames: string[];
  /** The candidates, in row order. */
  itemIds: string[];
  /** float32 little-endian, row-major, itemIds.length x featureNames.length. */
  features: Buffer;
}

/** `recsys.DlqRecord`: value of the DLQ topic, one per rejected payload. */
export interface DlqRecord {
  /** Stable snake_case reason code, e.g. a `RejectReason` from `validate.ts`. */
  reason: string;
  message: string;
  /** Offending field path (e.g. `context.position`), or null for the payload as a whole. */
  field: string | null;
  /** Avro `string` holding one of the {@link EVENT_SOURCES}. */
  source: EventSource;
  /** MQTT topic, or null for HTTP. */
  topic: string | null;
  /** Best-effort owner of the payload, or null when unknown. */
  userId: string | null;
  /** When the bridge received the payload, epoch ms. */
  receivedAt: number;
  /** The raw payload exactly as received. */
  original: Buffer;
}
