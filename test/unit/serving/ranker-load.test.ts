import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FEATURE_NAMES } from '../../../serving/rank-features.js';
import {
  checkFeatureNames,
  loadRanker,
  ModelFeaturesMismatchError,
  ModelInvalidError,
  readOnnxMetadata,
} from '../../../serving/ranker.js';

// Hand-made protobuf pieces (ONNX ModelProto): field numbers from onnx.proto.
const varint = (n: number): number[] => {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
};
const bytesField = (field: number, body: Uint8Array | number[]): number[] => [
  ...varint((field << 3) | 2),
  ...varint(body.length),
  ...body,
];
const str = (s: string) => [...new TextEncoder().encode(s)];
const entry = (k: string, v: string) =>
  bytesField(14, [...bytesField(1, str(k)), ...bytesField(2, str(v))]);
const model = (...parts: number[][]) => new Uint8Array(parts.flat());
const IR = [...varint(1 << 3), 8]; // ir_version = 8
const GRAPH = bytesField(7, bytesField(1, [])); // a graph with one empty node

describe('ranker model checks', () => {
  it('reads metadata_props and model_version, skipping the graph', () => {
    const bytes = model(
      IR,
      GRAPH,
      [...varint(5 << 3), ...varint(300)],
      entry('a', 'x'),
      entry('feature_names', '["f"]'),
    );
    assert.deepEqual(readOnnxMetadata(bytes), {
      props: { a: 'x', feature_names: '["f"]' },
      modelVersion: '300',
    });
  });

  it('refuses bytes that are not a model', () => {
    const full = model(IR, GRAPH, entry('feature_names', '[]'));
    assert.throws(
      () => readOnnxMetadata(full.subarray(0, full.length - 3), 'm.onnx'),
      (err: unknown) => {
        assert.ok(err instanceof ModelInvalidError);
        assert.match(err.message, /^m\.onnx: not a valid ONNX model \(length \d+ past the end/);
        return true;
      },
    );
    assert.throws(() => readOnnxMetadata(model(IR, entry('k', 'v'))), /no graph/);
    assert.throws(() => readOnnxMetadata(new Uint8Array([0, 1, 2])), ModelInvalidError);
  });

  it('names the first differing feature', () => {
    checkFeatureNames(FEATURE_NAMES);
    assert.throws(
      () => checkFeatureNames([...FEATURE_NAMES.slice(0, -1)], 'old.onnx'),
      (err: unknown) => {
        assert.ok(err instanceof ModelFeaturesMismatchError);
        assert.equal(err.index, FEATURE_NAMES.length - 1);
        assert.match(err.message, /old\.onnx: .* model has \(nothing\), expected "profile_covis"/);
        return true;
      },
    );
    assert.throws(
      () => checkFeatureNames([...FEATURE_NAMES, 'extra']),
      /position 30: model has "extra", expected \(nothing\)/,
    );
  });

  it('refuses a model without feature names before running it', async () => {
    await assert.rejects(
      loadRanker(model(IR, GRAPH)),
      /no feature_names in the ONNX metadata_props/,
    );
    await assert.rejects(
      loadRanker(model(IR, GRAPH, entry('feature_names', '["score_batch"]'))),
      ModelFeaturesMismatchError,
    );
  });
});
