/** The Elasticsearch client (major pinned to the server's, 8) and its health check. */
import { Client } from '@elastic/elasticsearch';
import { DependencyUnavailableError } from '../core/index.js';

export type { Client as ElasticClient };

export function createElastic(url: string): Client {
  return new Client({ node: url, requestTimeout: 30_000, maxRetries: 3 });
}

export async function elasticHealth(client: Client, timeoutMs: number): Promise<void> {
  try {
    const health = await client.cluster.health({}, { requestTimeout: timeoutMs, maxRetries: 0 });
    if (health.status === 'red') throw new Error('cluster status is red');
  } catch (err) {
    throw new DependencyUnavailableError('elasticsearch', (err as Error).message, { cause: err });
  }
}
