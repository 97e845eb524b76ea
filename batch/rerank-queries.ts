/**
 * Rebuilt training queries (steps 1, 3 and 4 of `rerank.ts`, used while the served log holds
 * too few labelled feeds): the queries of the selected users, each query's candidates mixed as
 * the server mixes them, and their features through the shared module.
 */
import type { EventType } from '../schemas/index.js';
import type { SessionFeatures } from '../store/session-features.js';
import { covisDivisor } from '../serving/mix.js';
import { keyedBy, profileScores } from '../serving/profile.js';
import {
  FEATURE_COUNT,
  fillFeatures,
  userPriceLevel,
  type CandidateSource,
  type RankCandidate,
} from '../serving/rank-features.js';
import { EMPTY_LIST } from '../serving/scored-list.js';
import type { TrainingInputs, UserData } from './rerank-inputs.js';

/** One ranking query: whose, the events before it, when, and what came next (the labels). */
export interface Query {
  key: string;
  kind: 'cutoff' | 'history';
  user: UserData;
  events: UserData['events'];
  at: number;
  labels: Map<string, EventType[]>;
}

/** Step 1: the cut-off query of each user with validation interactions, and history queries. */
export function queriesOf(inputs: TrainingInputs, cutoff: number, historyLabels: number): Query[] {
  const out: Query[] = [];
  for (const user of inputs.users.values()) {
    if (user.relevant.size > 0 && user.events.length > 0) {
      const key = `c:${user.id}`;
      out.push({
        key,
        kind: 'cutoff',
        user,
        events: user.events,
        at: cutoff,
        labels: user.relevant,
      });
    }
    const j = user.events.length - historyLabels;
    if (historyLabels > 0 && j > 1) {
      const labels = new Map<string, EventType[]>();
      for (const e of user.events.slice(j))
        labels.set(e.itemId, [...(labels.get(e.itemId) ?? []), e.type]);
      const at = (user.events[j] as UserData['events'][number]).ts;
      out.push({
        key: `h:${user.id}`,
        kind: 'history',
        user,
        events: user.events.slice(0, j),
        at,
        labels,
      });
    }
  }
  return out;
}

/**
 * Step 3: the same candidate mix the server builds, deduplicated, best score per source (no
 * batch source for history queries), without the items serving would leave out (the user's
 * purchased and consumed items at the query's time).
 */
export function candidatesOf(
  inputs: TrainingInputs,
  query: Query,
  recentK: number,
  session: SessionFeatures | null,
): RankCandidate[] {
  const byItem = new Map<string, Partial<Record<CandidateSource, number>>>();
  const excluded = new Set([...(session?.purchased ?? []), ...(session?.consumed ?? [])]);
  // Co-visitation sums over the recent items; the other sources keep their best score.
  const add = (itemId: string, source: CandidateSource, score: number): void => {
    if (excluded.has(itemId)) return;
    const s = byItem.get(itemId) ?? {};
    s[source] = source === 'covis' ? (s[source] ?? 0) + score : Math.max(s[source] ?? 0, score);
    byItem.set(itemId, s);
  };
  if (query.kind === 'cutoff') {
    for (const [itemId, score] of inputs.batchCands.get(query.user.id) ?? []) {
      add(itemId, 'batch', score);
    }
  }
  const recent = [...new Set(query.events.map((e) => e.itemId).reverse())].slice(0, recentK);
  recent.forEach((itemId, pos) => {
    const list = inputs.neighbours.get(itemId) ?? EMPTY_LIST;
    const divisor = covisDivisor(list.scores, pos);
    list.ids.forEach((nb, j) => add(nb, 'covis', (list.scores[j] as number) / divisor));
  });
  for (const [itemId, score] of inputs.trending) add(itemId, 'trending', score);
  for (const [itemId, score] of inputs.popular) add(itemId, 'popularity', score);
  const ids = [...byItem.keys()];
  const keyed = keyedBy(ids);
  const profile = profileScores(
    session?.recent ?? [],
    inputs.ease,
    inputs.neighbours,
    keyed.rowKeys,
    ids.length,
    keyed,
  );
  return [...byItem].map(([itemId, scores], i) => ({
    itemId,
    scores,
    item: inputs.items.get(itemId) ?? null,
    profile: [profile[2 * i] as number, profile[2 * i + 1] as number] as const,
  }));
}

/** Step 4: the features through the shared module, as serving computes them. */
export function featuresOf(
  inputs: TrainingInputs,
  session: SessionFeatures | null,
  candidates: RankCandidate[],
  cutoff: number,
): Float32Array {
  const out = new Float32Array(candidates.length * FEATURE_COUNT);
  fillFeatures(
    out,
    {
      now: cutoff,
      session,
      userPriceLevel: userPriceLevel((session?.recent ?? []).map((i) => inputs.items.get(i))),
    },
    candidates,
  );
  return out;
}
