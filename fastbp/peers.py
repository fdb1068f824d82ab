"""The frameworks users would otherwise use, computing exactly fastbp's loss definitions, for the
benchmarks and ``fastbp bench --peers``. Optional: each is skipped when not installed.

``linear_head(peer, head, X, W, b, target)`` returns a function that runs one forward+backward
on tensors prepared once (what is timed) and returns ``(loss, dW, db, dX)`` as NumPy arrays.
"""
import importlib.util
import os
import shutil
import time

import numpy as np

PEERS = ("torch eager", "torch.compile", "jax jit", "torch linear_cross_entropy",
         "torch linear_cross_entropy chunked")
HEADS = ("softmax_nll", "multiclass_hinge", "sigmoid_l2")
# PyTorch's fused linear + cross-entropy (the direct counterpart of linear_head's softmax_nll;
# "chunked": its opt-in path that never holds all logits), for softmax_nll only
SOFTMAX_ONLY = ("torch linear_cross_entropy", "torch linear_cross_entropy chunked")


def supports(peer, head):
    return head in HEADS and (peer not in SOFTMAX_ONLY or head == "softmax_nll")


def module(peer):
    return "jax" if peer.startswith("jax") else "torch"


def available(peer):
    """Installed; and for torch.compile, a C++ compiler on the PATH (Inductor's CPU code is
    C++ it compiles at the first call)."""
    if peer == "torch.compile" and not shutil.which(os.environ.get("CXX") or "g++") \
            and not shutil.which("c++") and not shutil.which("clang++"):
        return False
    return peer in PEERS and importlib.util.find_spec(module(peer)) is not None


def linear_head(peer, head, X, W, b, target, warm_up=True):
    """``warm_up=False``: no first call here (a caller that runs it once anyway)."""
    if module(peer) == "jax":
        return _jax_linear_head(head, X, W, b, target, warm_up)
    import torch
    import torch.nn.functional as F

    import fastbp
    torch.set_num_threads(fastbp.get_num_threads())
    Xt, Wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (X, W, b))
    tt = torch.from_numpy(target)
    n = W.shape[0]

    def loss_fn(X, W, b, t):      # fastbp's definitions, "mean" over the batch (docs/math.md)
        if peer in SOFTMAX_ONLY and head == "softmax_nll":
            chunked = torch.nn.LinearCrossEntropyOptions() if peer.endswith("chunked") else None
            return F.linear_cross_entropy(X, W, t, linear_bias=b, options=chunked)
        S = F.linear(X, W, b)
        if head == "softmax_nll" and peer not in SOFTMAX_ONLY:
            return F.cross_entropy(S, t)
        if head == "multiclass_hinge":
            return n * F.multi_margin_loss(S, t)
        if head == "sigmoid_l2":
            return ((t - torch.sigmoid(S)) ** 2).sum(1).mean()
        raise ValueError(f"no {peer} counterpart for head {head!r}")

    fn = torch.compile(loss_fn) if peer == "torch.compile" else loss_fn

    def run():
        for a in (Xt, Wt, bt):
            a.grad = None
        loss = fn(Xt, Wt, bt, tt)
        loss.backward()
        return loss

    def result():
        loss = run()
        return (float(loss.detach()), Wt.grad.numpy(), bt.grad.numpy(), Xt.grad.numpy())

    return _warm_up(run, result, warm_up)


def _warm_up(run, result, warm_up):
    """The first call (tracing and compilation for torch.compile and jax.jit): excluded from
    the timings, its seconds kept as ``run.first_call_s`` for the report."""
    run.result, run.first_call_s = result, None
    if warm_up:
        t0 = time.perf_counter()
        run()
        run.first_call_s = time.perf_counter() - t0
    return run


def _jax_linear_head(head, X, W, b, target, warm_up):
    """jit(value_and_grad(...)) of the same loss, waited on with block_until_ready."""
    import jax
    import jax.numpy as jnp
    if X.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    rows = np.arange(len(X))

    def loss_fn(W, b, X, t):
        S = X @ W.T + b
        if head == "softmax_nll":
            return -jnp.mean(jax.nn.log_softmax(S)[rows, t])
        if head == "multiclass_hinge":
            M = jnp.maximum(0.0, S - S[rows, t][:, None] + 1.0).at[rows, t].set(0.0)
            return M.sum(axis=1).mean()
        if head == "sigmoid_l2":
            return ((t - jax.nn.sigmoid(S)) ** 2).sum(axis=1).mean()
        raise ValueError(f"no jax counterpart for head {head!r}")

    f = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))
    args = tuple(jnp.asarray(a) for a in (W, b, X, target))

    def run():
        return jax.block_until_ready(f(*args))

    def result():
        loss, (dW, db, dX) = run()
        return float(loss), np.asarray(dW), np.asarray(db), np.asarray(dX)

    return _warm_up(run, result, warm_up)
