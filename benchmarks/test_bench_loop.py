"""In a training loop the user's own NumPy runs between two fastbp calls. Each backend's
linear_head at D, C (float64: BLAS products; float32: the fused rows on all threads), K and V,
and the 2-layer net, timed back to back and right after a NumPy
product (256 x 512 @ 512 x 512 float32, the size of a projection or an evaluation between
steps), side by side in one group per shape; the NumPy reference's rows are the anchor. Only
the fastbp call is timed (the product is pytest-benchmark's setup)."""
import numpy as np
import pytest
from conftest import assert_matches_reference, checked_run, linear_data
from test_bench_linear_head import reference
from test_bench_mlp import net

import fastbp
from fastbp.presets import SHAPES

WHEN = ("back to back", "after a NumPy product")
ROUNDS = {"D": 300, "C": 60, "K": 60, "V": 5, "2-layer": 60}
SHAPES_DTYPES = [("D", None), ("C", None), ("C", "float32"), ("K", None), ("V", None)]
_rng = np.random.default_rng(1)
_A, _M = (_rng.standard_normal(s).astype(np.float32) for s in ((256, 512), (512, 512)))
_P = np.empty((256, 512), np.float32)


def user_product():
    np.matmul(_A, _M, out=_P)


def _time(benchmark, call, shape, when):
    setup = user_product if when != "back to back" else None
    benchmark.pedantic(call, setup=setup, rounds=ROUNDS[shape], iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("backend", fastbp.available_backends())
@pytest.mark.parametrize("shape, dtype", SHAPES_DTYPES,
                         ids=[f"{s}-{d or SHAPES[s][3]}" for s, d in SHAPES_DTYPES])
def test_linear_head_in_a_loop(benchmark, shape, dtype, backend, when):
    B, d, n, preset_dtype = SHAPES[shape]
    dtype = dtype or preset_dtype
    X, W, b, target = linear_data(shape, dtype=dtype)
    out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))

    def call():
        return fastbp.linear_head(X, W, b, target, out=out, backend=backend)

    want = reference("softmax_nll", shape, dtype)
    benchmark.group = f"in a loop: linear_head softmax_nll {shape} (B={B}, d={d}, n={n}, {dtype})"
    checked_run(benchmark, call, lambda got: assert_matches_reference(got, want, X.dtype),
                time=lambda: _time(benchmark, call, shape, when))


@pytest.mark.parametrize("when", WHEN)
@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_mlp_in_a_loop(benchmark, backend, when):
    X, params, y = net()
    out = [(np.empty_like(W), np.empty_like(b)) for W, b in params]

    def call():
        return fastbp.mlp_loss_grad(X, params, y, activation="sigmoid", out=out,
                                    backend=backend)

    want = fastbp.mlp_loss_grad(X, params, y, activation="sigmoid", backend="numpy")
    benchmark.group = "in a loop: mlp_loss_grad 3072-100-10 B=256 sigmoid softmax_nll (float64)"
    checked_run(benchmark, call, lambda got: assert_matches_reference(got, want, X.dtype),
                time=lambda: _time(benchmark, call, "2-layer", when))
