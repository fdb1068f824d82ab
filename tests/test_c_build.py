"""The C backend's build: optional at install, and present wherever a compiler was.

``make test`` sets FASTBP_REQUIRE_BACKENDS=numba,c, so a C extension that silently failed to
build turns the run red instead of quietly dropping the backend's tests.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp
from cases import assert_close, cast_floats

ROOT = Path(__file__).resolve().parents[1]


def test_required_backends_are_available():
    from fastbp import _dispatch
    required = [b for b in os.environ.get("FASTBP_REQUIRE_BACKENDS", "").split(",") if b]
    missing = {b: _dispatch.unavailable_backends().get(b) for b in required
               if b not in fastbp.available_backends()}
    assert not missing


def test_install_without_a_compiler_drops_only_the_c_backend(tmp_path):
    """pip install with CC=false succeeds (the extension is optional=True); that install has
    no "c" backend, and asking for it raises BackendUnavailable saying why."""
    pytest.importorskip("setuptools")
    src, site = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.nbi", "*.nbc")
    for tree in ("fastbp", "csrc"):
        shutil.copytree(ROOT / tree, src / tree, ignore=ignore)
    env = dict(os.environ, CC="false", CXX="false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
         "--no-index", "--target", str(site), str(src)],
        env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    assert not list((site / "fastbp").rglob("_fastbp_c*"))
    assert not list((site / "fastbp").rglob("_fastcall*"))
    probe = subprocess.run(
        [sys.executable, "-c",
         "import fastbp\n"
         "assert fastbp.__file__.startswith(%r), fastbp.__file__\n"
         "assert 'c' not in fastbp.available_backends(), fastbp.available_backends()\n"
         "try:\n"
         "    fastbp.set_backend('c')\n"
         "except fastbp.BackendUnavailable as exc:\n"
         "    print(exc)\n" % str(site)],
        env=dict(os.environ, PYTHONPATH=str(site)), cwd=tmp_path, capture_output=True,
        text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    assert "'c' is unavailable" in probe.stdout and "was not built" in probe.stdout


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend is not built")
@pytest.mark.parametrize("numpy_blas", [True, False])
def test_c_gemms_through_numpys_or_scipys_openblas(numpy_blas):
    """Both BLAS bindings (ILP64 NumPy, LP64 SciPy) give the reference's numbers."""
    from fastbp.backends import c_kernels
    rng = np.random.default_rng(0)
    X, W, b = rng.standard_normal((70, 33)), rng.standard_normal((40, 33)), np.zeros(40)
    y = rng.integers(0, 40, 70)
    params = [(rng.standard_normal((20, 33)), np.zeros(20)), (W[:, :20].copy(), b)]
    try:
        c_kernels.set_blas(numpy=numpy_blas)
        assert c_kernels.BLAS == "scipy" or numpy_blas   # NumPy's, where NumPy bundles it
        want = fastbp.linear_head(X, W, b, y, backend="numpy")
        for dtype in (np.dtype(np.float64), np.dtype(np.float32)):
            got = fastbp.linear_head(*cast_floats(dtype, X, W, b), y, chunk_rows=16, backend="c")
            for g, w in zip(got, want):
                assert_close(g, w, dtype)
        loss, grads = fastbp.mlp_loss_grad(X, params, y, backend="c")
        want_loss, want_grads = fastbp.mlp_loss_grad(X, params, y, backend="numpy")
        assert_close(loss, want_loss, X.dtype)
        for got_pair, want_pair in zip(grads, want_grads):
            for g, w in zip(got_pair, want_pair):
                assert_close(g, w, X.dtype)
    finally:
        c_kernels.set_blas()


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend is not built")
@pytest.mark.parametrize("bad", ["B < 0", "n < 1", "chunk < 1", "cols < 1", "head code",
                                 "negative head code", "no head", "columns of a hinge"])
def test_c_kernels_refuse_their_preconditions_without_writing(bad):
    """linear_chunked re-checks what is cheap and returns a status (c_kernels raises it as a
    ValueError) before touching any buffer, even when called past the Python checks."""
    from fastbp.backends import _args, c_kernels
    ffi, lib = c_kernels.ffi, c_kernels.lib
    B, d, n = 4, 3, 5
    X, W, b = np.ones((B, d)), np.ones((n, d)), np.zeros(n)
    dW, db, dX = np.full((n, d), 7.0), np.full(n, 7.0), np.full((B, d), 7.0)
    y, sums = np.zeros(B, np.int64), ffi.new("double[2]")
    args = {"head": _args.CODES["SOFTMAX"], "chunk": 2, "cols": n, "B": B, "n": n}
    args.update({"B < 0": {"B": -1}, "n < 1": {"n": 0}, "chunk < 1": {"chunk": 0},
                 "cols < 1": {"cols": 0}, "head code": {"head": lib.FBP_NUM_HEADS},
                 "negative head code": {"head": -1}, "no head": {"head": None},
                 "columns of a hinge": {"head": _args.CODES["MHINGE"], "cols": 2}}[bad])
    head = ffi.NULL if args["head"] is None else ffi.new(
        "fbp_head *", {"code": args["head"], "y": ffi.from_buffer("int64_t[]", y), "margin": 1.0,
                       "p": 1, "ignore_index": -100})
    p = lambda a: ffi.from_buffer("double[]", a)     # noqa: E731
    status = lib.linear_chunked_f64(p(dW), p(db), p(dX), sums, p(X), p(W), p(b), head, 1,
                                    args["chunk"], args["cols"], args["B"], d, args["n"])
    assert status == lib.FBP_EBADARG
    with pytest.raises(ValueError, match="precondition"):
        c_kernels._check(status, "linear_head")
    assert (dW == 7).all() and (db == 7).all() and (dX == 7).all()


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend is not built")
def test_head_codes_and_struct_are_checked_against_the_c_header(monkeypatch):
    """The registry's codes and fbp_head layout are csrc/fastbp.h's; a mismatch stops the C
    backend's import with an ImportError naming both sides."""
    import numpy as np

    from fastbp.backends import c_kernels
    c_kernels._check_abi()                      # as built: they agree
    monkeypatch.setitem(c_kernels.CODES, "L1", 99)
    with pytest.raises(ImportError, match=r"L1 = 99, csrc/fastbp.h has FBP_L1 = 7"):
        c_kernels._check_abi()
    monkeypatch.undo()
    fields = [(n, c_kernels.HEAD_DTYPE.fields[n][0]) for n in c_kernels.HEAD_DTYPE.names]
    monkeypatch.setattr(c_kernels, "HEAD_DTYPE", np.dtype(fields[::-1], align=True))
    with pytest.raises(ImportError, match="fbp_head layout mismatch"):
        c_kernels._check_abi()
