/**
 * WebSocket live-feed subscribers (`/v1/feed`, k6/websockets): each VU subscribes as one user,
 * takes the feed it gets on subscribing, then posts events for that user over HTTP and measures
 * the time from posting an event to the next feed frame (`event_to_frame`): ingest, Kafka, the
 * feature consumer, Redis and the push, end to end.
 *
 *   npm run -s token -- --users 1000 > .local/k6-tokens.json
 *   k6 run deploy/k6/live.ts                     # SUBSCRIBERS, DURATION_S to override
 *
 * k6/websockets sends no sub-protocol, so the token goes in the query: the feed server must run
 * with RECSYS_LIVE_QUERY_AUTH=1 (off by default: URLs land in logs). Events are posted with
 * each user's own token.
 */
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import type { Options } from 'k6/options';
import { clearInterval, setInterval, setTimeout } from 'k6/timers';
import { WebSocket } from 'k6/websockets';
import { INGEST_URL, loadTokens, SCENARIOS, SERVING_URL, seconds, uuid } from './common.ts';

const live = SCENARIOS.live;
const tokens = loadTokens();
const users = Object.keys(tokens);
const subscribers = Math.min(Number(__ENV.SUBSCRIBERS || live.subscribers), users.length);
const durationMs = Number(__ENV.DURATION_S || 0) * 1000 || live.durationMs;
/** Each subscriber's events, so all of them together post `live.eventRate` a second. */
const eventEveryMs = Math.max(50, Math.round((subscribers / live.eventRate) * 1000));

const eventToFrame = new Trend('event_to_frame', true);
const frames = new Counter('feed_frames');

export const options: Options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      vus: subscribers,
      iterations: 1,
      maxDuration: seconds(durationMs + 30_000),
    },
  },
  thresholds: {
    event_to_frame: [`p(99)<${live.targets.eventToFrameP99Ms}`],
    feed_frames: [`count>=${subscribers}`],
  },
};

export default function (): void {
  const user = users[(__VU - 1) % users.length] as string;
  // k6 ignores sub-protocols (where a browser passes the token): the token goes in the query,
  // which the server takes only with RECSYS_LIVE_QUERY_AUTH=1.
  const wsUrl = `${SERVING_URL.replace(/^http/, 'ws')}/v1/feed?token=${tokens[user]}`;
  const ws = new WebSocket(wsUrl);
  let postedAt = 0;
  let timer: number | null = null;

  ws.addEventListener('message', () => {
    frames.add(1);
    if (postedAt > 0) {
      eventToFrame.add(Date.now() - postedAt);
      postedAt = 0;
    }
  });
  ws.addEventListener('open', () => {
    timer = setInterval(() => {
      postedAt = Date.now();
      const res = http.post(
        `${INGEST_URL}/v1/events`,
        JSON.stringify({
          eventId: uuid(),
          userId: user,
          itemId: `i${1 + Math.floor(Math.random() * 5000)}`,
          type: 'click',
          ts: postedAt,
        }),
        {
          headers: {
            'content-type': 'application/json',
            authorization: `Bearer ${tokens[user] as string}`,
          },
          tags: { name: 'events' },
        },
      );
      check(res, { 'event accepted': (r) => r.status === 202 });
    }, eventEveryMs);
    setTimeout(() => {
      if (timer) clearInterval(timer);
      ws.close();
    }, durationMs);
  });
}
