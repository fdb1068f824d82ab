"""The Numba backend's row loops compile to vector code (docs/performance.md, "Heads on many
scores"): Numba did not pick up SVML here, so the exponential is a polynomial written for LLVM's
loop vectorizer. Each kernel is compiled afresh (the on-disk cache keeps no assembly) and its
machine code must hold packed FMAs on ymm (AVX2) or zmm (AVX-512) registers: double FMAs for
the exponentials, and for linear_head's fused rows FMAs in X's own dtype, with no gathers (a k
loop indexed with a possibly negative index compiles to gathers)."""
import re

import numba as nb
import numpy as np
import pytest

import fastbp.backends.numba as nk
from fastbp.backends.numba import _jit, linear, products, rows


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(re.findall(r"\b(avx2|avx512f)\b", f.read()))
    except OSError:
        return set()


needs_vectors = pytest.mark.skipif(
    nb.config.DISABLE_JIT or not _cpu_flags(),
    reason="interpreted (NUMBA_DISABLE_JIT), or a CPU without AVX2: no vector code to check")


def _asm(kernel, *args):
    fresh = nb.njit(**{**_jit.OPTS, "cache": False})(kernel.py_func)
    fresh(*args)
    return next(iter(fresh.inspect_asm().values()))


def _packed_fmas(asm, kind="pd"):
    return re.findall(rf"vfmadd\w*{kind}\s+[^\n]*%[yz]mm", asm)


@needs_vectors
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vexp_is_vector_code(dtype):
    x = np.linspace(-5, 5, 1000).astype(dtype)
    assert len(_packed_fmas(_asm(rows.vexp, x))) >= 8      # the polynomial's 13 terms


@needs_vectors
def test_the_sigmoid_heads_exponential_is_vector_code():
    s, e = np.linspace(-5, 5, 1000), np.empty(1000)
    asm = _asm(rows.exp_neg_abs, s, e)
    assert len(_packed_fmas(asm)) >= 8


@needs_vectors
@pytest.mark.parametrize("dtype, kind", [(np.float64, "pd"), (np.float32, "ps")])
def test_the_fused_rows_are_vector_code_in_their_dtype(dtype, kind):
    from fastbp._checks import DEFAULT_OPTIONS
    rng = np.random.default_rng(0)
    B, d, n = 8, 300, 5
    X, W = rng.standard_normal((B, d)).astype(dtype), rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, n, B)
    h = nk._pack("softmax_nll", X, y, DEFAULT_OPTIONS["softmax_nll"])
    asm = _asm(linear.linear_rows, h, X, W, np.zeros(n, dtype), 1.0, 0, B, np.zeros_like(W),
               np.zeros(n), np.zeros_like(X))
    # the forward's 8 accumulators and the backward's 16 multiply-adds, unrolled: 60 in float32
    # (accumulating float32 products in float64, as before, left 20) and hundreds in float64
    assert len(_packed_fmas(asm, kind)) >= 40
    assert "gather" not in asm


@needs_vectors
@pytest.mark.parametrize("dtype, kind", [(np.float64, "pd"), (np.float32, "ps")])
def test_the_own_scores_tile_is_vector_code_in_its_dtype(dtype, kind):
    """own_scores' 4 x 4 dot tile: its 16 sums become vector accumulators, one packed FMA each
    per k step (docs/performance.md, "Own products"), and no gathers."""
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((8, 300)).astype(dtype), rng.standard_normal((9, 300)).astype(dtype)
    S = np.empty((8, 9), dtype)
    asm = _asm(products.own_scores, S, X, W, 0, 9)
    assert len(_packed_fmas(asm, kind)) >= 16
    assert "gather" not in asm


def test_the_numba_exponential_is_within_a_few_ulp_of_libm():
    """docs/math.md's claim: vexp (exp1's polynomial) within 2 ulp of NumPy's exp on [-1, 1]
    and 16 on [-30, 30] (the range reduction's error grows with |x|), exact at 0, 0 below
    -708, NaN kept."""
    for bound, ulp in ((1, 2), (30, 16)):
        x = np.linspace(-bound, bound, 200_001)
        got = x.copy()
        rows.vexp(got)
        want = np.exp(x)
        assert np.max(np.abs(got - want) / np.spacing(want)) <= ulp
    edge = np.array([0.0, -709.0, np.nan])
    rows.vexp(edge)
    assert edge[0] == 1.0 and edge[1] == 0.0 and np.isnan(edge[2])
