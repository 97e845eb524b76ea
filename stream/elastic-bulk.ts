/**
 * Bulk `create` requests to Elasticsearch, shared by every caller in a process: documents from
 * concurrent callers (one per Kafka partition in flight) are gathered into requests of at most
 * `maxDocs`, with at most `maxInFlight` requests out at once. A request leaves as soon as a slot
 * is free, so a quiet indexer sends small bulks at once and a busy one sends full ones; callers
 * beyond that wait, which is the backpressure the consumer loop feels.
 *
 * Each document gets its own outcome:
 *   - `created` (201), or `duplicate` (409: a document with that `_id` exists, i.e. this one was
 *     indexed before; data streams only take `create`, so a redelivery lands here);
 *   - `rejected`: Elasticsearch will refuse it whatever happens (400: mapping or parse error,
 *     or an `_id` it cannot take); the caller dead-letters it;
 *   - `retry`: the document was fine but the cluster was not (429, 5xx, 401/403/404, no
 *     connection); the caller retries just these later.
 * The writer itself does not loop: the consumer loop retries a chunk with backoff while it
 * heartbeats, and the indexer resends only what is still missing.
 *
 * @example
 *   const writer = new BulkWriter({ client: es, maxDocs: 1000, maxInFlight: 2 });
 *   const results = await writer.write([{ index: 'logs-recsys.events-default', id, source }]);
 */
import { errors, type estypes } from '@elastic/elasticsearch';
import { RecsysError } from '../core/index.js';
import type { ElasticClient } from './elastic.js';

export interface BulkItem {
  /** Target data stream or index. */
  index: string;
  /** Document `_id`: 1..512 bytes, or the item is rejected without being sent. */
  id: string;
  /** The document, serialized once (resends reuse it). */
  source: string;
}

/** Why a document was not indexed: the item's (or the request's) status and error. */
export interface ItemFailure {
  status: number;
  type: string;
  reason: string;
}

export type ItemResult =
  | { outcome: 'created' }
  | { outcome: 'duplicate' }
  | ({ outcome: 'rejected' } & ItemFailure)
  | ({ outcome: 'retry' } & ItemFailure);

export interface BulkWriterOptions {
  client: ElasticClient;
  /** Most documents in one bulk request. */
  maxDocs: number;
  /** Most bulk requests in flight at once. */
  maxInFlight: number;
  /** Observes every request: its duration, documents, and whether any needs a retry. */
  onBulk?: (seconds: number, docs: number, incomplete: boolean) => void;
}

/** A bulk request Elasticsearch refused as a whole (400, 413): resending cannot help. */
export class ElasticsearchRefusedError extends RecsysError {
  readonly status: number;
  constructor(status: number, message: string, options: { cause?: unknown } = {}) {
    super('RECSYS_ES_REQUEST_REFUSED', `elasticsearch: HTTP ${status}: ${message}`, options);
    this.status = status;
  }
}

/** Elasticsearch refuses a bulk whose `_id` passes 512 bytes as a whole, so it never goes out. */
const MAX_ID_BYTES = 512;

// The response keeps only what the outcome needs: at 1,000 documents per bulk, parsing full
// item bodies (index, _id, _version, _shards, ...) is most of the client's work.
const FILTER_PATH = ['errors', 'items.*.status', 'items.*.error.type', 'items.*.error.reason'];

/** HTTP status of a client error, or undefined when no response came. */
function statusOf(err: unknown): number | undefined {
  return err instanceof errors.ResponseError ? err.statusCode : undefined;
}

/**
 * Whether an Elasticsearch client error is worth another attempt: no response, a timeout, 429
 * and 5xx are; so are 401/403/404/408, which name the cluster's state (credentials, a closed or
 * missing index) rather than the request. A 400 or 413 is the request's own fault.
 */
export function elasticRetriable(err: unknown): boolean {
  if (err instanceof RecsysError) return err.retriable;
  const status = statusOf(err);
  if (status === undefined) return err instanceof errors.ElasticsearchClientError;
  return !(status === 400 || status === 413);
}

interface Queued {
  item: BulkItem;
  settle: (result: ItemResult) => void;
  fail: (err: Error) => void;
}

export class BulkWriter {
  readonly #opts: BulkWriterOptions;
  #queue: Queued[] = [];
  #inFlight = 0;

  constructor(options: BulkWriterOptions) {
    this.#opts = options;
  }

  /** Resolves with one outcome per item, in order, once every item has one. */
  write(items: readonly BulkItem[]): Promise<ItemResult[]> {
    if (items.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      const results = new Array<ItemResult>(items.length);
      let left = items.length;
      let failed = false;
      const fail = (err: Error): void => {
        if (failed) return;
        failed = true;
        reject(err);
      };
      items.forEach((item, i) => {
        const idBytes = Buffer.byteLength(item.id);
        if (idBytes === 0 || idBytes > MAX_ID_BYTES) {
          results[i] = {
            outcome: 'rejected',
            status: 400,
            type: 'invalid_id',
            reason: `document _id of ${idBytes} bytes (Elasticsearch takes 1..${MAX_ID_BYTES})`,
          };
          if (--left === 0) resolve(results);
          return;
        }
        this.#queue.push({
          item,
          settle: (r) => {
            results[i] = r;
            if (--left === 0 && !failed) resolve(results);
          },
          fail,
        });
      });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.#opts.maxInFlight && this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.#opts.maxDocs);
      this.#inFlight++;
      void this.#send(batch).finally(() => {
        this.#inFlight--;
        this.#pump();
      });
    }
  }

  async #send(batch: Queued[]): Promise<void> {
    const operations = new Array<string>(batch.length * 2);
    batch.forEach(({ item }, i) => {
      operations[2 * i] =
        `{"create":{"_index":${JSON.stringify(item.index)},"_id":${JSON.stringify(item.id)}}}`;
      operations[2 * i + 1] = item.source;
    });
    const t0 = performance.now();
    let response: estypes.BulkResponse;
    try {
      // No client-side retries: a retry resends only the documents still missing (see above).
      response = await this.#opts.client.bulk<string>(
        { operations, filter_path: FILTER_PATH },
        { maxRetries: 0 },
      );
    } catch (err) {
      this.#opts.onBulk?.((performance.now() - t0) / 1000, batch.length, true);
      const status = statusOf(err);
      if (!elasticRetriable(err)) {
        const refused =
          status === undefined
            ? (err as Error)
            : new ElasticsearchRefusedError(status, (err as Error).message, { cause: err });
        for (const q of batch) q.fail(refused);
        return;
      }
      const result: ItemResult = {
        outcome: 'retry',
        status: status ?? 0,
        type: (err as Error).name,
        reason: (err as Error).message,
      };
      for (const q of batch) q.settle(result);
      return;
    }
    const items = response.items ?? [];
    let incomplete = items.length !== batch.length;
    batch.forEach((q, i) => {
      const entry = items[i];
      const r = entry ? Object.values(entry)[0] : undefined;
      if (!r) {
        incomplete = true;
        q.settle({ outcome: 'retry', status: 0, type: 'missing_item', reason: 'no bulk result' });
        return;
      }
      const status = r.status;
      if (status === 200 || status === 201) q.settle({ outcome: 'created' });
      else if (status === 409) q.settle({ outcome: 'duplicate' });
      else {
        const type = r.error?.type ?? 'unknown';
        const reason = r.error?.reason ?? `HTTP ${status}`;
        if (status === 400) q.settle({ outcome: 'rejected', status, type, reason });
        else {
          incomplete = true;
          q.settle({ outcome: 'retry', status, type, reason });
        }
      }
    });
    this.#opts.onBulk?.((performance.now() - t0) / 1000, batch.length, incomplete);
  }
}
