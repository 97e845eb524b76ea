/**
 * The feed service's metrics, created once per registry. Children with fixed labels are kept so
 * the request path increments without a label lookup.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { SOURCES, type CandidateSource } from '../rank-features.js';

type Child = ReturnType<Counter['labels']>;

export interface FeedMetrics {
  rerankSeconds: Histogram;
  buildSeconds: Histogram;
  bySource: Record<CandidateSource, Child>;
  rankedFeeds: Child;
  unrankedFeeds: Child;
  userCacheHits: Child;
  userCacheMisses: Child;
  fallbackFeeds: Counter;
}

export function createFeedMetrics(registry: Registry): FeedMetrics {
  const candidatesTotal = new Counter({
    name: 'recsys_feed_candidates_total',
    help: 'candidates proposed to the reranker, by source (an item from several counts once per source)',
    labelNames: ['source'],
    registers: [registry],
  });
  const feedsTotal = new Counter({
    name: 'recsys_feeds_total',
    help: 'feeds built, by whether a model ranked them',
    labelNames: ['ranked'],
    registers: [registry],
  });
  const userCacheTotal = new Counter({
    name: 'recsys_feed_user_cache_total',
    help: "feeds whose user's batch candidates were in memory (hit) or read from Redis (miss)",
    labelNames: ['result'],
    registers: [registry],
  });
  return {
    rerankSeconds: new Histogram({
      name: 'recsys_rerank_seconds',
      help: 'feature filling and ONNX scoring of one feed, seconds',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
      registers: [registry],
    }),
    buildSeconds: new Histogram({
      name: 'recsys_feed_build_seconds',
      help: 'building one feed end to end (Redis reads, mixing, reranking), seconds',
      buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    bySource: Object.fromEntries(SOURCES.map((s) => [s, candidatesTotal.labels(s)])) as Record<
      CandidateSource,
      Child
    >,
    rankedFeeds: feedsTotal.labels('true'),
    unrankedFeeds: feedsTotal.labels('false'),
    userCacheHits: userCacheTotal.labels('hit'),
    userCacheMisses: userCacheTotal.labels('miss'),
    fallbackFeeds: new Counter({
      name: 'recsys_feed_fallbacks_total',
      help: 'feeds answered with the last popular or trending list from memory because Redis failed or was late (model version "fallback")',
      registers: [registry],
    }),
  };
}
