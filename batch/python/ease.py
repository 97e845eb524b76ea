"""EASE item-item weights (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019).

Fits, over the train interactions (one row per user and item, written by batch/etl.ts), the
closed form B = I - P diagMat(1 / diag(P)) with P = (X^T X + lambda I)^-1, X the binary
user x item matrix of the `--items` most interacted items, and writes per item h its `--k`
largest positive weights B[h, j]: a user's EASE score for item j is the sum of B[h, j] over
the items h the user has (serving/profile.ts sums them over the user's recent items).

    python ease.py --interactions interactions_train.parquet --out ease.parquet
                   [--items 5000] [--k 50] [--lam 200]

Output Parquet: itemId, neighbourId (strings), score (float64), rank (1 = best). Always
written, empty when there is nothing to fit. Prints one JSON summary line.
"""

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
# scipy comes with lightgbm (its dependency); sparse X^T X keeps X out of memory as a dense array.
import scipy.sparse as sp

SCHEMA = pa.schema(
    [("itemId", pa.string()), ("neighbourId", pa.string()), ("score", pa.float64()), ("rank", pa.int64())]
)


def fit(users, items, n_items, k, lam):
    """Per item its top-k positive EASE weights: (rows, cols, weights) over item indices."""
    X = sp.csr_matrix((np.ones(len(users), np.float64), (users, items)), shape=(users.max() + 1, n_items))
    X.data[:] = 1.0  # duplicates summed by csr_matrix: binary again
    G = (X.T @ X).toarray()
    G[np.diag_indices(n_items)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    B[np.diag_indices(n_items)] = 0.0
    kk = min(k, n_items - 1)
    top = np.argpartition(-B, kk - 1, axis=1)[:, :kk] if kk > 0 else np.zeros((n_items, 0), int)
    w = np.take_along_axis(B, top, axis=1)
    order = np.argsort(-w, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    w = np.take_along_axis(w, order, axis=1)
    rows = np.repeat(np.arange(n_items), top.shape[1])
    keep = w.ravel() > 0
    return rows[keep], top.ravel()[keep], w.ravel()[keep]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interactions", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--lam", type=float, default=200.0)
    a = ap.parse_args()
    t0 = time.time()
    table = pq.read_table(a.interactions, columns=["userId", "itemId"])
    user_ids = table.column("userId").to_pylist()
    item_ids = table.column("itemId").to_pylist()
    out = {"itemId": [], "neighbourId": [], "score": [], "rank": []}
    fitted = 0
    if a.items > 0 and len(item_ids) > 0:
        names, item_idx, counts = np.unique(np.array(item_ids, dtype=object), return_inverse=True, return_counts=True)
        # The `items` most interacted items (ties by id), renumbered 0..M-1.
        chosen = np.lexsort((names.astype(str), -counts))[: a.items]
        remap = np.full(len(names), -1)
        remap[chosen] = np.arange(len(chosen))
        col = remap[item_idx]
        _, user_idx = np.unique(np.array(user_ids, dtype=object), return_inverse=True)
        mask = col >= 0
        fitted = len(chosen)
        if fitted > 1:
            rows, cols, w = fit(user_idx[mask], col[mask], fitted, a.k, a.lam)
            chosen_names = names[chosen].astype(str)
            out["itemId"] = chosen_names[rows].tolist()
            out["neighbourId"] = chosen_names[cols].tolist()
            out["score"] = w.tolist()
            # Rows come grouped by item, best first: rank = position within the item's run.
            starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
            rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
            out["rank"] = (rank + 1).tolist()
    pq.write_table(pa.table(out, schema=SCHEMA), a.out)
    print(json.dumps({"items": fitted, "pairs": len(out["score"]), "seconds": round(time.time() - t0, 2)}))


if __name__ == "__main__":
    main()
