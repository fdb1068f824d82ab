"""fastbp.dask on a LocalCluster: a gradient pass and a fit over 2,000,000 x 100 float64 rows
(chunks of 100,000, generated on the workers and persisted there: the data never sits in one
process), 10 classes, against dask-ml's LogisticRegression on the same cluster.

    python benchmarks/dask_scaling.py [--json FILE] [--rows N] [--skip-admm]

- "pass": one softmax_nll gradient (loss, dW, db) at fixed W, fastbp.dask.linear_head against
  the same gradient written in dask.array operations (what dask-glm does), checked equal; the
  median of 3, on 1 and 2 worker processes (fastbp's and BLAS's threads: 2 / workers each).
- "fit 10 classes": fastbp.dask.LinearClassifier (softmax_nll, L-BFGS-B; at dask-ml's tol and
  at its own default, 1e-6) against dask-ml, which has no multinomial mode: one-vs-rest, ten
  binary fits with its lbfgs solver (its default admm takes minutes per binary fit here: the
  binary rows). Accuracy and mean log-loss of each model's probabilities (dask-ml's
  one-vs-rest ones normalised, scikit-learn's rule).
- "fit 2 classes" (y = class < 5): fastbp.dask.LinearClassifier("sigmoid_bce"), the same
  model as dask-ml's (both tols), against dask-ml's default solver (admm) and its lbfgs.
Same penalty everywhere: dask-ml's C = 1 (its l2 term is 1/(2C) ||beta||^2 on the sum of the
losses), fastbp's alpha = 1 / (C rows) on the mean; same tol, 1e-4 (dask-ml's default).
"""
import argparse
import json
import statistics
import time

import numpy as np

D, K, CHUNK, TOL = 100, 10, 100_000, 1e-4


def _block(block_info=None):
    i = block_info[None]["chunk-location"][0]
    return np.random.default_rng([7, i]).standard_normal((CHUNK, D))


def _labels(X, W, block_info=None):
    """A linear teacher with label noise: about 90% of labels follow argmax X W^T."""
    rng = np.random.default_rng([8, block_info[0]["chunk-location"][0]])
    y = (X @ W.T).argmax(axis=1)
    flip = rng.random(len(y)) < 0.1
    y[flip] = rng.integers(0, K, int(flip.sum()))
    return y


def _data(client, rows):
    import dask.array as da
    teacher = 0.3 * np.random.default_rng(0).standard_normal((K, D))
    X = da.map_blocks(_block, dtype=np.float64, chunks=((CHUNK,) * (rows // CHUNK), (D,)))
    y = X.map_blocks(_labels, teacher, drop_axis=1, dtype=np.int64)
    X, y = client.persist([X, y])
    client.wait_for_workers(1)
    from distributed import wait
    wait([X, y])
    return X, y


def _generic_pass(X, y, W, b):
    """The softmax_nll gradient in dask.array operations."""
    import dask
    import dask.array as da
    S = X @ W.T + b
    S = S - S.max(axis=1, keepdims=True)
    E = da.exp(S)
    Z = E.sum(axis=1, keepdims=True)
    G = E / Z - (y[:, None] == np.arange(K))
    loss = (da.log(Z)[:, 0] - da.choose(y, S.T)).mean()
    N = X.shape[0]
    return dask.compute(loss, (G.T @ X) / N, G.sum(axis=0) / N)


def _median(f, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _quality(P, y):
    """(accuracy, mean log-loss) of probability rows P (dask) for labels y."""
    import dask
    import dask.array as da
    acc = (P.argmax(axis=1) == y).mean()
    nll = -da.log(da.choose(y, P.T)).mean()
    return tuple(float(v) for v in dask.compute(acc, nll))


def _fastbp_fit(X, y, head, tol=TOL):
    import fastbp.dask as fbd
    t0 = time.perf_counter()
    clf = fbd.LinearClassifier(head, alpha=1.0 / X.shape[0], tol=tol, max_iter=500).fit(X, y)
    seconds = time.perf_counter() - t0
    return seconds, _quality(clf.predict_proba(X), y), clf.n_iter_


def _dask_ml_fit(X, y, solver, classes):
    """dask-ml: one binary fit per class beyond two (one-vs-rest), probabilities normalised."""
    import dask.array as da
    from dask_ml.linear_model import LogisticRegression
    t0 = time.perf_counter()
    if len(classes) == 2:
        m = LogisticRegression(C=1.0, tol=TOL, solver=solver).fit(X, y)
        seconds = time.perf_counter() - t0
        p = m.predict_proba(X)
        P = p if p.ndim == 2 else da.stack([1 - p, p], axis=1)
    else:
        models = [LogisticRegression(C=1.0, tol=TOL, solver=solver).fit(X, (y == k).astype(int))
                  for k in classes]
        seconds = time.perf_counter() - t0
        P = da.stack([m.predict_proba(X) for m in models], axis=1)
        P = P[..., -1] if P.ndim == 3 else P
        P = P / P.sum(axis=1, keepdims=True)
    return seconds, _quality(P, y)


def run(rows, skip_admm):
    import distributed

    import fastbp
    import fastbp.dask as fbd
    results = []
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                      dashboard_address=None, silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            client.run(fastbp.set_num_threads, 2 // workers)
            X, y = _data(client, rows)
            W = 0.01 * np.random.default_rng(3).standard_normal((K, D))
            b = np.zeros(K)
            ours, g = _median(lambda: fbd.linear_head(X, W, b, y))
            theirs, (loss, dW, db) = _median(lambda: _generic_pass(X, y, W, b))
            np.testing.assert_allclose([g.loss], [loss], rtol=1e-10)
            np.testing.assert_allclose(g.dW, dW, rtol=1e-8, atol=1e-12)
            results.append({"what": "pass", "workers": workers, "fastbp_s": ours,
                            "dask_array_s": theirs})
            print(results[-1], flush=True)
            for tol in (TOL, 1e-6):
                seconds, (acc, nll), iters = _fastbp_fit(X, y, "softmax_nll", tol)
                results.append({"what": "fit 10 classes", "workers": workers, "way": "fastbp."
                                 f"dask LinearClassifier softmax_nll, tol {tol:g}",
                                 "seconds": seconds, "accuracy": acc, "log_loss": nll,
                                 "iterations": iters})
                print(results[-1], flush=True)
            if workers == 2:
                yb = (y < K // 2).astype(np.int64)
                for tol in (TOL, 1e-6):
                    seconds, (acc, nll), iters = _fastbp_fit(X, yb, "sigmoid_bce", tol)
                    results.append({"what": "fit 2 classes", "workers": 2, "way": "fastbp.dask "
                                    f"LinearClassifier sigmoid_bce, tol {tol:g}",
                                    "seconds": seconds, "accuracy": acc, "log_loss": nll,
                                    "iterations": iters})
                    print(results[-1], flush=True)
                for solver in ("lbfgs",) if skip_admm else ("lbfgs", "admm"):
                    seconds, (acc, nll) = _dask_ml_fit(X, yb, solver, (0, 1))
                    results.append({"what": "fit 2 classes", "workers": 2, "way": f"dask-ml "
                                    f"LogisticRegression {solver}", "seconds": seconds,
                                    "accuracy": acc, "log_loss": nll})
                    print(results[-1], flush=True)
                seconds, (acc, nll) = _dask_ml_fit(X, y, "lbfgs", range(K))
                results.append({"what": "fit 10 classes", "workers": 2, "way": "dask-ml "
                                "LogisticRegression lbfgs, one-vs-rest", "seconds": seconds,
                                "accuracy": acc, "log_loss": nll})
                print(results[-1], flush=True)
    return {"rows": rows, "results": results}


def table(run):
    res = run["results"]
    lines = []
    if "provenance" in run:
        from scaling import provenance_line
        lines = [provenance_line(run["provenance"]), ""]
    lines += [f"{run['rows']:,} x {D} float64, {K} classes, chunks of {CHUNK:,} rows, on a "
             f"LocalCluster of 1 or 2 worker processes (`python benchmarks/dask_scaling.py`).",
             "", "| gradient pass | workers | fastbp.dask | dask.array operations | ratio |",
             "|---|---|---|---|---|"]
    for r in res:
        if r["what"] == "pass":
            lines.append(f"| softmax_nll loss, dW, db | {r['workers']} | {r['fastbp_s']:.3f} s "
                         f"| {r['dask_array_s']:.3f} s | "
                         f"{r['dask_array_s'] / r['fastbp_s']:.1f}x |")
    lines += ["", "| fit | workers | way | time | vs fastbp | accuracy | log-loss |",
              "|---|---|---|---|---|---|---|"]
    for what in ("fit 10 classes", "fit 2 classes"):
        rows = [r for r in res if r["what"] == what]
        base = {}
        for r in rows:      # "vs fastbp": its first row per worker count (dask-ml's tol)
            if r["way"].startswith("fastbp"):
                base.setdefault(r["workers"], r["seconds"])
        for r in rows:
            ratio = r["seconds"] / base[r["workers"]]
            lines.append(f"| {what} | {r['workers']} | {r['way']} | {r['seconds']:.1f} s | "
                         f"{ratio:.1f}x | {r['accuracy']:.4f} | {r['log_loss']:.4f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--skip-admm", action="store_true",
                    help="leave out dask-ml's default solver (minutes at the full size)")
    args = ap.parse_args()
    out = run(args.rows, args.skip_admm)
    from scaling import provenance
    out["provenance"] = provenance()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(table(out))


if __name__ == "__main__":
    main()
