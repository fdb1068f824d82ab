"""linear_head's peers in the same groups as fastbp's rows (see test_bench_linear_head.py):
PyTorch eager, torch.compile, PyTorch's linear_cross_entropy and JAX jit, when installed. Each
checks it computes fastbp's numbers before it is timed."""
import pytest
from conftest import assert_matches_reference, checked_run, linear_data
from test_bench_linear_head import CASES, _group, _memory, reference

from fastbp import peers


# torch.compile only for softmax_nll: its compilation takes tens of seconds per shape;
# PyTorch's linear_cross_entropy (reference and chunked paths) is softmax_nll's counterpart
COMBOS = [(p, *case) for p in ("torch eager", "jax jit") for case in CASES] + [
    (p, *case) for p in ("torch.compile",) + peers.SOFTMAX_ONLY for case in CASES
    if case[0] == "softmax_nll"]


@pytest.mark.parametrize("peer,head,shape,dtype", COMBOS)
def test_peer_linear_head(benchmark, peer, head, shape, dtype):
    pytest.importorskip(peers.module(peer))     # the `peers` extra: make bench installs it
    if not peers.available(peer):
        pytest.skip(f"{peer} is not available here: Inductor needs a C++ compiler")
    X, W, b, target = linear_data(shape, head, dtype)
    run = peers.linear_head(peer, head, X, W, b, target, warm_up=not benchmark.disabled)
    benchmark.group = _group(head, shape, dtype)
    if run.first_call_s is not None:
        benchmark.extra_info["first_call_s"] = run.first_call_s     # compilation, not timed
    want = tuple(reference(head, shape, dtype))
    checked_run(benchmark, run.result,
                lambda got: assert_matches_reference(tuple(got), want, X.dtype), timed=run)
    if shape in ("V", "P", "L"):
        _memory(benchmark, None, shape, head, peer)
