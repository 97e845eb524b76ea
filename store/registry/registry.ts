/**
 * What every model-registry backend shares: the {@link ModelRegistry} interface, its errors
 * (declared once, stable codes) and the champion gate. Backends live one per file
 * (`local.ts`, `mlflow.ts`); `index.ts` picks one by URL.
 */
import { RecsysError } from '../../core/index.js';

/** The metric the champion gate compares by default (see `batch/evaluate.ts`). */
export const DEFAULT_GATE_METRIC = 'ndcg_at_10';
/** The alias that marks the model serving traffic. */
export const CHAMPION_ALIAS = 'champion';

export interface RegisterInput {
  /** Local path of the exported model; copied (local) or uploaded (MLflow). */
  onnxPath: string;
  /** Offline evaluation, e.g. `{ ndcg_at_10: 0.31 }`; every value must be finite. */
  metrics: Record<string, number>;
  /** Training parameters (hyper-parameters, data window, ...). */
  params: Record<string, string | number>;
  tags?: Record<string, string>;
}

export interface ModelVersion {
  /** Backend-assigned, a decimal integer that increases with every registration. */
  version: string;
  metrics: Record<string, number>;
  params: Record<string, string>;
  tags: Record<string, string>;
  /** Registration time, epoch ms. */
  createdMs: number;
  /** Aliases pointing at this version (e.g. `['champion']`). */
  aliases: string[];
}

export interface Champion {
  version: string;
  metrics: Record<string, number>;
  /** A local file with the model's bytes (downloaded into a cache when the registry is remote). */
  onnxPath: string;
}

export interface PromoteOptions {
  /** The candidate needs at least this value of `metric`. */
  minNdcg: number;
  /** @default 'ndcg_at_10' */
  metric?: string;
  /**
   * The champion re-scored on the candidate's own held-out data (empty metrics: it could not be
   * scored there). Used in place of the champion's stored metrics while it still is the champion:
   * a score from an older held-out set is not comparable once the data drifted.
   */
  rescored?: { version: string; metrics: Record<string, number> };
}

export interface PromoteResult {
  promoted: boolean;
  /** One sentence saying why, naming the metric and both values. */
  reason: string;
  /** The champion before the call (also when not promoted), if there was one. */
  previous?: string;
}

export interface ModelRegistry {
  /** `local` or `mlflow`, for logs. */
  readonly kind: string;
  /** Stores a new version; never changes the champion. */
  register(input: RegisterInput): Promise<{ version: string }>;
  /** The current champion, or null when none was ever set. */
  champion(): Promise<Champion | null>;
  /** Points the champion alias at `version` unconditionally (rollback, manual override). */
  setChampion(version: string): Promise<void>;
  /**
   * Removes the champion alias (no model serves: the heuristic blend does), when it still points
   * at `version`; true when it was removed. The batch does this to a champion the blend surely
   * beats on fresh held-out data.
   */
  retireChampion(version: string): Promise<boolean>;
  /** Every registered version, oldest first. */
  versions(): Promise<ModelVersion[]>;
  /**
   * The champion gate: `version` (with its offline `metrics`) becomes champion only if its
   * metric is at least `minNdcg` and strictly above the current champion's (or there is none).
   */
  promoteIfBetter(
    version: string,
    metrics: Record<string, number>,
    options: PromoteOptions,
  ): Promise<PromoteResult>;
  close(): Promise<void>;
}

/** Every error a registry raises on purpose, declared once: code and whether a retry may help. */
export const REGISTRY_ERRORS = {
  badInput: { code: 'RECSYS_REGISTRY_BAD_INPUT', retriable: false },
  unsupportedUrl: { code: 'RECSYS_REGISTRY_UNSUPPORTED_URL', retriable: false },
  versionNotFound: { code: 'RECSYS_REGISTRY_VERSION_NOT_FOUND', retriable: false },
  /** Stored data does not match what was registered (missing file, checksum mismatch). */
  corrupt: { code: 'RECSYS_REGISTRY_CORRUPT', retriable: false },
  /** Another process holds the registry lock for longer than we wait. */
  locked: { code: 'RECSYS_REGISTRY_LOCKED', retriable: true },
  /** MLflow answered a 4xx; `status` and `mlflowCode` say which. */
  rejected: { code: 'RECSYS_REGISTRY_REJECTED', retriable: false },
  /** MLflow reported the model version as FAILED_REGISTRATION or never READY. */
  versionFailed: { code: 'RECSYS_REGISTRY_VERSION_FAILED', retriable: false },
  /** The MLflow server does not proxy artifacts (`--serve-artifacts`). */
  artifactsNotProxied: { code: 'RECSYS_REGISTRY_ARTIFACTS_NOT_PROXIED', retriable: false },
} as const;

export type RegistryErrorKind = (typeof REGISTRY_ERRORS)[keyof typeof REGISTRY_ERRORS];

export class RegistryError extends RecsysError {
  /** HTTP status MLflow answered with, when the error came from there. */
  readonly status: number | undefined;
  /** MLflow's `error_code` (e.g. `RESOURCE_DOES_NOT_EXIST`), when it came from there. */
  readonly mlflowCode: string | undefined;

  constructor(
    kind: RegistryErrorKind,
    message: string,
    options: { cause?: unknown; status?: number; mlflowCode?: string } = {},
  ) {
    super(kind.code, message, { cause: options.cause, retriable: kind.retriable });
    this.status = options.status;
    this.mlflowCode = options.mlflowCode;
  }
}

/** Rejects metrics that are not finite numbers (NaN would poison every later comparison). */
export function checkRegisterInput(input: RegisterInput): void {
  if (typeof input.onnxPath !== 'string' || input.onnxPath === '') {
    throw new RegistryError(REGISTRY_ERRORS.badInput, 'onnxPath is required');
  }
  for (const [key, value] of Object.entries(input.metrics)) {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      throw new RegistryError(REGISTRY_ERRORS.badInput, `metric ${key} is not a finite number`);
    }
  }
}

/**
 * The champion gate as a pure function, so both backends decide identically:
 * 1. the candidate must carry the metric and reach `minNdcg`, else it is never promoted;
 * 2. with no champion (or a champion without the metric) it is promoted;
 * 3. otherwise it must be strictly better than the champion re-scored on the same held-out data
 *    (`options.rescored`; the stored score only when none is given or the champion changed
 *    meanwhile): a tie keeps the incumbent, so re-registering the same model does not churn the
 *    alias.
 */
export function decidePromotion(
  candidate: { version: string; metrics: Record<string, number> },
  champion: { version: string; metrics: Record<string, number> } | null,
  options: PromoteOptions,
): PromoteResult {
  const metric = options.metric ?? DEFAULT_GATE_METRIC;
  const previous = champion?.version;
  const base = previous === undefined ? {} : { previous };
  const value = candidate.metrics[metric];
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    return {
      promoted: false,
      reason: `version ${candidate.version} has no ${metric}; not promoted`,
      ...base,
    };
  }
  if (value < options.minNdcg) {
    return {
      promoted: false,
      reason: `${metric} ${fmt(value)} of version ${candidate.version} is below the minimum ${fmt(options.minNdcg)}`,
      ...base,
    };
  }
  if (champion === null) {
    return {
      promoted: true,
      reason: `no champion yet; version ${candidate.version} has ${metric} ${fmt(value)} >= ${fmt(options.minNdcg)}`,
    };
  }
  if (champion.version === candidate.version) {
    return {
      promoted: false,
      reason: `version ${candidate.version} already is the champion`,
      ...base,
    };
  }
  const rescored = options.rescored?.version === champion.version ? options.rescored : undefined;
  const current = (rescored ?? champion).metrics[metric];
  const on = rescored ? 'on the same held-out data' : 'stored';
  if (typeof current !== 'number' || !Number.isFinite(current)) {
    return {
      promoted: true,
      reason: `champion ${champion.version} has no ${metric} (${on}); version ${candidate.version} has ${fmt(value)}`,
      ...base,
    };
  }
  const verdict = value > current ? 'beats' : 'does not beat';
  return {
    promoted: value > current,
    reason: `${metric} ${fmt(value)} of version ${candidate.version} ${verdict} champion ${champion.version} (${fmt(current)}, ${on})`,
    ...base,
  };
}

function fmt(n: number): string {
  return Number(n.toPrecision(6)).toString();
}

/** Params are stored as strings by both backends (MLflow's model). */
export function stringifyParams(params: Record<string, string | number>): Record<string, string> {
  return Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)]));
}
