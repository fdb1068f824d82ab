"""Each backend's linear_loss (the loss alone, no gradient products: what the adapters run
without a gradient and linear_head's reduction="none" returns as its losses): equal to the
fused call's loss for every head and option, on every backend and path, in both dtypes, and
to the NumPy reference's row losses; the same bits at any thread count."""
import numpy as np
import pytest

import fastbp
from fastbp.backends import tuning
from cases import VARIANTS, case_id, head_cases, rotated, rotated_ids, variant
from fastbp import _checks, _dispatch
from test_linear_head import make_linear

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

_CASES = rotated(head_cases(), VARIANTS, ["float64", "float32"])


def _loss(backend, X, W, b, target, head, opts, reduction, chunk_rows=None):
    X, W, b, target, head, checked = _checks.check_linear_head(
        X, W, b, target, head, dict(opts, reduction="sum"), False, None, None)[:6]
    return _dispatch.backend_module(backend).linear_loss(X, W, b, target, head, checked,
                                                         reduction, chunk_rows)


@pytest.mark.parametrize("case, name, dtype", _CASES, ids=rotated_ids(_CASES))
def test_linear_loss_equals_the_fused_calls_loss(case, name, dtype, rng):
    head, spec = case
    X, W, b, target, opts = make_linear(head, spec, 13, 5, 7, np.dtype(dtype), rng)
    tol = 1e-5 if dtype == "float32" else 1e-12
    with variant(name) as backend:
        for chunk_rows in (None, 4):           # one block, and blocks with a short last one
            rows = _loss(backend, X, W, b, target, head, opts, "none", chunk_rows)
            want = _loss("numpy", X, W, b, target, head, opts, "none")
            assert rows.dtype == X.dtype and rows.shape == (13,)
            np.testing.assert_allclose(rows, want, rtol=tol, atol=tol)
            for reduction in ("mean", "sum"):
                fused = fastbp.linear_head(X, W, b, target, head, reduction=reduction,
                                           backend=backend, **opts).loss
                got = _loss(backend, X, W, b, target, head, opts, reduction, chunk_rows)
                np.testing.assert_allclose(got, fused, rtol=tol, atol=tol,
                                           err_msg=f"{case_id(case)} {reduction}")


@pytest.mark.parametrize("backend", [b for b in ("c", "numba")
                                     if b in fastbp.available_backends()])
def test_linear_loss_bits_per_thread_count_on_a_team(backend):
    """Many classes: the scores on a team (own products or BLAS held to one thread), the
    head's rows split over it; the row losses do not depend on the team."""
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((150, 64)).astype(np.float32), rng.standard_normal(
        (600, 64)).astype(np.float32)
    y = rng.integers(0, 600, 150)
    before = fastbp.get_num_threads()
    module = _dispatch.backend_module(backend)
    first = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module.TUNING, "OWN_ISAS", tuning.ISAS)     # own products on any ISA
            for own in (0, 1 << 62):
                mp.setattr(module.TUNING, "OWN_SCORES_MIN_WEIGHTS", own)
                for count in (1, 2, 3):
                    fastbp.set_num_threads(count)
                    rows = _loss(backend, X, W, None, y, "softmax_nll", {}, "none", 64)
                    assert np.array_equal(rows, _loss(backend, X, W, None, y, "softmax_nll", {},
                                                      "none", 64))
                    first = rows if first is None else first
                    np.testing.assert_allclose(rows, first, rtol=2e-5)
    finally:
        fastbp.set_num_threads(before)
