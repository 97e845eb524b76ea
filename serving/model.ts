/**
 * The reranker the feed service scores with, loaded from the model registry's champion and
 * hot-swapped when the champion changes.
 *
 * Steps of one poll (at start, then every `pollMs`):
 *   1. ask the registry for the champion; nothing to do when its version is the one serving or
 *      the one that last failed to load (a registered version never changes);
 *   2. load and warm the new model beside the old one (`loadRanker` runs one scoring pass);
 *   3. swap with one reference assignment: a request that already took the old model finishes
 *      with it, the next one gets the new model; the old session is released once the last
 *      request using it finished.
 * A model that fails to load (corrupt file, wrong features) leaves the old one serving and
 * counts `recsys_model_load_failures_total`; a registry that cannot be read is logged and
 * retried at the next poll.
 *
 * While the registry has no champion (none trained yet, none that beat the heuristic blend in
 * the batch's gate, or one the batch retired: the model serving then is released), or the only
 * champion failed to load, feeds are ordered by the blend
 * (`blend.ts`): `mode()` says "blend", `recsys_model_info{version="blend"}` is 1 and readiness
 * reports the model check as degraded, not failed.
 *
 * @example
 *   const models = startModelHolder({ registry, log, metrics, pollMs: 10_000 });
 *   const lease = models.acquire(); // null until a model is loaded
 *   try { await lease?.ranker.score(x, n); } finally { lease?.release(); }
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../core/index.js';
import type { ModelRegistry } from '../store/registry/index.js';
import { loadRanker, type Ranker } from './ranker.js';

export interface LoadedModel {
  version: string;
  ranker: Ranker;
}

/** A model taken for one request; `release` exactly once when done with it. */
export interface ModelLease extends LoadedModel {
  release(): void;
}

export interface ModelHolder {
  /** The serving model for one request, or null before any model loaded. */
  acquire(): ModelLease | null;
  version(): string | null;
  /**
   * "model" while a model serves; "blend" when the registry was read and has no champion, or
   * its champion cannot be loaded and none serves; "loading" before either is known.
   */
  mode(): 'model' | 'blend' | 'loading';
  /** Checks the registry now (also what the timer does); resolves when the check is done. */
  poll(): Promise<void>;
  /** Resolves after the first poll (whether or not it found a model). */
  readonly started: Promise<void>;
  close(): Promise<void>;
}

interface Slot extends LoadedModel {
  inUse: number;
  retired: boolean;
}

export interface ModelHolderOptions {
  registry: ModelRegistry;
  log: Logger;
  metrics: Registry;
  /** How often the registry is polled, ms. */
  pollMs: number;
  /** Loads a model file. @default loadRanker */
  load?: (path: string) => Promise<Ranker>;
}

export function startModelHolder(options: ModelHolderOptions): ModelHolder {
  const { registry, log, metrics } = options;
  const load = options.load ?? ((path: string) => loadRanker(path));
  const failures = new Counter({
    name: 'recsys_model_load_failures_total',
    help: 'champion models that could not be loaded (the previous model kept serving)',
    registers: [metrics],
  });
  const info = new Gauge({
    name: 'recsys_model_info',
    help: 'the reranker model serving (1 for the loaded version)',
    labelNames: ['version'],
    registers: [metrics],
  });
  const loads = new Counter({
    name: 'recsys_model_loads_total',
    help: 'models loaded and swapped in',
    registers: [metrics],
  });

  let current: Slot | null = null;
  let failedVersion: string | null = null;
  /** The last registry read found no champion. */
  let noChampion = false;
  const showBlend = (on: boolean): void => {
    if (current) return;
    info.reset();
    if (on) info.labels('blend').set(1);
  };
  let polling: Promise<void> | null = null;
  let closed = false;

  const releaseIfIdle = (slot: Slot): void => {
    if (slot.retired && slot.inUse === 0) {
      slot.ranker
        .release()
        .catch((err: Error) => log.warn({ err: err.message }, 'model release failed'));
    }
  };

  const check = async (): Promise<void> => {
    let champion;
    try {
      champion = await registry.champion();
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'model registry unreadable; keeping the model');
      return;
    }
    if (closed) return;
    noChampion = !champion;
    if (!champion && current) {
      // The batch retired the champion (the blend surely beat it): the blend orders feeds now.
      const old = current;
      current = null;
      old.retired = true;
      releaseIfIdle(old);
      info.reset();
      log.info({ previous: old.version }, 'champion retired; the heuristic blend orders feeds');
    }
    showBlend(noChampion || champion?.version === failedVersion);
    if (!champion) return;
    if (champion.version === current?.version || champion.version === failedVersion) return;
    let ranker: Ranker;
    const t0 = performance.now();
    try {
      ranker = await load(champion.onnxPath);
    } catch (err) {
      failedVersion = champion.version;
      failures.inc();
      showBlend(true);
      log.error(
        { version: champion.version, path: champion.onnxPath, err: (err as Error).message },
        current ? 'new champion failed to load; keeping the old model' : 'model failed to load',
      );
      return;
    }
    if (closed) {
      await ranker.release();
      return;
    }
    const old = current;
    // The swap: one assignment. Requests holding `old` finish with it.
    current = { version: champion.version, ranker, inUse: 0, retired: false };
    failedVersion = null;
    loads.inc();
    info.reset();
    info.labels(champion.version).set(1);
    log.info(
      { version: champion.version, previous: old?.version ?? null, loadMs: performance.now() - t0 },
      'model loaded',
    );
    if (old) {
      old.retired = true;
      releaseIfIdle(old);
    }
  };

  const poll = (): Promise<void> => {
    // One check at a time: a slow load must not start a second load of the same version.
    polling ??= check().finally(() => {
      polling = null;
    });
    return polling;
  };

  const started = poll();
  const timer = setInterval(() => void poll(), options.pollMs);
  timer.unref();

  return {
    started,
    poll,
    version: () => current?.version ?? null,
    mode: () => (current ? 'model' : noChampion || failedVersion !== null ? 'blend' : 'loading'),
    acquire() {
      const slot = current;
      if (!slot) return null;
      slot.inUse++;
      let done = false;
      return {
        version: slot.version,
        ranker: slot.ranker,
        release() {
          if (done) return;
          done = true;
          slot.inUse--;
          releaseIfIdle(slot);
        },
      };
    },
    async close() {
      closed = true;
      clearInterval(timer);
      await polling?.catch(() => undefined);
      if (current) {
        current.retired = true;
        releaseIfIdle(current);
        current = null;
      }
      await registry.close();
    },
  };
}
