/**
 * HTTP event ingest (`POST /v1/events`, batches of `ingest.batchEvents`) at a fixed arrival rate:
 *
 *   INGEST_TOKEN=$(cat .local/secrets/ingest-token) k6 run deploy/k6/ingest.ts
 *                                                # RATE, DURATION_S, INGEST_URL to override
 *
 * INGEST_TOKEN is a service token of the stream process (RECSYS_INGEST_TOKENS; `npm run up`
 * makes one in .local/secrets/): the batches name many users.
 * Thresholds from scenarios.json `ingest.targets`: every batch acknowledged by Kafka (202)
 * within the p99 target. Events name the generator's users and items (u0..., i1...).
 */
import http from 'k6/http';
import { check } from 'k6';
import type { Options } from 'k6/options';
import { INGEST_URL, SCENARIOS, seconds, uuid } from './common.ts';

const ingest = SCENARIOS.ingest;
const INGEST_TOKEN = __ENV.INGEST_TOKEN || '';
const TYPES = ['view', 'view', 'view', 'click', 'add_to_cart', 'like', 'purchase'];

export const options: Options = {
  scenarios: {
    ingest: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || ingest.rate),
      timeUnit: '1s',
      duration: __ENV.DURATION_S ? `${__ENV.DURATION_S}s` : seconds(ingest.durationMs),
      preAllocatedVUs: ingest.preAllocatedVUs,
      maxVUs: ingest.maxVUs,
    },
  },
  thresholds: {
    http_req_duration: [`p(99)<${ingest.targets.p99Ms}`],
    http_req_failed: [`rate<${ingest.targets.maxErrorRate}`],
  },
};

export default function (): void {
  const now = Date.now();
  const events = Array.from({ length: ingest.batchEvents }, () => ({
    eventId: uuid(),
    userId: `u${Math.floor(Math.random() * 2000)}`,
    itemId: `i${1 + Math.floor(Math.random() * 5000)}`,
    type: TYPES[Math.floor(Math.random() * TYPES.length)],
    ts: now,
  }));
  const res = http.post(`${INGEST_URL}/v1/events`, JSON.stringify(events), {
    headers: { 'content-type': 'application/json', authorization: `Bearer ${INGEST_TOKEN}` },
    tags: { name: 'events' },
  });
  check(res, { 'status is 202': (r) => r.status === 202 });
}
