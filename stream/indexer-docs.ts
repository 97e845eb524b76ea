/**
 * What the Elasticsearch indexer writes: one data stream per Kafka topic
 * (`logs-recsys.<stream>-<namespace>`), the composable index template of each, and the builders
 * that turn a decoded Kafka value into its document. Templates and builders live together so
 * they cannot drift: `test/unit/stream/indexer-docs.test.ts` walks every document a builder makes
 * and requires each field to be mapped, and the Kibana saved objects are checked against the
 * same templates.
 *
 * Field names follow ECS (`@timestamp`, `event.*`, `user.id`, `user_agent.device.name`,
 * `error.*`, `data_stream.*`); what ECS has no field for lives under `recsys.*`. Mappings are
 * `dynamic: strict`: a field the template does not know makes Elasticsearch reject the document
 * (it then goes to the DLQ) instead of being stored unsearchable without anyone noticing.
 * Only core field types are used (no `constant_keyword`, `match_only_text`, `wildcard`), because
 * the integ-test distribution `deploy/local` runs lacks the modules that provide them.
 *
 * Dates are written as epoch milliseconds, which `date` accepts as they are; `toISOString()`
 * would throw on an out-of-range `ts` a hostile producer wrote straight into Kafka.
 *
 * @example
 *   await installTemplates(es, 'default', log);
 *   const { id, doc } = eventDocument(event, { namespace: 'default', now: Date.now() });
 */
import type { estypes } from '@elastic/elasticsearch';
import type { ElasticClient } from './elastic.js';
import { ConfigError, type Logger } from '../core/index.js';
import type { DlqRecord, ServedFeed, UserEvent } from '../schemas/index.js';

/** The data streams the indexer writes, one per consumed topic. */
export type StreamName = 'events' | 'served' | 'dlq';
export const STREAMS: readonly StreamName[] = ['events', 'served', 'dlq'];

/** `logs-recsys.<stream>-<namespace>`: the `logs-<dataset>-<namespace>` data stream scheme. */
export function dataStreamName(stream: StreamName, namespace: string): string {
  return `logs-recsys.${stream}-${namespace}`;
}

/**
 * Data stream namespaces follow the Elastic naming rules: lowercase, no `-` (it separates the
 * parts of the name), at most 100 bytes. Checked once at start with the variable's name.
 */
export function checkNamespace(namespace: string): void {
  if (!/^[a-z0-9_.]{1,100}$/.test(namespace) || namespace.startsWith('.')) {
    throw new ConfigError(
      'RECSYS_ES_NAMESPACE',
      `"${namespace}" is not a data stream namespace (1..100 of [a-z0-9_.], not starting with ".")`,
    );
  }
}

/** Retention of every recsys data stream. Elasticsearch is the exploration copy; Kafka and the
 * Parquet lake hold the log itself. */
export const RETENTION = '30d';

/**
 * Bumped whenever a mapping changes; `installTemplates` writes the templates on every start
 * anyway, the number tells an operator which indexer version installed what they see.
 */
const TEMPLATE_VERSION = 1;

type Properties = Record<string, estypes.MappingProperty>;

const keyword = { type: 'keyword' } as const;
const date = { type: 'date' } as const;
const obj = (properties: Properties): estypes.MappingProperty => ({ properties });

/** Fields every recsys document carries. */
const COMMON: Properties = {
  '@timestamp': date,
  data_stream: obj({ type: keyword, dataset: keyword, namespace: keyword }),
};

/** `event.*` fields every stream writes; each stream adds its own. */
const EVENT_COMMON: Properties = {
  kind: keyword,
  action: keyword,
  dataset: keyword,
  ingested: date,
};

const MAPPINGS: Readonly<Record<StreamName, Properties>> = {
  events: {
    ...COMMON,
    event: obj({ ...EVENT_COMMON, id: keyword, created: date }),
    user: obj({ id: keyword }),
    user_agent: obj({ device: obj({ name: keyword }) }),
    recsys: obj({
      item_id: keyword,
      session_id: keyword,
      page: keyword,
      position: { type: 'integer' },
      value: { type: 'double' },
      source: keyword,
    }),
  },
  served: {
    ...COMMON,
    // event.duration: feed build time in nanoseconds, as ECS defines it.
    event: obj({ ...EVENT_COMMON, id: keyword, duration: { type: 'long' } }),
    user: obj({ id: keyword }),
    recsys: obj({
      model_version: keyword,
      items_count: { type: 'integer' },
      // An object array, not `nested`: Lens cannot aggregate nested fields, and "how often was
      // item X shown" is a terms aggregation on recsys.items.item_id either way.
      items: obj({ item_id: keyword, score: { type: 'float' }, source: keyword }),
    }),
  },
  dlq: {
    ...COMMON,
    event: obj({ ...EVENT_COMMON, created: date }),
    error: obj({ code: keyword, message: { type: 'text' } }),
    user: obj({ id: keyword }),
    recsys: obj({
      source: keyword,
      dlq: obj({
        field: keyword,
        mqtt_topic: keyword,
        // Kept for reading, never searched: `binary` is stored in _source only.
        original: { type: 'binary' },
        original_bytes: { type: 'integer' },
        original_truncated: { type: 'boolean' },
      }),
      // Where the DLQ record sits in Kafka, to fetch the full original: kcat -p P -o O -c 1.
      kafka: obj({ topic: keyword, partition: { type: 'integer' }, offset: { type: 'long' } }),
    }),
  },
};

/** One composable index template, as `PUT _index_template/<name>` takes it. */
export type IndexTemplate = estypes.IndicesPutIndexTemplateRequest & {
  name: string;
  index_patterns: string[];
  template: { mappings: { dynamic: 'strict'; properties: Properties } };
};

function template(stream: StreamName): IndexTemplate {
  return {
    name: `logs-recsys.${stream}`,
    index_patterns: [`logs-recsys.${stream}-*`],
    data_stream: {},
    // Above the built-in `logs` template (priority 100, `logs-*-*`), which would otherwise
    // claim these streams with its dynamic mappings.
    priority: 200,
    allow_auto_create: true,
    version: TEMPLATE_VERSION,
    _meta: { managed_by: 'recsys', description: `recsys ${stream} (stream/indexer-docs.ts)` },
    template: {
      settings: {
        number_of_shards: 1,
        // One replica where there is a second node, none on a single-node cluster (green).
        auto_expand_replicas: '0-1',
        codec: 'best_compression',
      },
      lifecycle: { data_retention: RETENTION },
      mappings: { dynamic: 'strict', properties: MAPPINGS[stream] },
    },
  };
}

export const INDEX_TEMPLATES: Readonly<Record<StreamName, IndexTemplate>> = {
  events: template('events'),
  served: template('served'),
  dlq: template('dlq'),
};

/**
 * Puts the templates (idempotent), then adds their mappings to the write index of data streams
 * that already exist: a template only shapes backing indices created after it, and with strict
 * mappings a new field would otherwise be rejected until the next rollover. A mapping change
 * Elasticsearch cannot apply in place (a changed type) is logged; it takes effect at rollover.
 */
export async function installTemplates(
  es: ElasticClient,
  namespace: string,
  log: Logger,
): Promise<void> {
  for (const stream of STREAMS) {
    await es.indices.putIndexTemplate(INDEX_TEMPLATES[stream]);
  }
  for (const stream of STREAMS) {
    const index = dataStreamName(stream, namespace);
    try {
      await es.indices.putMapping({
        index,
        write_index_only: true,
        ...INDEX_TEMPLATES[stream].template.mappings,
      });
    } catch (err) {
      const status = (err as { meta?: { statusCode?: number } }).meta?.statusCode;
      if (status === 404) continue; // created with the template on the first write
      if (status === 400) {
        log.error(
          { index, err: (err as Error).message },
          'mapping of the existing data stream differs in a way that needs a rollover',
        );
        continue;
      }
      throw err;
    }
  }
  log.info({ templates: STREAMS.map((s) => INDEX_TEMPLATES[s].name) }, 'index templates installed');
}

// ------------------------------------------------------------------------------------ documents

/** What a builder returns: the document `_id` (the idempotency key) and its body. */
export interface EsDocument {
  id: string;
  doc: Record<string, unknown>;
}

export interface DocContext {
  namespace: string;
  /** When the indexer built the document, epoch ms (`event.ingested`). */
  now: number;
}

function dataStream(stream: StreamName, namespace: string) {
  return { type: 'logs', dataset: `recsys.${stream}`, namespace };
}

/** A user event; `_id` = eventId, so a redelivered event is a version conflict, not a copy. */
export function eventDocument(e: UserEvent, ctx: DocContext): EsDocument {
  const ctxt = e.context;
  const recsys: Record<string, unknown> = { item_id: e.itemId, source: e.source };
  if (e.sessionId !== null) recsys.session_id = e.sessionId;
  if (ctxt?.page != null) recsys.page = ctxt.page;
  if (ctxt?.position != null) recsys.position = ctxt.position;
  if (e.value !== null) recsys.value = e.value;
  const doc: Record<string, unknown> = {
    '@timestamp': e.ts,
    data_stream: dataStream('events', ctx.namespace),
    event: {
      id: e.eventId,
      kind: 'event',
      action: e.type,
      dataset: 'recsys.events',
      created: e.receivedAt,
      ingested: ctx.now,
    },
    user: { id: e.userId },
    recsys,
  };
  if (ctxt?.device != null) doc.user_agent = { device: { name: ctxt.device } };
  return { id: e.eventId, doc };
}

/** One served feed; `_id` = requestId. */
export function servedDocument(f: ServedFeed, ctx: DocContext): EsDocument {
  const event: Record<string, unknown> = {
    id: f.requestId,
    kind: 'event',
    action: 'feed_served',
    dataset: 'recsys.served',
    ingested: ctx.now,
  };
  // ECS durations are nanoseconds; a NaN or infinite latency is left out rather than invented.
  if (Number.isFinite(f.latencyMs)) event.duration = Math.round(f.latencyMs * 1e6);
  return {
    id: f.requestId,
    doc: {
      '@timestamp': f.ts,
      data_stream: dataStream('served', ctx.namespace),
      event,
      user: { id: f.userId },
      recsys: {
        model_version: f.modelVersion,
        items_count: f.items.length,
        items: f.items.map((i) => ({ item_id: i.itemId, score: i.score, source: i.source })),
      },
    },
  };
}

/** Bytes of a dead letter's original payload kept in Elasticsearch (the DLQ topic has all). */
export const DLQ_ORIGINAL_KEEP_BYTES = 8192;
/** Longest string a dead-letter document keeps per field: what is dead-lettered is often the
 * oversized value itself, and a keyword over 32 KiB would get the dead letter rejected too. */
const DLQ_TEXT_KEEP = 1024;

const clip = (s: string | null): string | null =>
  s === null || s.length <= DLQ_TEXT_KEEP ? s : `${s.slice(0, DLQ_TEXT_KEEP)}…`;

export interface DlqCoordinates {
  topic: string;
  partition: number;
  offset: string;
  /** Content hash of the DLQ record's value bytes: its `_id`. */
  digest: string;
}

/**
 * A dead letter. Its `_id` is a digest of the DLQ record's bytes: the indexer writes the same
 * bytes again when a replay dead-letters the same record twice (its `receivedAt` is the Kafka
 * timestamp of the original, not the time of the replay), so the copy collapses into one
 * document, while two receipts of one payload (different `receivedAt`) stay two.
 */
export function dlqDocument(d: DlqRecord, at: DlqCoordinates, ctx: DocContext): EsDocument {
  const original = d.original;
  const kept = original.subarray(0, DLQ_ORIGINAL_KEEP_BYTES);
  const recsys: Record<string, unknown> = {
    source: clip(d.source),
    dlq: {
      field: clip(d.field),
      mqtt_topic: clip(d.topic),
      original: kept.toString('base64'),
      original_bytes: original.length,
      original_truncated: kept.length < original.length,
    },
    kafka: { topic: at.topic, partition: at.partition, offset: Number(at.offset) },
  };
  const doc: Record<string, unknown> = {
    '@timestamp': d.receivedAt,
    data_stream: dataStream('dlq', ctx.namespace),
    event: {
      kind: 'event',
      action: 'dead_lettered',
      dataset: 'recsys.dlq',
      created: d.receivedAt,
      ingested: ctx.now,
    },
    error: { code: clip(d.reason), message: clip(d.message) },
    recsys,
  };
  if (d.userId !== null) doc.user = { id: clip(d.userId) };
  return { id: at.digest, doc };
}

/**
 * Document field → the payload field it came from, so a dead letter names the field the way
 * producers know it (`DlqRecord.field`, e.g. `context.position`).
 */
export const PAYLOAD_FIELDS: Readonly<Record<'events' | 'served', Record<string, string>>> = {
  events: {
    '@timestamp': 'ts',
    'event.id': 'eventId',
    'event.action': 'type',
    'event.created': 'receivedAt',
    'user.id': 'userId',
    'user_agent.device.name': 'context.device',
    'recsys.item_id': 'itemId',
    'recsys.session_id': 'sessionId',
    'recsys.page': 'context.page',
    'recsys.position': 'context.position',
    'recsys.value': 'value',
    'recsys.source': 'source',
  },
  served: {
    '@timestamp': 'ts',
    'event.id': 'requestId',
    'event.duration': 'latencyMs',
    'user.id': 'userId',
    'recsys.model_version': 'modelVersion',
    'recsys.items.item_id': 'items.itemId',
    'recsys.items.score': 'items.score',
    'recsys.items.source': 'items.source',
  },
};
