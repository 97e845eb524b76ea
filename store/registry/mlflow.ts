/**
 * The model registry on an MLflow tracking server (2.x/3.x REST API, plain fetch: no Python in
 * this process). Checked against MLflow 3.17 started with `--serve-artifacts`.
 *
 * Registration, step by step:
 * 1. experiment `<modelName>` (created on first use; "already exists" means another process won);
 * 2. a run with the params, metrics and tags (`runs/create`, `runs/log-batch`);
 * 3. the ONNX file PUT through the artifact proxy: the run's `artifact_uri` is
 *    `mlflow-artifacts:/<exp>/<run>/artifacts`, served at
 *    `/api/2.0/mlflow-artifacts/artifacts/<exp>/<run>/artifacts/model/model.onnx`;
 * 4. the run ended FINISHED; registered model `<modelName>` created if missing;
 * 5. a model version with `source = <artifact_uri>/model`, `run_id`, and the file's sha256 as
 *    the tag `recsys.sha256`; polled until READY.
 * The champion is the registered-model alias `champion`; `champion()` downloads its
 * `model.onnx` into `<cacheDir>/<model>/<version>/` (once: the cached copy is checked against
 * the sha256 tag) and reads its metrics from the run. Errors and retries: `mlflow-client.ts`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { type Logger, type RetryOptions, sleep } from '../../core/index.js';
import { sha256File } from './local.js';
import { MlflowClient, type MlflowModelVersion, type MlflowRun } from './mlflow-client.js';
import {
  CHAMPION_ALIAS,
  checkRegisterInput,
  decidePromotion,
  REGISTRY_ERRORS,
  RegistryError,
  stringifyParams,
  type Champion,
  type ModelRegistry,
  type ModelVersion,
  type PromoteOptions,
  type PromoteResult,
  type RegisterInput,
} from './registry.js';

export interface MlflowRegistryOptions {
  /** Tracking server base URL, e.g. `http://127.0.0.1:5000`. */
  url: string;
  modelName: string;
  /** Where `champion()` keeps downloaded models. */
  cacheDir: string;
  log: Logger;
  /** One HTTP request's limit, ms (uploads included). @default 60000 */
  requestTimeoutMs?: number;
  /** Longest wait for a model version to become READY, ms. @default 60000 */
  readyTimeoutMs?: number;
  /** Retry policy for transient failures. @default { attempts: 5, initialDelayMs: 200 } */
  retry?: RetryOptions;
}

const SHA_TAG = 'recsys.sha256';
const ARTIFACT_DIR = 'model';
const ARTIFACT_FILE = 'model.onnx';
/** MLflow's log-batch limits: 1000 metrics, 100 params, 100 tags per request. */
const BATCH_PARAMS = 100;

export class MlflowModelRegistry implements ModelRegistry {
  readonly kind = 'mlflow';
  readonly #base: string;
  readonly #name: string;
  readonly #cacheDir: string;
  readonly #log: Logger;
  readonly #client: MlflowClient;
  readonly #readyTimeoutMs: number;
  readonly #retry: RetryOptions;
  #experimentId: string | null = null;
  #modelCreated = false;

  constructor(options: MlflowRegistryOptions) {
    this.#base = options.url.replace(/\/+$/, '');
    this.#name = options.modelName;
    this.#cacheDir = options.cacheDir;
    this.#log = options.log.child({ component: 'registry-mlflow', url: this.#base });
    this.#readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
    this.#retry = {
      attempts: 5,
      initialDelayMs: 200,
      ...options.retry,
      onRetry: (err, attempt, delayMs) =>
        this.#log.warn(
          { error: (err as Error).message, attempt, delayMs },
          'mlflow request failed; retrying',
        ),
    };
    this.#client = new MlflowClient(
      this.#base,
      options.requestTimeoutMs ?? 60_000,
      this.#retry,
      this.#log,
    );
  }

  async register(input: RegisterInput): Promise<{ version: string }> {
    checkRegisterInput(input);
    const bytes = await readFile(input.onnxPath).catch((err: unknown) => {
      throw new RegistryError(REGISTRY_ERRORS.badInput, `cannot read ${input.onnxPath}`, {
        cause: err,
      });
    });
    const sha256 = await sha256File(input.onnxPath);
    const experimentId = await this.#experiment();
    const now = Date.now();
    const tags = { ...input.tags };
    const { run } = await this.#client.call<{ run: MlflowRun }>(
      'POST',
      'mlflow/runs/create',
      {
        experiment_id: experimentId,
        start_time: now,
        run_name: `${this.#name}-${new Date(now).toISOString()}`,
        tags: Object.entries({ ...tags, [SHA_TAG]: sha256 }).map(([key, value]) => ({
          key,
          value,
        })),
      },
      { creates: true },
    );
    const runId = run.info.run_id;
    try {
      const params = Object.entries(stringifyParams(input.params)).map(([key, value]) => ({
        key,
        value,
      }));
      const metrics = Object.entries(input.metrics).map(([key, value]) => ({
        key,
        value,
        timestamp: now,
        step: 0,
      }));
      for (let i = 0; i < Math.max(1, params.length); i += BATCH_PARAMS) {
        await this.#client.call('POST', 'mlflow/runs/log-batch', {
          run_id: runId,
          params: params.slice(i, i + BATCH_PARAMS),
          metrics: i === 0 ? metrics : [],
        });
      }
      await this.#client.call(
        'PUT',
        `mlflow-artifacts/artifacts/${artifactPath(run.info.artifact_uri)}/${ARTIFACT_DIR}/${ARTIFACT_FILE}`,
        bytes,
      );
      await this.#client.call('POST', 'mlflow/runs/update', {
        run_id: runId,
        status: 'FINISHED',
        end_time: Date.now(),
      });
    } catch (err) {
      // Best effort: a run left RUNNING would look like a training still in progress.
      await this.#client
        .call('POST', 'mlflow/runs/update', {
          run_id: runId,
          status: 'FAILED',
          end_time: Date.now(),
        })
        .catch(() => undefined);
      throw err;
    }
    await this.#registeredModel();
    const { model_version: created } = await this.#client.call<{
      model_version: MlflowModelVersion;
    }>(
      'POST',
      'mlflow/model-versions/create',
      {
        name: this.#name,
        source: `${run.info.artifact_uri}/${ARTIFACT_DIR}`,
        run_id: runId,
        tags: Object.entries({ ...tags, [SHA_TAG]: sha256 }).map(([key, value]) => ({
          key,
          value,
        })),
      },
      { creates: true },
    );
    await this.#waitReady(created);
    this.#log.info(
      { version: created.version, runId, bytes: bytes.length, metrics: input.metrics },
      'model version registered',
    );
    return { version: created.version };
  }

  async champion(): Promise<Champion | null> {
    const mv = await this.#alias(CHAMPION_ALIAS);
    if (mv === null) return null;
    const metrics = mv.run_id ? await this.#runMetrics(mv.run_id) : {};
    const onnxPath = await this.#download(mv);
    return { version: mv.version, metrics, onnxPath };
  }

  async setChampion(version: string): Promise<void> {
    await this.#modelVersion(version); // must exist
    await this.#client.call('POST', 'mlflow/registered-models/alias', {
      name: this.#name,
      alias: CHAMPION_ALIAS,
      version,
    });
    this.#log.info({ version }, 'champion set');
  }

  async retireChampion(version: string): Promise<boolean> {
    // No compare-and-delete on aliases (as for promotion): the batch runs one at a time.
    if ((await this.#alias(CHAMPION_ALIAS))?.version !== version) return false;
    const alias = { name: this.#name, alias: CHAMPION_ALIAS };
    await this.#client.call('DELETE', 'mlflow/registered-models/alias', alias);
    this.#log.info({ version }, 'champion retired');
    return true;
  }

  async versions(): Promise<ModelVersion[]> {
    const all: MlflowModelVersion[] = [];
    let pageToken: string | undefined;
    do {
      const query = new URLSearchParams({
        filter: `name='${this.#name.replace(/'/g, "\\'")}'`,
        max_results: '200',
      });
      if (pageToken) query.set('page_token', pageToken);
      const page = await this.#client.call<{
        model_versions?: MlflowModelVersion[];
        next_page_token?: string;
      }>('GET', `mlflow/model-versions/search?${query}`);
      all.push(...(page.model_versions ?? []));
      pageToken = page.next_page_token;
    } while (pageToken);
    // search does not return aliases; the registered model does.
    const champion = await this.#alias(CHAMPION_ALIAS);
    const out = await Promise.all(
      all.map(async (mv): Promise<ModelVersion> => {
        const run = mv.run_id ? await this.#run(mv.run_id) : null;
        return {
          version: mv.version,
          metrics: Object.fromEntries((run?.data?.metrics ?? []).map((m) => [m.key, m.value])),
          params: Object.fromEntries((run?.data?.params ?? []).map((p) => [p.key, p.value])),
          tags: Object.fromEntries((mv.tags ?? []).map((t) => [t.key, t.value])),
          createdMs: mv.creation_timestamp ?? 0,
          aliases: champion?.version === mv.version ? [CHAMPION_ALIAS] : [],
        };
      }),
    );
    return out.sort((a, b) => Number(a.version) - Number(b.version));
  }

  /**
   * Reads the champion, decides with the shared gate, then moves the alias. MLflow has no
   * compare-and-set on aliases, so two concurrent promotions could race; the batch runs one
   * promotion at a time (the retrain trigger coalesces), which is what makes this safe.
   */
  async promoteIfBetter(
    version: string,
    metrics: Record<string, number>,
    options: PromoteOptions,
  ): Promise<PromoteResult> {
    await this.#modelVersion(version); // must exist
    const current = await this.#alias(CHAMPION_ALIAS);
    const champion =
      current === null
        ? null
        : {
            version: current.version,
            metrics: current.run_id ? await this.#runMetrics(current.run_id) : {},
          };
    const result = decidePromotion({ version, metrics }, champion, options);
    if (result.promoted) {
      await this.#client.call('POST', 'mlflow/registered-models/alias', {
        name: this.#name,
        alias: CHAMPION_ALIAS,
        version,
      });
    }
    this.#log.info({ version, ...result }, 'champion gate');
    return result;
  }

  async close(): Promise<void> {}

  async #experiment(): Promise<string> {
    if (this.#experimentId !== null) return this.#experimentId;
    const query = new URLSearchParams({ experiment_name: this.#name });
    const found = await this.#client
      .call<{ experiment: { experiment_id: string } }>(
        'GET',
        `mlflow/experiments/get-by-name?${query}`,
      )
      .catch((err: unknown) => {
        if (isMlflowCode(err, 'RESOURCE_DOES_NOT_EXIST')) return null;
        throw err;
      });
    if (found) {
      this.#experimentId = found.experiment.experiment_id;
      return this.#experimentId;
    }
    try {
      const created = await this.#client.call<{ experiment_id: string }>(
        'POST',
        'mlflow/experiments/create',
        { name: this.#name },
      );
      this.#experimentId = created.experiment_id;
    } catch (err) {
      if (!isMlflowCode(err, 'RESOURCE_ALREADY_EXISTS')) throw err;
      // Another process created it between our lookup and our create.
      return this.#experiment();
    }
    return this.#experimentId;
  }

  async #registeredModel(): Promise<void> {
    if (this.#modelCreated) return;
    try {
      await this.#client.call('POST', 'mlflow/registered-models/create', { name: this.#name });
    } catch (err) {
      if (!isMlflowCode(err, 'RESOURCE_ALREADY_EXISTS')) throw err;
    }
    this.#modelCreated = true;
  }

  async #waitReady(mv: MlflowModelVersion): Promise<void> {
    const deadline = Date.now() + this.#readyTimeoutMs;
    let current = mv;
    let delayMs = 50;
    for (;;) {
      if (current.status === 'READY' || current.status === undefined) return;
      if (current.status === 'FAILED_REGISTRATION') {
        throw new RegistryError(
          REGISTRY_ERRORS.versionFailed,
          `model version ${mv.version} failed registration: ${current.status_message ?? ''}`,
        );
      }
      if (Date.now() > deadline) {
        throw new RegistryError(
          REGISTRY_ERRORS.versionFailed,
          `model version ${mv.version} still ${current.status} after ${this.#readyTimeoutMs} ms`,
        );
      }
      await sleep(delayMs);
      delayMs = Math.min(delayMs * 2, 1000);
      current = await this.#modelVersion(mv.version);
    }
  }

  async #modelVersion(version: string): Promise<MlflowModelVersion> {
    const query = new URLSearchParams({ name: this.#name, version });
    try {
      const res = await this.#client.call<{ model_version: MlflowModelVersion }>(
        'GET',
        `mlflow/model-versions/get?${query}`,
      );
      return res.model_version;
    } catch (err) {
      if (
        isMlflowCode(err, 'RESOURCE_DOES_NOT_EXIST') ||
        isMlflowCode(err, 'INVALID_PARAMETER_VALUE')
      ) {
        throw new RegistryError(
          REGISTRY_ERRORS.versionNotFound,
          `no version "${version}" of ${this.#name}`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  /** The version an alias points at, or null when the alias (or the model) does not exist. */
  async #alias(alias: string): Promise<MlflowModelVersion | null> {
    const query = new URLSearchParams({ name: this.#name, alias });
    try {
      const res = await this.#client.call<{ model_version: MlflowModelVersion }>(
        'GET',
        `mlflow/registered-models/alias?${query}`,
      );
      return res.model_version;
    } catch (err) {
      // MLflow 3.17 answers 400 INVALID_PARAMETER_VALUE "alias not found", 404 for no model.
      if (
        isMlflowCode(err, 'RESOURCE_DOES_NOT_EXIST') ||
        isMlflowCode(err, 'INVALID_PARAMETER_VALUE')
      ) {
        return null;
      }
      throw err;
    }
  }

  async #run(runId: string): Promise<MlflowRun> {
    const query = new URLSearchParams({ run_id: runId });
    return (await this.#client.call<{ run: MlflowRun }>('GET', `mlflow/runs/get?${query}`)).run;
  }

  async #runMetrics(runId: string): Promise<Record<string, number>> {
    const run = await this.#run(runId);
    return Object.fromEntries((run.data?.metrics ?? []).map((m) => [m.key, m.value]));
  }

  /** Downloads the version's model.onnx into the cache unless a copy with its sha256 is there. */
  async #download(mv: MlflowModelVersion): Promise<string> {
    const dir = join(this.#cacheDir, this.#name, mv.version);
    const file = join(dir, ARTIFACT_FILE);
    const want = mv.tags?.find((t) => t.key === SHA_TAG)?.value;
    if (want !== undefined && (await stat(file).catch(() => null))) {
      if ((await sha256File(file)) === want) return file;
    }
    const path = `mlflow-artifacts/artifacts/${artifactPath(mv.source)}/${ARTIFACT_FILE}`;
    const bytes = await this.#client.call<Buffer>('GET', path, undefined, { binary: true });
    await mkdir(dir, { recursive: true });
    const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const handle = await open(tmp, 'wx');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    const got = await sha256File(tmp);
    if (want !== undefined && got !== want) {
      await rm(tmp, { force: true });
      throw new RegistryError(
        REGISTRY_ERRORS.corrupt,
        `model version ${mv.version}: downloaded ${basename(file)} has sha256 ${got}, registered ${want}`,
      );
    }
    await rename(tmp, file);
    return file;
  }
}

function isMlflowCode(err: unknown, code: string): boolean {
  return err instanceof RegistryError && err.mlflowCode === code;
}

/**
 * `mlflow-artifacts:/1/<run>/artifacts` (or `mlflow-artifacts://host:port/1/...`) → the path
 * under `/api/2.0/mlflow-artifacts/artifacts/`. Anything else means the server stores artifacts
 * where this process cannot reach them through MLflow.
 */
export function artifactPath(uri: string): string {
  const match = /^mlflow-artifacts:(?:\/\/[^/]*)?\/*(.*)$/.exec(uri);
  if (!match) {
    throw new RegistryError(
      REGISTRY_ERRORS.artifactsNotProxied,
      `artifact location "${uri}" is not served by the tracking server; start it with --serve-artifacts`,
    );
  }
  return (match[1] ?? '').replace(/\/+$/, '');
}
