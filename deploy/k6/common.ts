/**
 * What the k6 scripts share: the scenarios (deploy/k6/scenarios.json, which `npm run bench:serve`
 * reads too), the base URLs, and the feed tokens minted beforehand by
 * `npm run -s token -- --users <n> > .local/k6-tokens.json` (k6 cannot sign them itself).
 */
export interface Scenarios {
  feed: {
    rates: number[];
    k6Rate: number;
    durationMs: number;
    warmupMs: number;
    users: number;
    preAllocatedVUs: number;
    maxVUs: number;
    targets: { p99Ms: number; atRate: number; peakPerSec: number; maxErrorRate: number };
  };
  live: {
    subscribers: number;
    eventRate: number;
    durationMs: number;
    targets: { pushP99Ms: number; eventToFrameP99Ms: number };
  };
  ingest: {
    rate: number;
    batchEvents: number;
    durationMs: number;
    preAllocatedVUs: number;
    maxVUs: number;
    targets: { p99Ms: number; maxErrorRate: number };
  };
}

/** Read once in the init context (paths are relative to this file). */
export const SCENARIOS: Scenarios = JSON.parse(open('./scenarios.json')) as Scenarios;

/** The feed server (RECSYS_SERVING_PORT) and the stream process's ingest (RECSYS_STREAM_PORT). */
export const SERVING_URL = __ENV.SERVING_URL || 'http://127.0.0.1:8080';
export const INGEST_URL = __ENV.INGEST_URL || 'http://127.0.0.1:8090';

/** userId -> token, from the setup step; the users are the generator's u0, u1, ... */
export function loadTokens(): Record<string, string> {
  const file = __ENV.TOKENS_FILE || '../../.local/k6-tokens.json';
  return JSON.parse(open(file)) as Record<string, string>;
}

/** A random v4 UUID (the event's idempotency key). */
export function uuid(): string {
  return 'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, (c) => {
    const r = (Math.random() * 16) | 0;
    return (c === 'x' ? r : (r & 0x3) | 0x8).toString(16);
  });
}

export const seconds = (ms: number): string => `${Math.round(ms / 1000)}s`;
