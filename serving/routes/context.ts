/** What the serving routes share: configuration, guards, the feed service and the metrics. */
import type { Config, Logger } from '../../core/index.js';
import type { FeedService } from '../feed/service.js';
import type { Guards } from '../guards.js';

/** What the server needs of the feed service (tests pass a double). */
export type ServingFeed = Pick<FeedService, 'getFeed' | 'readiness'> &
  Partial<Pick<FeedService, 'itemsChanged'>>;

export interface RouteContext {
  config: Readonly<Config>;
  log: Logger;
  guards: Guards;
  feed: ServingFeed;
  /** Records one answered request (`recsys_http_request_seconds`). */
  observe(route: string, status: number, startedAt: number): void;
  /** Counts a feed request shed at once (`recsys_feed_shed_total`). */
  shed(): void;
}
