"""Heads alone on scores (B=256, n=1000), per backend and head."""
import numpy as np
import pytest

import fastbp
from cases import head_cases, make_head_inputs
from conftest import assert_matches_reference
from fastbp._checks import HEAD_OPTIONS

PLAIN = {}   # each head's first case with every option at its default (labels for softmax)
for h, spec in head_cases():
    if all(v == HEAD_OPTIONS[h][k] for k, v in spec.items() if k != "target"):
        PLAIN.setdefault(h, spec)


@pytest.mark.parametrize("backend", fastbp.available_backends())
@pytest.mark.parametrize("head", fastbp.HEADS)
def test_head(benchmark, backend, head):
    S, target, opts = make_head_inputs(head, PLAIN[head], 256, 1000, np.float64,
                                       np.random.default_rng(0))
    out = np.empty_like(S)
    benchmark.group = f"head {head} (B=256, n=1000, float64)"
    got = getattr(fastbp, head)(S, target, out=out, backend=backend, **opts)
    want = getattr(fastbp, head)(S, target, backend="numpy", **opts)
    assert_matches_reference(got, want, S.dtype)
    benchmark(getattr(fastbp, head), S, target, out=out, backend=backend, **opts)
