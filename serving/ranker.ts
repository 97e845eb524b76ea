/**
 * The reranker at serving time: an ONNX model (LightGBM lambdarank exported by
 * `batch/python/train.py`) run with ONNX Runtime on the matrix {@link fillFeatures} filled.
 *
 * Which features a model expects travels inside the model: train.py writes the ordered names
 * as a JSON list under the `feature_names` key of the ONNX `metadata_props` (and checks the
 * saved file round-trips them). onnxruntime-node 1.23 exposes input/output shapes but not
 * custom metadata, so {@link readOnnxMetadata} reads `metadata_props` from the ModelProto
 * bytes itself (a 60-line protobuf walk of the top-level fields; the graph is skipped by its
 * length, not parsed). One file, no sidecar that could be copied without its model. A model
 * whose names are not exactly {@link FEATURE_NAMES} is refused at load, naming the first
 * difference: scoring with shifted columns would give plausible-looking garbage.
 *
 * @example
 *   const ranker = await loadRanker('.local/models/3/model.onnx');
 *   const x = new Float32Array(n * FEATURE_COUNT);
 *   fillFeatures(x, ctx, candidates);
 *   const scores = await ranker.score(x, n); // Float32Array(n), higher = better
 */
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import { RecsysError } from '../core/index.js';
import { FEATURE_COUNT, FEATURE_NAMES } from './rank-features.js';

/** The model file cannot be used: unreadable, not ONNX, no feature names, wrong input. */
export class ModelInvalidError extends RecsysError {
  readonly source: string;
  constructor(source: string, message: string, options: { cause?: unknown } = {}) {
    super('RECSYS_MODEL_INVALID', `${source}: ${message}`, options);
    this.source = source;
  }
}

/** The model was trained on other features than this build computes. */
export class ModelFeaturesMismatchError extends RecsysError {
  readonly source: string;
  /** First position where the model's names and {@link FEATURE_NAMES} differ. */
  readonly index: number;
  constructor(source: string, index: number, message: string) {
    super('RECSYS_MODEL_FEATURES_MISMATCH', `${source}: ${message}`);
    this.source = source;
    this.index = index;
  }
}

export interface Ranker {
  /** `model_version` from the metadata or the ModelProto, when the model carries one. */
  readonly version: string | undefined;
  readonly featureNames: readonly string[];
  /** Every `metadata_props` entry (objective, trained_at, ...). */
  readonly metadata: Readonly<Record<string, string>>;
  /**
   * Scores `n` candidates whose features are the first `n * FEATURE_COUNT` values of
   * `features` (row-major) with one ONNX Runtime run. Returns a new Float32Array(n).
   */
  score(features: Float32Array, n: number): Promise<Float32Array>;
  release(): Promise<void>;
}

export interface LoadRankerOptions {
  /** Threads ONNX Runtime uses inside one run. @default 1 (see {@link loadRanker}) */
  intraOpNumThreads?: number;
}

/**
 * Loads, checks and warms up a model from a file path or its bytes.
 *
 * One intra-op thread: a tree ensemble over 200 rows takes well under a millisecond, less than
 * waking a thread pool costs, and the serving process runs many requests concurrently on
 * 2 cores anyway.
 */
export async function loadRanker(
  model: string | Uint8Array,
  options: LoadRankerOptions = {},
): Promise<Ranker> {
  const source = typeof model === 'string' ? model : `<${model.byteLength} bytes>`;
  let bytes: Uint8Array;
  try {
    bytes = typeof model === 'string' ? await readFile(model) : model;
  } catch (err) {
    throw new ModelInvalidError(source, `cannot read: ${(err as Error).message}`, { cause: err });
  }
  const meta = readOnnxMetadata(bytes, source);
  const names = parseFeatureNames(meta.props, source);
  checkFeatureNames(names, source);

  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, {
      intraOpNumThreads: options.intraOpNumThreads ?? 1,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
  } catch (err) {
    throw new ModelInvalidError(source, `ONNX Runtime refused it: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  const input = session.inputMetadata[0];
  if (
    session.inputNames.length !== 1 ||
    inputName === undefined ||
    outputName === undefined ||
    !input?.isTensor ||
    input.type !== 'float32' ||
    input.shape.length !== 2 ||
    input.shape[1] !== FEATURE_COUNT
  ) {
    await session.release();
    throw new ModelInvalidError(
      source,
      `expected one float32 input of shape [N, ${FEATURE_COUNT}], got ` +
        JSON.stringify(session.inputMetadata),
    );
  }

  const score = async (features: Float32Array, n: number): Promise<Float32Array> => {
    if (n === 0) return new Float32Array(0);
    const size = n * FEATURE_COUNT;
    if (features.length < size) {
      throw new RangeError(`${features.length} feature values for ${n} candidates (need ${size})`);
    }
    // subarray shares the buffer: no copy of the matrix on the way in.
    const tensor = new ort.Tensor('float32', features.subarray(0, size), [n, FEATURE_COUNT]);
    const out = (await session.run({ [inputName]: tensor }, [outputName]))[outputName];
    const data = out?.data;
    if (!(data instanceof Float32Array) || data.length !== n) {
      throw new ModelInvalidError(source, `output ${outputName} is not one float32 per row`);
    }
    return data;
  };

  // Warm-up: the first run allocates ONNX Runtime's arenas and is several times slower; take it
  // here, and prove the model runs and answers one score per row before it serves.
  try {
    await score(new Float32Array(FEATURE_COUNT), 1);
  } catch (err) {
    await session.release();
    if (err instanceof RecsysError) throw err;
    throw new ModelInvalidError(source, `warm-up run failed: ${(err as Error).message}`, {
      cause: err,
    });
  }

  const version = meta.props.model_version ?? meta.modelVersion;
  return {
    version,
    featureNames: names,
    metadata: Object.freeze({ ...meta.props }),
    score,
    release: () => session.release(),
  };
}

function parseFeatureNames(props: Record<string, string>, source: string): string[] {
  const raw = props.feature_names;
  if (raw === undefined) {
    throw new ModelInvalidError(source, 'no feature_names in the ONNX metadata_props');
  }
  let names: unknown;
  try {
    names = JSON.parse(raw);
  } catch (err) {
    throw new ModelInvalidError(source, 'feature_names is not JSON', { cause: err });
  }
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
    throw new ModelInvalidError(source, 'feature_names is not a JSON list of strings');
  }
  return names as string[];
}

/** Throws {@link ModelFeaturesMismatchError} naming the first position that differs. */
export function checkFeatureNames(names: readonly string[], source = 'model'): void {
  const len = Math.max(names.length, FEATURE_NAMES.length);
  for (let i = 0; i < len; i++) {
    if (names[i] !== FEATURE_NAMES[i]) {
      const has = names[i] === undefined ? '(nothing)' : `"${names[i]}"`;
      const want = FEATURE_NAMES[i] === undefined ? '(nothing)' : `"${FEATURE_NAMES[i]}"`;
      throw new ModelFeaturesMismatchError(
        source,
        i,
        `model features differ from this build's at position ${i}: model has ${has}, ` +
          `expected ${want} (model ${names.length} features, build ${FEATURE_NAMES.length})`,
      );
    }
  }
}

/**
 * `metadata_props` (field 14, repeated {key = 1, value = 2}) and `model_version` (field 5) of
 * an ONNX ModelProto. Walks only the top-level fields; throws {@link ModelInvalidError} on
 * bytes that are not a well-formed protobuf message (a truncated or corrupt file).
 */
export function readOnnxMetadata(
  bytes: Uint8Array,
  source = 'model',
): { props: Record<string, string>; modelVersion: string | undefined } {
  const props: Record<string, string> = {};
  let modelVersion: string | undefined;
  let sawGraph = false;
  const fail = (why: string): never => {
    throw new ModelInvalidError(source, `not a valid ONNX model (${why})`);
  };
  const r = new Reader(bytes, fail);
  while (r.pos < bytes.length) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 0) fail(`field 0 at byte ${r.pos}`);
    if (field === 14 && wire === 2) {
      const end = r.lengthEnd();
      let key = '';
      let value = '';
      while (r.pos < end) {
        const t = r.varint();
        if (t === (1 << 3) + 2) key = r.string();
        else if (t === (2 << 3) + 2) value = r.string();
        else r.skip(t % 8);
      }
      if (r.pos !== end) fail('metadata entry overruns');
      props[key] = value;
    } else if (field === 5 && wire === 0) {
      const v = r.varint();
      if (v !== 0) modelVersion = String(v);
    } else {
      if (field === 7 && wire === 2) sawGraph = true;
      r.skip(wire);
    }
  }
  if (!sawGraph) fail('no graph');
  return { props, modelVersion };
}

/** Just enough of the protobuf wire format for {@link readOnnxMetadata}. */
class Reader {
  pos = 0;
  readonly #b: Uint8Array;
  readonly #fail: (why: string) => never;
  static readonly #utf8 = new TextDecoder('utf-8', { fatal: true });

  constructor(bytes: Uint8Array, fail: (why: string) => never) {
    this.#b = bytes;
    this.#fail = fail;
  }

  /** Up to 2^53 exactly (multiplication, not 32-bit shifts); enough for tags and lengths. */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const byte = this.#b[this.pos++];
      if (byte === undefined) return this.#fail('truncated varint');
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 128;
    }
    return this.#fail('varint longer than 10 bytes');
  }

  lengthEnd(): number {
    const len = this.varint();
    const end = this.pos + len;
    if (end > this.#b.length) this.#fail(`length ${len} past the end at byte ${this.pos}`);
    return end;
  }

  string(): string {
    const end = this.lengthEnd();
    try {
      return Reader.#utf8.decode(this.#b.subarray(this.pos, end));
    } catch {
      return this.#fail('string is not UTF-8');
    } finally {
      this.pos = end;
    }
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.pos = this.lengthEnd();
    else if (wire === 5) this.pos += 4;
    else this.#fail(`wire type ${wire}`);
    if (this.pos > this.#b.length) this.#fail('field past the end');
  }
}
