/**
 * The feed over HTTP at a fixed arrival rate (open model: requests start on schedule whether or
 * not earlier ones answered), as operators run it against a deployment:
 *
 *   npm run -s token -- --users 2000 > .local/k6-tokens.json
 *   k6 run deploy/k6/feed.ts                     # RATE, DURATION_S, SERVING_URL to override
 *
 * Thresholds are our targets (scenarios.json `feed.targets`, the same numbers bench:serve
 * reports against): p99 under 10 ms at 2,000 feeds/s, under 1% errors.
 */
import http from 'k6/http';
import { check } from 'k6';
import type { Options } from 'k6/options';
import { loadTokens, SCENARIOS, SERVING_URL, seconds } from './common.ts';

const feed = SCENARIOS.feed;
const tokens = loadTokens();
const users = Object.keys(tokens).slice(0, feed.users);
const rate = Number(__ENV.RATE || feed.k6Rate);

export const options: Options = {
  scenarios: {
    feed: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: __ENV.DURATION_S ? `${__ENV.DURATION_S}s` : seconds(feed.durationMs),
      preAllocatedVUs: feed.preAllocatedVUs,
      maxVUs: feed.maxVUs,
    },
  },
  thresholds: {
    // The target holds at its rate; at another rate the p99 is reported, not judged.
    http_req_duration: rate <= feed.targets.atRate ? [`p(99)<${feed.targets.p99Ms}`] : [],
    http_req_failed: [`rate<${feed.targets.maxErrorRate}`],
    dropped_iterations: ['count==0'],
  },
};

export default function (): void {
  const user = users[Math.floor(Math.random() * users.length)] as string;
  const res = http.get(`${SERVING_URL}/v1/users/${encodeURIComponent(user)}/feed`, {
    headers: { authorization: `Bearer ${tokens[user]}` },
    tags: { name: 'feed' },
  });
  check(res, { 'status is 200': (r) => r.status === 200 });
}
