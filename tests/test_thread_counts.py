"""The parallel kernels at 1, 2, 3, 4 and 7 threads: the same bits run to run at each count
(partials combine in a fixed order, never in completion order) and the same result to rounding
across counts; BLAS's thread count is the caller's again after a kernel held it to one."""
import numpy as np
import pytest
import threadpoolctl

import fastbp
from fastbp.backends import tuning
from fastbp.presets import peaked_lm_data
from cases import BACKENDS

COMPILED = [b for b in BACKENDS if b != "numpy"]
COUNTS = (1, 2, 3, 4, 7)


def _module(backend):
    if backend == "c":
        from fastbp.backends import c_kernels as module
    else:
        import fastbp.backends.numba as module
    return module


def _inputs(B, d, n, dtype, seed=0, peaked=False):
    if peaked:                      # logits like a language model's: filter_eps skips most
        return peaked_lm_data(B, d, n, dtype, seed)
    rng = np.random.default_rng(seed)
    X, W, b = (rng.standard_normal(s).astype(dtype) for s in ((B, d), (n, d), (n,)))
    return X, W, b, rng.integers(0, n, B)


MANY = 4 * tuning.CHUNKED_MIN_CLASSES + 5
# (name, B, d, n, linear_head's keywords): the fused rows at few classes (every call on all
# threads, tuning lowered below), the chunked path's team at many classes, exact and filtered
PATHS = [("fused rows", 200, 72, 7, {}),
         ("chunked team by rows", 150, 40, 50, {"chunk_rows": 64}),
         ("chunked team", 150, 40, MANY, {"chunk_rows": 64}),
         ("chunked team, filter_eps", 150, 40, MANY, {"chunk_rows": 64, "filter_eps": "auto"})]


@pytest.fixture
def threads():
    before = fastbp.get_num_threads()
    yield
    fastbp.set_num_threads(before)


# the C backend's chunked paths again on its own products (csrc/products.h)
OWN = [(f"{name}, own products", *rest) for name, *rest in PATHS if name.startswith("chunked")]
_RUNS = [(b, p) for b in COMPILED for p in PATHS] + [("c", p) for p in OWN if "c" in COMPILED]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend, path", _RUNS, ids=[f"{b}-{p[0]}" for b, p in _RUNS])
def test_linear_head_bits_per_thread_count(backend, path, dtype, threads, monkeypatch):
    name, B, d, n, kw = path
    T = _module(backend).TUNING
    for bit in ("SCORES", "BACKWARD"):
        monkeypatch.setattr(T, f"OWN_{bit}_MIN_WEIGHTS", 0 if "own" in name else 1 << 62,
                            raising=False)
    monkeypatch.setattr(T, "OWN_ROW_ALIGN", 1, raising=False)
    monkeypatch.setattr(T, "OWN_ISAS", tuning.ISAS)        # own products on any ISA
    monkeypatch.setattr(T, "FUSED_ISAS", tuning.ISAS)      # the fused rows' windows too
    monkeypatch.setattr(T, "FUSED_MIN_WORK", 0)
    monkeypatch.setattr(T, "FUSED_MIN_WORK_F32", 0)
    monkeypatch.setattr(T, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(T, "FUSED_MIN_ROWS", 0, raising=False)
    X, W, b, y = _inputs(B, d, n, dtype, peaked="filter_eps" in kw)
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    first = None
    for count in COUNTS:
        fastbp.set_num_threads(count)
        runs = [fastbp.linear_head(X, W, b, y, backend=backend, **kw) for _ in range(5)]
        for r in runs[1:]:
            assert r.loss == runs[0].loss, count
            for name in ("dW", "db", "dX"):
                assert np.array_equal(getattr(r, name), getattr(runs[0], name)), (count, name)
        first = first or runs[0]
        np.testing.assert_allclose(runs[0].loss, first.loss, rtol=rtol)
        for name in ("dW", "db", "dX"):
            got, want = getattr(runs[0], name), getattr(first, name)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(),
                                       err_msg=f"{count} threads, {name}")


@pytest.mark.parametrize("backend", COMPILED)
def test_heads_bits_per_thread_count(backend, threads):
    rng = np.random.default_rng(1)
    S, y = rng.standard_normal((300, 400)), rng.integers(0, 400, 300)
    first = None
    for count in COUNTS:
        fastbp.set_num_threads(count)
        runs = [fastbp.softmax_nll(S, y, backend=backend) for _ in range(3)]
        assert all(loss == runs[0][0] and np.array_equal(dS, runs[0][1]) for loss, dS in runs)
        first = first or runs[0]
        np.testing.assert_allclose(runs[0][0], first[0], rtol=1e-13)
        np.testing.assert_array_equal(runs[0][1], first[1])       # row by row: no partials


def test_own_chunk_rows_are_whole_tiles():
    """The C backend's own scores run blocks of whole register tiles (FBP_OWN_KV vectors),
    else whole vectors, else the rows as they are."""
    assert [tuning.own_chunk_rows(r, 4) for r in (98, 64, 40, 10, 1)] == [64, 64, 32, 10, 1]


def _blas_threads(like=None):
    """{library path: its thread count} of the BLAS libraries loaded (those of ``like`` only: a
    first compilation may load another, SciPy's, mid-test)."""
    found = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
             if i["user_api"] == "blas"}
    return found if like is None else {k: found.get(k) for k in like}


@pytest.mark.parametrize("backend", COMPILED)
def test_the_team_runs_and_blas_gets_its_threads_back(backend, threads):
    """At many classes on 4 threads the chunked path runs its team (the C kernels' scratch
    then holds the team's dX partials), and BLAS has the caller's thread count afterwards."""
    fastbp.set_num_threads(4)
    before = _blas_threads()
    X, W, b, y = _inputs(150, 40, 4 * tuning.CHUNKED_MIN_CLASSES, np.float64)
    if backend == "c":
        _module("c").scratch_bytes(reset=True)
    fastbp.linear_head(X, W, b, y, backend=backend, chunk_rows=64)
    if backend == "c":
        assert _module("c").scratch_bytes() >= 4 * 64 * 40 * 8
    assert _blas_threads(before) == before


def test_concurrent_teams_of_both_backends_give_blas_its_threads_back(threads):
    """The C and Numba teams hold BLAS from two Python threads at once, many times over: one
    holder count per process, so the last release restores the caller's count."""
    from concurrent.futures import ThreadPoolExecutor
    if set(COMPILED) != {"c", "numba"}:
        pytest.skip("needs both compiled backends")
    fastbp.set_num_threads(2)
    before = _blas_threads()
    X, W, b, y = _inputs(150, 40, 4 * tuning.CHUNKED_MIN_CLASSES, np.float64)

    def calls(backend):
        for _ in range(20):
            fastbp.linear_head(X, W, b, y, backend=backend, chunk_rows=64)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(calls, ["c", "numba"]))
    assert _blas_threads(before) == before
