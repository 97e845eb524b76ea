/**
 * The feed service: builds, ranks and returns one user's feed (`pipeline.ts`), and logs every
 * feed served. The HTTP/WebSocket server calls {@link FeedService.getFeed}; nothing here knows
 * about HTTP. It owns the process's model holder (polling the registry), the served-log
 * producer, the caches (`caches.ts`) and the warm-up (`warm-up.ts`).
 *
 * Without a model (no champion in the registry, or none loadable) `getFeed` orders by the
 * heuristic blend, with `modelVersion` "blend"; `readiness` then reports `model` as degraded.
 * /readyz answers 503 while a champion is still loading, and until the warm-up feeds were built.
 * A feed Redis fails, or that is late, is the fallback list from memory (`fallback.ts`).
 *
 * @example
 *   const feeds = startFeedService({ config, log, metrics });
 *   const feed = await feeds.getFeed('u42', 20);
 */
import type { Registry } from 'prom-client';
import { checkHealth, type Config, type HealthReport, type Logger } from '../../core/index.js';
import { CandidateStore } from '../../store/candidates.js';
import { NewItemsStore } from '../../store/new-items.js';
import { CatalogStore } from '../../store/catalog.js';
import { OnlineNeighbourStore } from '../../store/online-neighbours.js';
import { createRedis, redisHealth, type RedisClient } from '../../store/redis.js';
import { openRegistry } from '../../store/registry/index.js';
import { TrendingStore } from '../../store/trending.js';
import { ImpressionStore } from '../../store/impressions.js';
import { startModelHolder } from '../model.js';
import { startServedLog } from '../served-log.js';
import { FeedCaches } from './caches.js';
import { createFeedMetrics } from './metrics.js';
import { feedOrFallback } from './fallback.js';
import { buildFeed, MatrixPool, type Feed, type FeedContext } from './pipeline.js';
import { startWarmUp } from './warm-up.js';

export { NO_MODEL_VERSION, type Feed, type FeedItem } from './pipeline.js';
export { FALLBACK_VERSION } from './fallback.js';

export interface FeedService {
  /** Builds, ranks and returns a user's feed; the served record is written to Kafka asynchronously (off the request path). */
  getFeed(userId: string, limit: number): Promise<Feed>;
  /** Named checks for /readyz: redis, model (a model is loaded; degraded while the blend ranks), warm, and kafka (served-log producer; optional: degraded, still ready). */
  readiness(): Promise<HealthReport>;
  /** Current model version, or null before one is loaded. */
  modelVersion(): string | null;
  /**
   * Catalog entries changed (CATALOG_CHANNEL): their cached copies are dropped; with no ids,
   * every cached entry is (change messages may have been missed).
   */
  itemsChanged(itemIds?: readonly string[]): void;
  close(): Promise<void>;
}

export interface FeedDeps {
  config: Readonly<Config>;
  log: Logger;
  metrics: Registry;
  /** A Redis connection to use (not closed by the service); one is created when absent. */
  redis?: RedisClient;
}

export function startFeedService(deps: FeedDeps): FeedService {
  const { config, metrics } = deps;
  const log = deps.log.child({ component: 'feed' });
  const ownRedis = deps.redis === undefined;
  const redis =
    deps.redis ?? createRedis(config.redis.url, 'recsys-serving', { coalesceWrites: true });
  const candidates = new CandidateStore(redis);
  const stores = {
    candidates,
    online: new OnlineNeighbourStore(redis),
    // Catalog reads only: the item table keeps the entries (as columns).
    catalog: new CatalogStore(redis, { cacheTtlMs: 0, cacheSize: 0 }),
    trending: new TrendingStore(redis, config.trending),
    newItems: new NewItemsStore(redis),
  };
  const models = startModelHolder({
    registry: openRegistry(config.batch, log),
    log,
    metrics,
    pollMs: config.serving.modelPollMs,
  });
  const served = startServedLog({ config, log, metrics });
  const ctx: FeedContext = {
    config,
    redis,
    candidates,
    impressions: new ImpressionStore(redis),
    caches: new FeedCaches(stores, config, log),
    models,
    served,
    metrics: createFeedMetrics(metrics),
    pool: new MatrixPool(),
    liveVersion: null,
  };
  const warmUp = startWarmUp({
    log,
    redis,
    models,
    build: (userId, limit) => buildFeed(ctx, userId, limit, false),
  });

  return {
    getFeed: (userId, limit) => feedOrFallback(ctx, userId, limit),
    readiness: () =>
      checkHealth(
        {
          redis: () => redisHealth(redis, config.healthTimeoutMs),
          model: () => {
            const mode = models.mode();
            if (mode === 'blend') throw new Error('no model promoted: the heuristic blend ranks');
            if (mode === 'loading') throw new Error('no model loaded yet');
          },
          kafka: () => served.check(),
          warm: () => {
            if (!warmUp.done()) {
              throw new Error('warming up (no model yet, or building warm-up feeds)');
            }
          },
        },
        config.healthTimeoutMs,
        // Feeds do not need Kafka: without the served log the server answers, degraded; nor a
        // model, once the registry said there is none to load.
        models.mode() === 'blend' ? ['kafka', 'model'] : ['kafka'],
      ),
    modelVersion: () => models.version(),
    itemsChanged: (itemIds) => ctx.caches.itemsChanged(itemIds),
    async close() {
      warmUp.stop();
      await models.close();
      await served.close();
      if (ownRedis) redis.disconnect();
    },
  };
}
