/**
 * The model registry: where trained rerankers are stored with their offline metrics, and which
 * one is the champion that serving loads. One interface, {@link ModelRegistry}; the backend is
 * picked by URL: `file://<dir>` (embedded default, a directory) or `http(s)://` (an MLflow
 * tracking server, which must proxy artifacts: `mlflow server --serve-artifacts`).
 *
 * @example
 *   const registry = openRegistry(config.batch, log);
 *   const { version } = await registry.register({ onnxPath, metrics, params });
 *   const gate = await registry.promoteIfBetter(version, metrics, { minNdcg: config.batch.minNdcg });
 *   const champion = await registry.champion(); // { version, metrics, onnxPath } | null
 */
import { join } from 'node:path';
import type { BatchConfig, Logger } from '../../core/index.js';
import { LocalModelRegistry, localRootFromUrl } from './local.js';
import { MlflowModelRegistry } from './mlflow.js';
import { REGISTRY_ERRORS, RegistryError, type ModelRegistry } from './registry.js';

export {
  CHAMPION_ALIAS,
  decidePromotion,
  DEFAULT_GATE_METRIC,
  REGISTRY_ERRORS,
  RegistryError,
  type Champion,
  type ModelRegistry,
  type ModelVersion,
  type PromoteOptions,
  type PromoteResult,
  type RegisterInput,
} from './registry.js';
export { LocalModelRegistry, type LocalRegistryOptions } from './local.js';
export { MlflowModelRegistry, type MlflowRegistryOptions } from './mlflow.js';

export interface OpenRegistryOptions {
  /**
   * Where the MLflow backend caches downloaded models.
   * @default `<config.dir>/model-cache`
   */
  cacheDir?: string;
}

/** Opens the registry `config.registryUrl` names (MLFLOW_TRACKING_URI already won in config). */
export function openRegistry(
  config: Pick<BatchConfig, 'registryUrl' | 'modelName' | 'dir'>,
  log: Logger,
  options: OpenRegistryOptions = {},
): ModelRegistry {
  const url = config.registryUrl;
  if (url.startsWith('file://')) {
    return new LocalModelRegistry({
      root: localRootFromUrl(url),
      modelName: config.modelName,
      log,
    });
  }
  if (/^https?:\/\//.test(url)) {
    return new MlflowModelRegistry({
      url,
      modelName: config.modelName,
      cacheDir: options.cacheDir ?? join(config.dir, 'model-cache'),
      log,
    });
  }
  throw new RegistryError(
    REGISTRY_ERRORS.unsupportedUrl,
    `model registry URL "${url}": expected file://<dir> or an http(s):// MLflow URL`,
  );
}
