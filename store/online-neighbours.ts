/**
 * Item-to-item co-visitation learned online: every applied event pairs its item with the user's
 * previous `window` distinct items, both ways, weighted 1/sqrt(distance) (the item just before
 * counts 1, the fifth before 0.45), so a new item has neighbours minutes after its first events
 * instead of after the next batch run. One hash per item (`onlineNeighboursKey`), neighbour ->
 * weight; reads sort. A hash because HINCRBYFLOAT took about 60% of ZINCRBY's Redis time on the
 * small sorted sets this used to be, and these writes are most of the feature consumer's cost.
 *
 * Why this shape: simulated on the MovieLens replay (bench/README.md, issue 19), pairs up to 5
 * items apart weighted 1/sqrt(distance) ranked better than the 3 nearest at equal weight, and
 * nearly as well as 10 apart at half the writes.
 *
 * Decay without rewriting: a pair seen at time t adds `2^((t - EPOCH) / halfLife)` (forward
 * decay), so a newer co-visit outweighs an older one by exactly the decay between them and the
 * order of a set is the order of the decayed weights. Bounded: past `2 * maxNeighbours` fields
 * a hash keeps its `maxNeighbours` strongest; it expires `ttlSec` after its last update. One
 * script call per item and flush, pipelined.
 *
 * @example
 *   const online = new OnlineNeighbourStore(redis);
 *   await online.record([{ itemId: 'i2', previous: ['i1'], ts: Date.now() }]);
 *   const lists = await online.read(['i1'], 50); // [{ ids: ['i2'], scores: [1] }]
 */
import { openPipeline, type RedisClient } from './redis.js';
import { DependencyUnavailableError } from '../core/index.js';
import { onlineNeighboursKey } from './keys.js';

export interface OnlineNeighbourOptions {
  /** Previous distinct items of the user an event pairs with. @default 5 */
  window?: number;
  /** Neighbours kept per item. @default 50 */
  maxNeighbours?: number;
  /** Half-life of a co-visit's weight, ms. @default 7 days */
  halfLifeMs?: number;
  /** A set expires this long after its last update, seconds. @default 30 days */
  ttlSec?: number;
}

/** One applied event: its item, the user's previous distinct items (newest first) and time. */
export interface CoVisit {
  itemId: string;
  previous: readonly string[];
  ts: number;
}

/** Start of the forward-decay clock (2026-01-01); weights double every half-life after it. */
const EPOCH = Date.UTC(2026, 0, 1);

/** 1/sqrt(distance) for the distances up to 32 (distance k + 1 at index k). */
const DISTANCE_WEIGHT = Array.from({ length: 32 }, (_, k) => 1 / Math.sqrt(k + 1));

// Adds the weights; past 2 * cap fields keeps the cap strongest (ties: the smaller id).
const RECORD = `
local key, cap, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HINCRBYFLOAT', key, ARGV[i], ARGV[i + 1]) end
if redis.call('HLEN', key) > 2 * cap then
  local flat = redis.call('HGETALL', key)
  local e = {}
  for i = 1, #flat, 2 do e[#e + 1] = { flat[i], tonumber(flat[i + 1]) } end
  table.sort(e, function(a, b) if a[2] ~= b[2] then return a[2] > b[2] end return a[1] < b[1] end)
  -- HDEL in slices: unpack's stack is bounded (about 8,000 values)
  for from = cap + 1, #e, 1000 do
    local drop = {}
    for i = from, math.min(from + 999, #e) do drop[#drop + 1] = e[i][1] end
    redis.call('HDEL', key, unpack(drop))
  end
end
redis.call('EXPIRE', key, ttl)
return 0
`;

type ScriptRedis = RedisClient & {
  recsysOnlineNeighbours(key: string, ...args: (string | number)[]): Promise<number>;
};

export class OnlineNeighbourStore {
  readonly #redis: ScriptRedis;
  readonly window: number;
  readonly #cap: number;
  readonly #halfLifeMs: number;
  readonly #ttlSec: number;

  constructor(redis: RedisClient, options: OnlineNeighbourOptions = {}) {
    if (!('recsysOnlineNeighbours' in redis)) {
      redis.defineCommand('recsysOnlineNeighbours', { numberOfKeys: 1, lua: RECORD });
    }
    this.#redis = redis as ScriptRedis;
    this.window = options.window ?? 5;
    this.#cap = options.maxNeighbours ?? 50;
    this.#halfLifeMs = options.halfLifeMs ?? 7 * 86_400_000;
    this.#ttlSec = options.ttlSec ?? 30 * 86_400;
  }

  /** Adds the co-visits of applied events (both directions), one script per item touched. */
  async record(visits: readonly CoVisit[]): Promise<void> {
    const byItem = new Map<string, Map<string, number>>();
    const add = (item: string, neighbour: string, weight: number): void => {
      let m = byItem.get(item);
      if (!m) byItem.set(item, (m = new Map()));
      m.set(neighbour, (m.get(neighbour) ?? 0) + weight);
    };
    for (const v of visits) {
      const weight = 2 ** ((v.ts - EPOCH) / this.#halfLifeMs);
      for (let k = 0; k < v.previous.length && k < this.window; k++) {
        const prev = v.previous[k] as string;
        if (prev === v.itemId) continue;
        const w = weight * (DISTANCE_WEIGHT[k] ?? 1 / Math.sqrt(k + 1));
        add(v.itemId, prev, w);
        add(prev, v.itemId, w);
      }
    }
    if (byItem.size === 0) return;
    const pipeline = openPipeline(this.#redis) as unknown as {
      recsysOnlineNeighbours(key: string, ...args: (string | number)[]): void;
      exec(): Promise<[Error | null, unknown][] | null>;
    };
    for (const [item, neighbours] of byItem) {
      const args: (string | number)[] = [this.#cap, this.#ttlSec];
      for (const [n, w] of neighbours) args.push(n, w);
      pipeline.recsysOnlineNeighbours(onlineNeighboursKey(item), ...args);
    }
    const replies = await pipeline.exec();
    if (!replies) throw new DependencyUnavailableError('redis', 'pipeline aborted');
    for (const [err] of replies) if (err) throw err;
  }

  /**
   * The `k` strongest online neighbours of each item, scores scaled so the best is 1 (as batch
   * neighbour lists are); empty lists for items without any. Commands leave when called.
   */
  read(itemIds: readonly string[], k: number): Promise<{ ids: string[]; scores: number[] }[]> {
    return Promise.all(
      itemIds.map((id) =>
        this.#redis.hgetall(onlineNeighboursKey(id)).then((h) => strongest(h, k)),
      ),
    );
  }
}

/** The `k` strongest of a hash's neighbours (ties: the smaller id), the best scaled to 1. */
function strongest(h: Record<string, string>, k: number): { ids: string[]; scores: number[] } {
  const entries = Object.entries(h).map(([id, w]) => [id, Number(w)] as const);
  entries.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const top = entries.slice(0, k);
  const best = top[0]?.[1] || 1;
  return { ids: top.map(([id]) => id), scores: top.map(([, w]) => w / best) };
}

/**
 * Each applied event with the user's previous distinct items (newest first) at that moment:
 * `events` in Kafka order per user, `applied(i)` whether event i was applied, `prior` each
 * user's recent items before them.
 *
 * @example
 *   coVisits([{ userId: 'u', itemId: 'b', ts }], () => true, new Map([['u', ['a']]]), 3);
 *   // [{ itemId: 'b', previous: ['a'], ts }]
 */
export function coVisits(
  events: readonly { userId: string; itemId: string; ts: number }[],
  applied: (i: number) => boolean,
  prior: ReadonlyMap<string, readonly string[]>,
  window: number,
): CoVisit[] {
  const last = new Map<string, string[]>();
  const out: CoVisit[] = [];
  events.forEach((e, i) => {
    if (!applied(i)) return;
    const before = (last.get(e.userId) ?? prior.get(e.userId) ?? []).filter((x) => x !== e.itemId);
    out.push({ itemId: e.itemId, previous: before.slice(0, window), ts: e.ts });
    last.set(e.userId, [e.itemId, ...before].slice(0, window));
  });
  return out;
}
