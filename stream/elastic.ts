/**
 * The Elasticsearch client (major pinned to the server's, 8) and its health check. With
 * RECSYS_ES_API_KEY set every request carries `Authorization: ApiKey <key>`, as a cluster with
 * security on requires (the local integ-test distribution has no security module and ignores it).
 */
import { Client } from '@elastic/elasticsearch';
import { DependencyUnavailableError } from '../core/index.js';

export type { Client as ElasticClient };

/** Where Elasticsearch is and the API key (encoded form, '' for none) to send it. */
export interface ElasticConnection {
  url: string;
  apiKey: string;
}

export function createElastic(es: ElasticConnection): Client {
  return new Client({
    node: es.url,
    ...(es.apiKey ? { auth: { apiKey: es.apiKey } } : {}),
    requestTimeout: 30_000,
    maxRetries: 3,
  });
}

/** The header plain HTTP clients (fetch, curl) send for the same API key; none without one. */
export function elasticAuthHeaders(es: ElasticConnection): Record<string, string> {
  return es.apiKey ? { authorization: `ApiKey ${es.apiKey}` } : {};
}

export async function elasticHealth(client: Client, timeoutMs: number): Promise<void> {
  try {
    const health = await client.cluster.health({}, { requestTimeout: timeoutMs, maxRetries: 0 });
    if (health.status === 'red') throw new Error('cluster status is red');
  } catch (err) {
    throw new DependencyUnavailableError('elasticsearch', (err as Error).message, { cause: err });
  }
}
