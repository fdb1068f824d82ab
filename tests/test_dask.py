"""fastbp.dask (docs/api.md section 9): linear_head and mlp_loss_grad over the row chunks of a
dask array equal the one-machine call for every head and option; LinearClassifier; a real
LocalCluster of worker processes, a worker killed mid-pass, data larger than a worker's memory.
Skipped where dask is not installed (`make test` installs it)."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastbp
from cases import assert_close, case_id, head_cases
from test_linear_head import make_linear

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
fbd = pytest.importorskip("fastbp.dask")
key_split = dask.utils.key_split

LINEAR = [c for c in head_cases() if c[1]["target"] != "pm1_col"]
CHUNKS = (5, 2, 7, 3)         # uneven row chunks, one of them smaller than a kernel block


@pytest.fixture(autouse=True)
def _local_scheduler():
    """The tests without a cluster run on Dask's synchronous scheduler (same results, less
    start-up); the cluster tests make their own Client, which takes precedence."""
    with dask.config.set(scheduler="synchronous"):
        yield


def _dask(a, chunks=CHUNKS):
    return da.from_array(a, chunks=(chunks,) + a.shape[1:])


def _rows_as_dask(opts):
    return {k: _dask(v) if k == "sample_weight" else v for k, v in opts.items()}


def _same(got, want, dtype):
    """The dask result against the one-machine call (float64: 1e-10 relative)."""
    if np.isnan(want.loss):
        assert np.isnan(got.loss)
    else:
        assert_close(got.loss, want.loss, dtype)
    for name in ("dW", "db"):
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None)
        if w is not None:
            assert g.dtype == w.dtype
            assert_close(g, w, dtype, name)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", LINEAR, ids=case_id)
def test_linear_head_equals_the_one_machine_call(case, reduction, dtype, rng):
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, sum(CHUNKS), 4, 3, dtype, rng)
    want = fastbp.linear_head(X, W, b, target, head, reduction=reduction, **opts)
    got = fbd.linear_head(_dask(X), W, b, _dask(target), head, need_dX=True,
                          reduction=reduction, **_rows_as_dask(opts))
    _same(got, want, dtype)
    assert isinstance(got.dX, da.Array) and got.dX.chunks == _dask(X).chunks
    assert_close(got.dX.compute(), want.dX, dtype, "dX")


def test_every_backend_and_numpy_row_operands(backend, dtype, rng):
    X, W, b, y, opts = make_linear("softmax_nll", {"target": "labels", "weight": "on",
                                                   "sample_weight": "on", "ignore_index": 1,
                                                   "label_smoothing": 0.2},
                                   sum(CHUNKS), 6, 4, dtype, rng)
    want = fastbp.linear_head(X, W, b, y, backend=backend, **opts)
    for target, sw in ((y, opts["sample_weight"]), (_dask(y), _dask(opts["sample_weight"]))):
        got = fbd.linear_head(_dask(X), W, b, target, backend=backend,
                              **dict(opts, sample_weight=sw))
        _same(got, want, dtype)
        assert got.dX is None


def test_mean_is_over_the_whole_data_set_when_chunks_differ_in_weight(rng):
    """A chunk whose rows are all ignored adds nothing to the denominator; one all-ignored
    data set gives torch's nan loss and zero gradients."""
    X, W, b, y, _ = make_linear("softmax_nll", {"target": "labels"}, 12, 3, 4, np.float64, rng)
    y[:6] = -100
    chunks = (6, 6)
    got = fbd.linear_head(_dask(X, chunks), W, b, _dask(y, chunks))
    want = fastbp.linear_head(X, W, b, y)
    _same(got, want, np.float64)
    assert_close(got.loss, fastbp.linear_head(X[6:], W, b, y[6:]).loss, np.float64)
    none = fbd.linear_head(_dask(X, chunks), W, b, np.full(12, -100))
    assert np.isnan(none.loss) and not none.dW.any() and not none.db.any()


@pytest.mark.parametrize("head,spec", [
    ("softmax_nll", {"target": "labels", "weight": "on", "ignore_index": 1}),
    ("softmax_nll", {"target": "probs", "sample_weight": "on"}),
    ("multiclass_hinge", {"target": "labels", "weight": "on", "p": 2}),
    ("sigmoid_bce", {"target": "float", "pos_weight": "on"}),
    ("huber", {"target": "float", "delta": 0.3}),
    ("binary_hinge", {"target": "pm1"}),
], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mlp_loss_grad_equals_the_one_machine_call(head, spec, reduction, dtype, rng):
    n = 1 if head == "binary_hinge" else 3
    X, W, b, target, opts = make_linear(head, spec, sum(CHUNKS), 5, n, dtype, rng)
    params = [((0.5 * rng.standard_normal((6, 5))).astype(dtype), np.zeros(6, dtype)),
              (W[:, :5].repeat(2, axis=1)[:, :6].copy(), b)]
    want_loss, want = fastbp.mlp_loss_grad(X, params, target, activation="tanh", head=head,
                                           reduction=reduction, **opts)
    loss, got = fbd.mlp_loss_grad(_dask(X), params, _dask(target), activation="tanh",
                                  head=head, reduction=reduction, **_rows_as_dask(opts))
    assert_close(loss, want_loss, dtype)
    for (dW, db), (wW, wb) in zip(got, want):
        assert_close(dW, wW, dtype)
        assert_close(db, wb, dtype)


def test_deterministic_and_inputs_untouched(rng):
    X, W, b, y, opts = make_linear("softmax_nll", {"target": "labels", "sample_weight": "on"},
                                   400, 8, 5, np.float64, rng)
    copies = [a.copy() for a in (X, W, b, y, opts["sample_weight"])]
    Xd = da.from_array(X, chunks=(37, -1))
    runs = [fbd.linear_head(Xd, W, b, y, need_dX=True, **opts) for _ in range(2)]
    for a, c in zip((X, W, b, y, opts["sample_weight"]), copies):
        np.testing.assert_array_equal(a, c)
    assert runs[0].loss == runs[1].loss
    for name in ("dW", "db"):
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(runs[1], name))
    np.testing.assert_array_equal(runs[0].dX.compute(), runs[1].dX.compute())


def test_bad_operands_get_clear_errors(rng):
    X, W, b, y, _ = make_linear("softmax_nll", {"target": "labels"}, 17, 3, 4, np.float64, rng)
    Xd = _dask(X)
    with pytest.raises(TypeError, match="X must be a dask.array.Array"):
        fbd.linear_head(X, W, b, y)
    with pytest.raises(ValueError, match="row chunks only.*rechunk"):
        fbd.linear_head(da.from_array(X, chunks=(5, 2)), W, b, y)
    with pytest.raises(ValueError, match="target's row chunks must match"):
        fbd.linear_head(Xd, W, b, _dask(y, (9, 8)))
    with pytest.raises(ValueError, match="target must have one entry per row of X"):
        fbd.linear_head(Xd, W, b, y[:5])
    with pytest.raises(ValueError, match="sample_weight's row chunks"):
        fbd.linear_head(Xd, W, b, y, sample_weight=_dask(np.ones(17), (10, 7)))
    with pytest.raises(ValueError, match="unknown row chunk sizes"):
        fbd.linear_head(Xd[Xd[:, 0] > 0], W, b, y)
    # checked on the client, before any chunk runs
    with pytest.raises(ValueError, match="label_smoothing"):
        fbd.linear_head(Xd, W, b, y, label_smoothing=2.0)
    with pytest.raises(ValueError, match="W"):
        fbd.linear_head(Xd, W[:, :2], b, y)
    with pytest.raises(TypeError, match="unexpected option"):
        fbd.mlp_loss_grad(Xd, [(W, b)], y, margin=1.0)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', got 'none'"):
        fbd.linear_head(Xd, W, b, y, reduction="none")
    # a label out of range is found by the chunk that holds it
    bad = y.copy()
    bad[15] = 9
    with pytest.raises(ValueError, match="target"):
        fbd.linear_head(Xd, W, b, bad)


def test_import_fastbp_does_not_import_dask():
    code = ("import sys, fastbp; "
            "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------- LinearClassifier
def _blobs(rng, B=600, d=5, K=3, dtype=np.float64):
    centers = 2.0 * rng.standard_normal((K, d))
    y = rng.integers(0, K, B)
    X = centers[y] + rng.standard_normal((B, d))
    return X.astype(dtype), np.array(["a", "b", "c", "d"])[y]


def test_linear_classifier_matches_scikit_learn_logistic_regression(rng):
    """softmax_nll + alpha: scikit-learn's multinomial LogisticRegression with C = 1 / (alpha B)
    (its penalty is on the sum of the losses)."""
    from sklearn.linear_model import LogisticRegression
    X, y = _blobs(rng)
    alpha = 1e-2
    clf = fbd.LinearClassifier(alpha=alpha, tol=1e-9, max_iter=500).fit(
        da.from_array(X, chunks=(128, -1)), da.from_array(y, chunks=128))
    sk = LogisticRegression(C=1 / (alpha * len(X)), tol=1e-10, max_iter=2000).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, sk.classes_)
    np.testing.assert_allclose(clf.coef_, sk.coef_, atol=2e-4)
    np.testing.assert_allclose(clf.intercept_ - clf.intercept_.mean(),
                               sk.intercept_ - sk.intercept_.mean(), atol=2e-4)
    np.testing.assert_allclose(clf.predict_proba(X), sk.predict_proba(X), atol=1e-4)
    pred = clf.predict(da.from_array(X, chunks=(128, -1)))
    assert isinstance(pred, da.Array)
    np.testing.assert_array_equal(pred.compute(), sk.predict(X))
    assert clf.score(X, y) == pytest.approx(sk.score(X, y))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # (the hinges)
@pytest.mark.parametrize("head", ["softmax_nll", "multiclass_hinge", "sigmoid_bce", "sigmoid_l2",
                                  "sigmoid_focal", "binary_hinge"])
def test_every_classification_head_fits(head, dtype, rng):
    K = 2 if head == "binary_hinge" else 3
    X, y = _blobs(rng, K=K, dtype=dtype)
    clf = fbd.LinearClassifier(head, alpha=1e-3, max_iter=200).fit(X, y)
    assert clf.coef_.shape == (1 if head == "binary_hinge" else K, X.shape[1])
    assert clf.score(X, y) >= 0.9
    assert hasattr(clf, "predict_proba") == (head not in ("multiclass_hinge", "binary_hinge"))
    if hasattr(clf, "predict_proba"):
        P = clf.predict_proba(X)
        np.testing.assert_allclose(P.sum(axis=1), 1.0)
        np.testing.assert_array_equal(clf.classes_[P.argmax(axis=1)], clf.predict(X))


def test_two_classes_with_a_sigmoid_head_is_logistic_regression(rng):
    from sklearn.linear_model import LogisticRegression
    X, y = _blobs(rng, K=2)
    clf = fbd.LinearClassifier("sigmoid_bce", alpha=1e-2, tol=1e-9, max_iter=500).fit(X, y)
    sk = LogisticRegression(C=1 / (1e-2 * len(X)), tol=1e-10, max_iter=2000).fit(X, y)
    np.testing.assert_allclose(clf.coef_, sk.coef_, atol=2e-4)
    np.testing.assert_allclose(clf.intercept_, sk.intercept_, atol=2e-4)


def test_classifier_options_sample_weight_and_clone(rng):
    from sklearn.base import clone
    X, y = _blobs(rng)
    clf = fbd.LinearClassifier(alpha=1e-3, label_smoothing=0.1)
    assert clone(clf).get_params()["label_smoothing"] == 0.1
    clf.set_params(label_smoothing=0.0, alpha=1e-2)
    assert clf.head_options == {"label_smoothing": 0.0} and clf.alpha == 1e-2
    w = np.where(y == "a", 3.0, 1.0)
    weighted = fbd.LinearClassifier(alpha=1e-2).fit(X, y, sample_weight=w)
    repeated = fbd.LinearClassifier(alpha=1e-2).fit(
        np.vstack([X, X[y == "a"], X[y == "a"]]), np.concatenate([y, y[y == "a"], y[y == "a"]]))
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-4)


def test_classifier_bad_input(rng):
    X, y = _blobs(rng)
    with pytest.raises(ValueError, match="head"):
        fbd.LinearClassifier("l2").fit(X, y)
    with pytest.raises(ValueError, match="exactly 2 classes"):
        fbd.LinearClassifier("binary_hinge").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        fbd.LinearClassifier().fit(X, np.full(len(X), "a"))
    with pytest.raises(ValueError, match="alpha"):
        fbd.LinearClassifier(alpha=-1.0).fit(X, y)
    clf = fbd.LinearClassifier().fit(X, y)
    with pytest.raises(ValueError, match="5 features"):
        clf.predict(X[:, :3])


# ---------------------------------------------------------------------------- a real cluster
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, restarted by their nannies when killed."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, memory_limit="1GB",
                                  silence_logs=40) as cluster:
        yield cluster


def _slow_block(block_info=None, rows=2000, d=20, seed=0, marks=None):
    """Row chunk i of a data set generated where it is computed, slowly, with a mark per chunk."""
    i = block_info[None]["chunk-location"][0]
    time.sleep(0.1)
    if marks is not None:
        with open(marks, "a") as f:
            f.write(f"{i}\n")
    return np.random.default_rng([seed, i]).standard_normal((rows, d))


def _labels_block(block_info=None, rows=2000, n=4, seed=1):
    i = block_info[None]["chunk-location"][0]
    return np.random.default_rng([seed, i]).integers(0, n, rows)


def _lazy(chunks, rows, d, n, marks=None):
    X = da.map_blocks(_slow_block, rows=rows, d=d, marks=marks, dtype=np.float64,
                      chunks=((rows,) * chunks, (d,)))
    y = da.map_blocks(_labels_block, rows=rows, n=n, dtype=np.int64, chunks=((rows,) * chunks,))
    return X, y


@pytest.fixture
def client(cluster):
    import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers don't see tests/
    with distributed.Client(cluster) as client:
        yield client


@pytest.mark.fresh_process
def test_on_a_local_cluster_equals_the_one_machine_call(client, rng):
    X, W, b, y, opts = make_linear("multiclass_hinge", {"target": "labels", "weight": "on",
                                                        "sample_weight": "on"},
                                   3000, 10, 4, np.float64, rng)
    Xd = da.from_array(X, chunks=(250, -1))
    with distributed.get_task_stream(client) as stream:
        got = fbd.linear_head(Xd, W, b, y, "multiclass_hinge", need_dX=True, **opts)
    assert {t["worker"] for t in stream.data if key_split(t["key"]) == "linear_part"} == \
        set(client.scheduler_info()["workers"])             # both workers took chunks
    want = fastbp.linear_head(X, W, b, y, "multiclass_hinge", **opts)
    _same(got, want, np.float64)
    assert_close(got.dX.compute(), want.dX, np.float64)
    params = [(W, b)]
    loss, grads = fbd.mlp_loss_grad(Xd, params, y, head="multiclass_hinge", **opts)
    assert_close(loss, want.loss, np.float64)
    assert_close(grads[0][0], want.dW, np.float64)


@pytest.mark.fresh_process
def test_a_worker_killed_mid_pass_gives_the_same_result(client, tmp_path):
    """SIGKILL one worker process after some chunks are done: the scheduler recomputes what it
    held on the other worker and the restarted one, and the sums are the same bits."""
    chunks, rows, d, n = 24, 2000, 20, 4
    W = np.random.default_rng(2).standard_normal((n, d))
    b = np.zeros(n)
    X, y = _lazy(chunks, rows, d, n)
    clean = fbd.linear_head(X, W, b, y)
    marks = tmp_path / "marks"
    X, y = _lazy(chunks, rows, d, n, marks=str(marks))
    result, state = {}, {}

    def run():
        result["g"] = fbd.linear_head(X, W, b, y)

    pids = client.run(os.getpid)
    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while not (marks.exists() and len(marks.read_text().split()) >= 4):
        assert time.monotonic() < deadline, "the pass did not start"
        time.sleep(0.01)
    state["done at kill"] = len(marks.read_text().split())
    state["alive at kill"] = worker.is_alive()
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    worker.join(120)
    assert state["alive at kill"] and state["done at kill"] < chunks
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()        # the nanny restarted it
    g = result["g"]
    assert g.loss == clean.loss
    np.testing.assert_array_equal(g.dW, clean.dW)
    np.testing.assert_array_equal(g.db, clean.db)
    # the one-machine call on the same data
    Xl, yl = dask.compute(*_lazy(chunks, rows, d, n), scheduler="synchronous")
    _same(g, fastbp.linear_head(Xl, W, b, yl), np.float64)


@pytest.mark.fresh_process
def test_linear_classifier_on_the_cluster_equals_the_local_fit(client, rng):
    X, y = _blobs(rng, B=2000)
    Xd, yd = da.from_array(X, chunks=(300, -1)), da.from_array(y, chunks=300)
    with distributed.get_task_stream(client) as stream:
        on_cluster = fbd.LinearClassifier(alpha=1e-3).fit(Xd, yd)
    assert any(key_split(t["key"]) == "linear_part" for t in stream.data)
    with dask.config.set(scheduler="synchronous"):
        local = fbd.LinearClassifier(alpha=1e-3).fit(Xd, yd)
    np.testing.assert_array_equal(on_cluster.coef_, local.coef_)
    assert on_cluster.n_iter_ == local.n_iter_


def _uniform_block(block_info=None, rows=25_000, d=100):
    i = block_info[None]["chunk-location"][0]
    return np.random.default_rng(i).random((rows, d))


@pytest.mark.fresh_process
def test_a_pass_over_ten_times_a_workers_memory_streams_its_chunks():
    """5 GB generated chunk by chunk where it is used, on workers limited to 500 MB (of which
    Python, NumPy, Numba and fastbp take about 280): the pass completes, no worker is
    restarted, and the loss and dW are the exact ones."""
    rows, chunks, d = 25_000, 250, 100
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="500MB",
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        import cloudpickle
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        X = da.map_blocks(_uniform_block, dtype=np.float64, chunks=((rows,) * chunks, (d,)))
        assert X.nbytes >= 10 * 500e6
        y = (X[:, 0] > 0.5).astype(np.int64)
        pids = client.run(os.getpid)
        g = fbd.linear_head(X, np.zeros((2, d)), np.zeros(2), y)
        assert client.run(os.getpid) == pids
        assert g.loss == pytest.approx(np.log(2), rel=1e-12)    # W = 0: p = 1/2 everywhere
        # dW_j = mean_i (1/2 - [y_i = j]) x_i: each chunk's sums in plain NumPy on the workers
        want = sum(client.gather(client.map(_chunk_dW_sums, range(chunks))))
    assert_close(g.dW, want / (rows * chunks), np.float64)


def _chunk_dW_sums(i):
    Xc = _uniform_block({None: {"chunk-location": (i, 0)}})
    above = Xc[Xc[:, 0] > 0.5].sum(axis=0)
    half = 0.5 * Xc.sum(axis=0)
    return np.stack([above - half, half - above])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bfloat16_chunks_sum_float32_partials_and_round_once(reduction, rng):
    """bfloat16 row chunks with float32 W, b: every chunk's dW, db in float32, summed, rounded
    once to W's / b's dtype (float32 here: not at all); dX bfloat16, each chunk's scaled
    before its one rounding; equal to the one-machine bfloat16 call."""
    import ml_dtypes
    X = rng.standard_normal((17, 6)).astype(ml_dtypes.bfloat16)
    W, b = rng.standard_normal((3, 6)).astype(np.float32), np.zeros(3, np.float32)
    y = rng.integers(0, 3, 17)
    g = fbd.linear_head(da.from_array(X, chunks=(CHUNKS, -1)), W, b, y, need_dX=True,
                        reduction=reduction)
    want = fastbp.linear_head(X, W, b, y, reduction=reduction)
    assert (g.dW.dtype, g.db.dtype, g.dX.dtype) == (np.float32, np.float32, X.dtype)
    assert_close(g.loss, want.loss, np.float32)
    assert_close(g.dW, want.dW, np.float32)
    assert_close(g.db, want.db, np.float32)
    np.testing.assert_allclose(g.dX.compute().astype(np.float32), want.dX.astype(np.float32),
                               rtol=2 ** -8, atol=1e-6)
    Wb = W.astype(ml_dtypes.bfloat16)
    g16 = fbd.linear_head(da.from_array(X, chunks=(CHUNKS, -1)), Wb, None, y)
    assert g16.dW.dtype == Wb.dtype
    np.testing.assert_allclose(g16.dW.astype(np.float32),
                               fastbp.linear_head(X, Wb, None, y).dW.astype(np.float32),
                               rtol=2 ** -7, atol=1e-6)
