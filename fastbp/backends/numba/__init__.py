"""The Numba backend: the kernel set of ``fastbp.backends.interface`` as @njit kernels.

This module is the glue: it turns a checked call into a kernel's arguments (the head pack),
asks ``tuning.plan`` which path a call runs and calls it. The code is in modules that mirror
csrc/'s files: ``rows`` (a head's row math: rows.h), ``heads`` (heads.c), ``linear`` (linear.c:
the compiled steps and the drivers between them, under linear.c's names), ``products``
(products.h), ``columns`` (linear.c's column blocks' rows), ``mlp`` (layer_ops.h, mlp.c),
``runtime`` (threads, fork, memory, the BLAS binding: runtime.c; ``Twins``, a kernel body
compiled for Numba's threads and in order) and ``fastcall`` (C callbacks for csrc/fastcall.c).
``_jit`` holds the compile options and the on-disk cache, keyed by a hash of every source the
kernels compile in.

The paths (docs/performance.md): *fused rows* (``linear.linear_fused``): scores, head,
``dW += g x^T``, ``db += g``, ``dX = g W`` in one pass over four rows at a time, on the plan's
fixed row blocks whose partials are combined in block order (the same bits run to run);
*one block* (``linear.linear_one_block``): one thread, the batch one block of BLAS products in
one compiled call; *chunked* (``linear.chunked_rows``): per block of rows GEMM, the head in
place, ``dW += dS^T X``, ``dX = dS W``, on a team of Numba's threads each calling BLAS on one
thread, peak extra memory one score block and the team's partials whatever B; softmax_nll
with many classes: *column blocks* (``linear.linear_columns``). Layers and MLPs: BLAS GEMMs
with fused epilogues.

Mean reductions: the total weight ``sum(omega)`` is computed first (O(B)), so every gradient
row is written already scaled. Compilation is lazy (first call) and cached on disk.
"""
import sys

import numba as nb
import numpy as np

from ..._registry import DEFAULT_OPTIONS, HeadPack
from .. import _compose
from .._args import ACT_CODES, fast_entry, head_pack, reduced_loss
from .. import tuning
from ..tuning import Numba as TUNING
from .fastcall import _fused_cfuncs
from . import linear
from .heads import heads_blocks, rows_entry
from .mlp import _ADAM, _SGD, mlp_epoch_kernel, mlp_step_kernel
from .runtime import _EMPTY, _NO_LABELS, _NO_Z, BLAS, _forked, _threads, set_num_threads

__all__ = ["head", "linear_head", "linear_loss", "fast_linear_head", "linear_head_bf16",
           "linear_act_forward",
           "linear_act_backward", "mlp_forward", "mlp_loss_grad", "mlp_step", "mlp_epoch",
           "set_num_threads", "BLAS", "TUNING"]
_this = sys.modules[__name__]      # the kernel set _compose builds the networks from
# The pack of a call with every option at its default, per (head, target ndim, dtype): built
# once, the target slotted in at its field (the path of every tiny call).
_DEFAULT_PACKS = {}
_TARGET_AT = {1: HeadPack._fields.index("y"), 2: HeadPack._fields.index("Z")}


def _pack(name, S, target, options):
    """The HeadPack every compiled kernel takes (absent arrays are empty)."""
    if options is DEFAULT_OPTIONS[name]:
        key = (name, target.ndim, S.dtype)
        pack = _DEFAULT_PACKS.get(key)
        if pack is None:
            pack = _DEFAULT_PACKS[key] = _full_pack(name, S, target[:0], options)
        at = _TARGET_AT[key[1]]
        return tuple.__new__(HeadPack, (*pack[:at], target, *pack[at + 1:]))   # (faster than
    return _full_pack(name, S, target, options)                                # its __new__)


def _full_pack(name, S, target, options):
    return head_pack(name, target, options, _EMPTY[S.dtype], _NO_LABELS, _NO_Z[S.dtype])


_F64 = np.dtype(np.float64)


def head(name, S, target, out, reduction, options):
    """Head ``name`` on the rows of S, in one compiled pass (on fixed row blocks over the
    threads from HEADS_PARALLEL_MIN scores)."""
    B, dt = S.shape[0], S.dtype
    rows = np.empty(B, np.float64) if reduction == "none" else _EMPTY[_F64]
    mean, pack = reduction == "mean", _pack(name, S, target, options)
    nblocks = min(_threads[0], B) if B * S.shape[1] >= tuning.HEADS_PARALLEL_MIN else 1
    if nblocks > 1:
        total, osum = heads_blocks(S, mean, nblocks, out, rows, *pack)
    else:
        total, osum = rows_entry(S, mean, 1.0, _EMPTY[dt], _EMPTY[_F64], out, rows, *pack)
    if reduction == "none":
        return rows.astype(dt)
    return reduced_loss(total, osum, reduction)


# Numba's dispatch of the fused rows alone costs more than the checks, so tiny calls go
# through csrc/fastcall.c and fastcall.py's C callbacks when it was built (not under
# NUMBA_DISABLE_JIT: there is no machine code to call then).
fast_linear_head = None if nb.config.DISABLE_JIT else fast_entry("numba", _fused_cfuncs)
linear_head_bf16 = None          # bfloat16 calls: X converted to float32 first (fastbp/_bf16.py)


def _dynamic(kernel, *args):
    """kernel(*args) with its prange iterations handed out one at a time as threads free up
    (Numba's chunk size 1, set around the call: inside compiled code it would make the
    kernel uncacheable)."""
    was = nb.set_parallel_chunksize(1)
    try:
        return kernel(*args)
    finally:
        nb.set_parallel_chunksize(was)


def linear_head(X, W, b, target, head, options, reduction, chunk_rows, dW, db, dX,
                threads=None, filter_eps=0.0):
    """``threads``: row blocks of the fused path (default: get_num_threads(); 1 inside a
    BLAS-driven network, so Numba's threads never wait on BLAS's spinning ones).
    ``filter_eps`` > 0: the row blocks' backward skips inactive classes (the fused rows and
    column blocks stay exact)."""
    (B, d), n, dt = X.shape, W.shape[0], X.dtype
    h = _pack(head, X, target, options)
    mean = reduction == "mean"
    b_ = _EMPTY[dt] if b is None else b
    p = tuning.plan("numba", B, d, n, dt, head, options, chunk_rows, _threads[0], threads,
                    False, filter_eps)
    if p.path in ("fused", "one_block"):
        db_ = _EMPTY[dt] if db is None else db
        dX_ = _NO_Z[dt] if dX is None else dX
        if p.path == "one_block":
            total, osum = linear.linear_one_block(X, W, b_, mean, dW, db_, dX_, *h)
        elif p.blocks == 1:
            total, osum = linear.linear_fused_serial(X, W, b_, mean, dW, db_, dX_, *h)
        elif _forked[0]:
            total, osum = linear.linear_fused.serial(X, W, b_, mean, p.blocks, dW, db_, dX_,
                                                     *h)
        else:
            total, osum = _dynamic(linear.linear_fused.parallel, X, W, b_, mean, p.blocks, dW,
                                   db_, dX_, *h)
    else:
        total, osum = linear.linear_chunked(h, X, W, b_, mean, p, dW, db, dX, filter_eps)
    return reduced_loss(total, osum, reduction)


def linear_loss(X, W, b, target, head, options, reduction, chunk_rows):
    """The loss alone (linear.linear_loss on the plan's blocks and team)."""
    (B, d), n, dt = X.shape, W.shape[0], X.dtype
    p = tuning.plan("numba", B, d, n, dt, head, options, chunk_rows, _threads[0], loss=True)
    rows, total, osum = linear.linear_loss(_pack(head, X, target, options), X, W,
                                           _EMPTY[dt] if b is None else b, p)
    if reduction == "none":
        return rows.astype(dt)
    return reduced_loss(total, osum, reduction)


linear_act_forward = linear.linear_act_forward
linear_act_backward = linear.linear_act_backward


def mlp_forward(X, params, activation, alpha):
    return _compose.mlp_forward(_this, X, params, activation, alpha)


def mlp_loss_grad(X, params, target, activation, alpha, head, options, reduction, grads):
    """The last layer's fused kernel runs on one thread when hidden layers exist: their GEMMs
    are BLAS's, and Numba's threads must not wait on BLAS's spinning ones."""
    return _compose.mlp_loss_grad(_this, X, params, target, activation, alpha,
                                  head, options, reduction, grads,
                                  threads=1 if len(params) > 1 else None)


def mlp_step(X, params, target, activation, alpha, head, options, reduction, grads, optimizer):
    """One compiled call for SGD / Adam on elementwise activations; otherwise mlp_loss_grad
    and the optimizer's own update."""
    if not _compiled_steps(X, activation, optimizer):
        return _compose.mlp_step(_this, X, params, target, activation, alpha,
                                 head, options, reduction, grads, optimizer)
    total, osum = mlp_step_kernel(
        X, *_step_args(params, activation, alpha, reduction, grads, optimizer, 1),
        *_pack(head, X, target, options))
    return reduced_loss(total, osum, reduction)


def mlp_epoch(X, params, target, activation, alpha, head, options, reduction, grads, optimizer,
              batch_size):
    """Every step of the epoch in one compiled call where mlp_step runs one, else mlp_step
    per batch."""
    if not _compiled_steps(X, activation, optimizer):
        return _compose.mlp_epoch(_this, X, params, target, activation, alpha,
                                  head, options, reduction, grads, optimizer, batch_size)
    steps = -(-X.shape[0] // batch_size)
    sums = np.empty((steps, 2))
    mlp_epoch_kernel(X, *_step_args(params, activation, alpha, reduction, grads, optimizer,
                                    steps)[:-1], optimizer.t - steps, batch_size, sums,
                     *_pack(head, X, target, options))
    return [reduced_loss(total, osum, reduction) for total, osum in sums]


def _compiled_steps(X, activation, optimizer):
    """Whether mlp_step_kernel runs these steps: SGD or Adam, an elementwise activation."""
    return (getattr(optimizer, "kind", None) in ("sgd", "adam") and activation != "maxout"
            and X.shape[0] > 0)


def _step_args(params, activation, alpha, reduction, grads, optimizer, steps):
    """mlp_step_kernel's arguments after X and before the head, for the optimizer's next
    ``steps`` updates (counted here): the last one is the step count of the first."""
    kind = _SGD if optimizer.kind == "sgd" else _ADAM
    flat = [a for pair in params for a in pair]
    optimizer.begin(flat, steps)
    state = [s if kind == _ADAM else (s if s is not None else p, p)
             for s, p in zip(optimizer.state, flat)]        # SGD without momentum: unused
    s1, s2 = [s[0] for s in state], [s[1] for s in state]
    return (tuple(flat[0::2]), tuple(flat[1::2]), tuple(g for g, _ in grads),
            tuple(g for _, g in grads), ACT_CODES[activation], 0.0 if alpha is None else alpha,
            reduction == "mean", tuple(s1[0::2]), tuple(s1[1::2]), tuple(s2[0::2]),
            tuple(s2[1::2]), kind, optimizer.lr, getattr(optimizer, "momentum", 0.0),
            getattr(optimizer, "nesterov", False), optimizer.weight_decay,
            *getattr(optimizer, "betas", (0.0, 0.0)), getattr(optimizer, "eps", 0.0),
            optimizer.t - steps + 1)
