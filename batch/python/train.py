"""Train the reranker (LightGBM lambdarank) and export it to ONNX.

Input Parquet (written by batch/training-data.ts): a `qid` column (one query = one user's
candidate list, rows of a query contiguous), a `label` column (graded relevance, integer
0..30) and one float32 column per feature, in the order of serving/rank-features.ts
FEATURE_NAMES. The feature names are taken from the Parquet columns, never restated here.

Train:
    python train.py --train train.parquet [--valid valid.parquet] --out-dir DIR
                    [--params '{"learning_rate": 0.1}']
  writes DIR/model.onnx (input `features` [N, F] float32, one score per row; metadata_props
  `feature_names` = JSON list, `objective`, `trained_at`, `n_features`, ...), DIR/model.txt
  (the LightGBM booster) and DIR/summary.json, and prints the summary as the last stdout line.
  Without --valid, a fixed share of the queries (chosen by a seeded shuffle) is held out for
  early stopping.

Predict (for the parity test; the booster's own predict, in float64):
    python train.py --predict data.parquet --model DIR/model.txt --out scores.json
"""

import argparse
import json
import sys
import time
from datetime import datetime, timezone

import lightgbm as lgb
import numpy as np
import onnx
import onnxmltools
import onnxruntime as ort
import pyarrow.parquet as pq
from onnxmltools.convert.common.data_types import FloatTensorType

RESERVED = ("qid", "label")
INPUT_NAME = "features"
DEFAULT_PARAMS = {
    "objective": "lambdarank",
    "metric": "ndcg",
    "eval_at": [10],
    "learning_rate": 0.05,
    # 15 leaves of 500 rows with L2 10 ranked the MovieLens replay's logged feeds better (NDCG@10
    # 0.1335 against 0.1235) but grew 2.4 times the trees: 430-450 us of ONNX CPU per 200-row
    # feed against 230-270 (bench/README.md), past the serving budget. Kept as they were.
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "lambdarank_truncation_level": 20,
    # Reproducible: fixed seed, deterministic histogram building, two threads (the machine
    # has two cores and the serving process runs beside it).
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbosity": -1,
}
DEFAULT_ROUNDS = 500
DEFAULT_EARLY_STOP = 30
DEFAULT_VALID_SHARE = 0.2


def round_thresholds_down(model, booster):
    """LightGBM splits on `x <= t` with t a double; ONNX Runtime compares the float32 input with
    t stored as float32, rounded to nearest. When t rounds up (t32 > t), an input equal to t32 goes
    left in ONNX and right in LightGBM: features whose values lie a float32 step apart (item ages
    of items added seconds apart, long-tail scores) then score differently in serving. For a
    float32 x, `x <= t` holds exactly when `x <= floor32(t)`, so each threshold that was rounded
    up is stepped down to the float32 below. Returns the number of thresholds changed."""
    doubles = {}

    def walk(node):
        if "split_feature" in node:
            key = (node["split_feature"], np.float32(node["threshold"]))
            doubles.setdefault(key, []).append(float(node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    changed = 0
    for node in model.graph.node:
        if node.op_type != "TreeEnsembleRegressor":
            continue
        attrs = {a.name: a for a in node.attribute}
        values = attrs["nodes_values"].floats
        features = attrs["nodes_featureids"].ints
        modes = attrs["nodes_modes"].strings
        for i in range(len(values)):
            if modes[i] != b"BRANCH_LEQ":
                continue
            t32 = np.float32(values[i])
            ts = doubles.get((features[i], t32))
            if ts and min(ts) < float(t32):
                values[i] = float(np.nextafter(t32, np.float32(-np.inf)))
                changed += 1
    return changed


def read_table(path):
    """Returns (qid int64[N], label float64[N], X float32[N, F], feature names)."""
    table = pq.read_table(path)
    names = [c for c in table.column_names if c not in RESERVED]
    for col in RESERVED:
        if col not in table.column_names:
            sys.exit(f"{path}: no `{col}` column")
    qid = table.column("qid").to_numpy().astype(np.int64)
    label = table.column("label").to_numpy().astype(np.float64)
    n = table.num_rows
    x = np.empty((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        x[:, j] = table.column(name).to_numpy(zero_copy_only=False).astype(np.float32)
    return qid, label, x, names


def group_sizes(qid):
    """Sizes of the runs of equal qid; refuses a query whose rows are not contiguous."""
    if len(qid) == 0:
        return np.array([], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, qid[1:] != qid[:-1]])
    if len(np.unique(qid[starts])) != len(starts):
        sys.exit("rows of a query (qid) must be contiguous")
    return np.diff(np.r_[starts, len(qid)])


def keep_rows(qid, label, x, mask):
    return qid[mask], label[mask], x[mask]


def drop_unlabelled(qid, label, x):
    """Drops queries with no relevant item: they carry no gradient in lambdarank, and LightGBM
    scores their NDCG as 1, which would inflate the validation metric."""
    positive = np.unique(qid[label > 0])
    return keep_rows(qid, label, x, np.isin(qid, positive))


def split_queries(qid, share, seed):
    """Boolean mask of the rows of a seeded random `share` of the queries (validation)."""
    queries = np.unique(qid)
    rng = np.random.default_rng(seed)
    held = rng.permutation(queries)[: max(1, int(round(len(queries) * share)))]
    return np.isin(qid, held)


def train(args):
    t0 = time.time()
    params = dict(DEFAULT_PARAMS)
    extra = json.loads(args.params) if args.params else {}
    rounds = int(extra.pop("num_boost_round", DEFAULT_ROUNDS))
    early = int(extra.pop("early_stopping_rounds", DEFAULT_EARLY_STOP))
    valid_share = float(extra.pop("valid_share", DEFAULT_VALID_SHARE))
    params.update(extra)

    qid, label, x, names = read_table(args.train)
    if args.valid:
        vq, vl, vx, vnames = read_table(args.valid)
        if vnames != names:
            sys.exit(f"validation columns differ from training columns: {vnames} vs {names}")
    else:
        held = split_queries(qid, valid_share, params["seed"])
        vq, vl, vx = keep_rows(qid, label, x, held)
        qid, label, x = keep_rows(qid, label, x, ~held)
    qid, label, x = drop_unlabelled(qid, label, x)
    vq, vl, vx = drop_unlabelled(vq, vl, vx)
    if len(qid) == 0 or len(vq) == 0:
        sys.exit("no query with a relevant item in the training or validation data")

    dtrain = lgb.Dataset(x, label, group=group_sizes(qid), feature_name=names, free_raw_data=False)
    dvalid = lgb.Dataset(vx, vl, group=group_sizes(vq), reference=dtrain)
    evals = {}
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        valid_sets=[dtrain, dvalid],
        valid_names=["train", "valid"],
        callbacks=[
            lgb.early_stopping(early, first_metric_only=True, verbose=False),
            lgb.record_evaluation(evals),
        ],
    )
    best = booster.best_iteration or booster.current_iteration()
    train_seconds = time.time() - t0

    out = args.out_dir.rstrip("/")
    booster.save_model(f"{out}/model.txt", num_iteration=best)
    # Reload so the exported trees are exactly the saved best-iteration model.
    booster = lgb.Booster(model_file=f"{out}/model.txt")

    trained_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # The Booster (not the sklearn wrapper) converts with its lambdarank objective as a plain
    # regression ensemble: one raw score per row, no ZipMap/probabilities.
    model = onnxmltools.convert_lightgbm(
        booster,
        name="recsys-reranker",
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(names)]))],
        target_opset=15,
        zipmap=False,
    )
    stepped = round_thresholds_down(model, booster)
    meta = {
        "feature_names": json.dumps(names),
        "objective": str(params["objective"]),
        "trained_at": trained_at,
        "n_features": str(len(names)),
        "best_iteration": str(best),
        "lightgbm_version": lgb.__version__,
    }
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save_model(model, f"{out}/model.onnx")

    # Check the exported file itself: names round-trip, and ONNX Runtime agrees with the
    # booster on the validation rows (a conversion problem fails training, not serving).
    saved = onnx.load(f"{out}/model.onnx")
    props = {p.key: p.value for p in saved.metadata_props}
    if json.loads(props["feature_names"]) != names:
        sys.exit("feature_names in the exported ONNX model differ from the training columns")
    sess = ort.InferenceSession(f"{out}/model.onnx", providers=["CPUExecutionProvider"])
    onnx_scores = sess.run(None, {INPUT_NAME: vx})[0].reshape(-1)
    lgb_scores = booster.predict(vx)
    parity = float(np.max(np.abs(onnx_scores - lgb_scores))) if len(vx) else 0.0
    if parity > 1e-4:
        sys.exit(f"ONNX export disagrees with LightGBM by {parity} on validation rows")

    curve = evals.get("valid", {}).get("ndcg@10", [])
    train_curve = evals.get("train", {}).get("ndcg@10", [])
    summary = {
        "objective": params["objective"],
        "trained_at": trained_at,
        "best_iteration": int(best),
        "valid_ndcg_at_10": float(curve[best - 1]) if curve else None,
        "train_ndcg_at_10": float(train_curve[best - 1]) if train_curve else None,
        "n_features": len(names),
        "feature_names": names,
        "train_rows": int(len(qid)),
        "train_queries": int(len(np.unique(qid))),
        "valid_rows": int(len(vq)),
        "valid_queries": int(len(np.unique(vq))),
        "onnx_parity_max_abs_diff": parity,
        "onnx_thresholds_stepped_down": stepped,
        "train_seconds": round(train_seconds, 3),
        "params": {**params, "num_boost_round": rounds, "early_stopping_rounds": early},
        "onnx_path": f"{out}/model.onnx",
        "booster_path": f"{out}/model.txt",
    }
    with open(f"{out}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))


def predict(args):
    _, _, x, names = read_table(args.predict)
    booster = lgb.Booster(model_file=args.model)
    if booster.feature_name() != names:
        sys.exit(f"model features {booster.feature_name()} differ from the file's {names}")
    scores = booster.predict(x)
    with open(args.out, "w") as f:
        json.dump([float(s) for s in scores], f)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train")
    p.add_argument("--valid")
    p.add_argument("--out-dir")
    p.add_argument("--params", help="JSON object merged over the LightGBM defaults")
    p.add_argument("--predict", help="Parquet to score with --model")
    p.add_argument("--model", help="LightGBM model.txt for --predict")
    p.add_argument("--out", help="JSON file the --predict scores go to")
    args = p.parse_args()
    if args.predict:
        if not (args.model and args.out):
            p.error("--predict needs --model and --out")
        predict(args)
    elif args.train and args.out_dir:
        train(args)
    else:
        p.error("give --train and --out-dir, or --predict, --model and --out")


if __name__ == "__main__":
    main()
