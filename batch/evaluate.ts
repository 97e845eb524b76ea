/**
 * Offline evaluation of ranked lists against what users did next (the validation split):
 * NDCG@10, Recall@20, MRR@20, HitRate@10 per user, averaged over users with at least one
 * relevant item, and catalog coverage (share of the catalog that appears in anyone's top 10).
 *
 * Definitions (the usual ones, so numbers compare with published results):
 * - gain of an item = its relevance (1 for "interacted", or a graded value); DCG@k =
 *   sum over ranks i < k of (2^gain - 1) / log2(i + 2); NDCG@k = DCG@k / ideal DCG@k;
 * - Recall@k = relevant items in the top k / min(k, relevant items) (so a perfect list scores 1
 *   even when a user has more than k relevant items);
 * - MRR@k = 1 / rank of the first relevant item within the top k, else 0;
 * - HitRate@k = 1 if any relevant item is in the top k.
 *
 * @example
 *   const m = evaluate(recommendations, relevance, catalogSize);
 *   writeReport(dir, { popularity: m1, covisitation: m2, hybrid: m3 });
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface Metrics {
  ndcg_at_10: number;
  recall_at_20: number;
  mrr_at_20: number;
  hit_rate_at_10: number;
  coverage_at_10: number;
  users: number;
}

export type Relevance = ReadonlyMap<string, ReadonlyMap<string, number>>;

/** DCG of graded gains in rank order: sum of (2^gain - 1) / log2(rank + 2). */
export function dcg(gains: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < gains.length; i++) s += (2 ** (gains[i] as number) - 1) / Math.log2(i + 2);
  return s;
}

/** NDCG@10 of one ranked list against one user's graded relevance. */
function ndcgAt10(list: readonly string[], rel: ReadonlyMap<string, number>): number {
  const idcg = dcg([...rel.values()].sort((a, b) => b - a).slice(0, 10));
  return idcg > 0 ? dcg(list.slice(0, 10).map((i) => rel.get(i) ?? 0)) / idcg : 0;
}

/** Metrics of `recommendations` (user -> ranked item ids) against `relevance` (user -> item -> gain). */
export function evaluate(
  recommendations: ReadonlyMap<string, readonly string[]>,
  relevance: Relevance,
  catalogSize: number,
): Metrics {
  let ndcg = 0;
  let recall = 0;
  let mrr = 0;
  let hits = 0;
  let users = 0;
  const shown = new Set<string>();
  for (const [user, rel] of relevance) {
    if (rel.size === 0) continue;
    users += 1;
    const list = recommendations.get(user) ?? [];
    for (const item of list.slice(0, 10)) shown.add(item);
    ndcg += ndcgAt10(list, rel);
    const top20 = list.slice(0, 20);
    const found = top20.filter((i) => rel.has(i)).length;
    recall += found / Math.min(20, rel.size);
    const first = top20.findIndex((i) => rel.has(i));
    mrr += first >= 0 ? 1 / (first + 1) : 0;
    hits += list.slice(0, 10).some((i) => rel.has(i)) ? 1 : 0;
  }
  const avg = (x: number): number => (users > 0 ? x / users : 0);
  return {
    ndcg_at_10: avg(ndcg),
    recall_at_20: avg(recall),
    mrr_at_20: avg(mrr),
    hit_rate_at_10: avg(hits),
    coverage_at_10: catalogSize > 0 ? shown.size / catalogSize : 0,
    users,
  };
}

/** NDCG@10 of each user with at least one relevant item (the terms `evaluate` averages). */
export function ndcgByUser(
  recommendations: ReadonlyMap<string, readonly string[]>,
  relevance: Relevance,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [user, rel] of relevance) {
    if (rel.size === 0) continue;
    out.set(user, ndcgAt10(recommendations.get(user) ?? [], rel));
  }
  return out;
}

/**
 * How surely method `a` beats method `b` on the same users: the mean per-user difference of
 * NDCG@10 and its z score (mean / standard error of the paired differences; 0 when they never
 * differ). z >= 1.64 is a one-sided 5% test.
 */
export function pairedAdvantage(
  a: ReadonlyMap<string, number>,
  b: ReadonlyMap<string, number>,
): { diff: number; z: number; users: number } {
  const d: number[] = [];
  for (const [user, x] of a) d.push(x - (b.get(user) ?? 0));
  const n = d.length;
  if (n === 0) return { diff: 0, z: 0, users: 0 };
  const mean = d.reduce((s, x) => s + x, 0) / n;
  const variance = n > 1 ? d.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1) : 0;
  const se = Math.sqrt(variance / n);
  const z = se > 0 ? mean / se : mean > 0 ? Number.POSITIVE_INFINITY : 0;
  return { diff: mean, z, users: n };
}

/** A Markdown table, one row per method, best NDCG@10 first. */
export function toMarkdown(results: Readonly<Record<string, Metrics>>): string {
  const f = (x: number): string => x.toFixed(4);
  const rows = Object.entries(results).sort((a, b) => b[1].ndcg_at_10 - a[1].ndcg_at_10);
  return [
    '| method | NDCG@10 | Recall@20 | MRR@20 | HitRate@10 | coverage@10 | users |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      ([name, m]) =>
        `| ${name} | ${f(m.ndcg_at_10)} | ${f(m.recall_at_20)} | ${f(m.mrr_at_20)} | ${f(m.hit_rate_at_10)} | ${f(m.coverage_at_10)} | ${m.users} |`,
    ),
  ].join('\n');
}

/** Writes `evaluation.json` and `evaluation.md` into `dir`; returns their paths. */
export async function writeReport(
  dir: string,
  results: Readonly<Record<string, Metrics>>,
  extra: Record<string, unknown> = {},
): Promise<{ json: string; markdown: string }> {
  await mkdir(dir, { recursive: true });
  const json = join(dir, 'evaluation.json');
  const markdown = join(dir, 'evaluation.md');
  await writeFile(json, JSON.stringify({ ...extra, results }, null, 2) + '\n');
  await writeFile(markdown, `# Offline evaluation\n\n${toMarkdown(results)}\n`);
  return { json, markdown };
}
