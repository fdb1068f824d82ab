"""The Numba backend: the kernel set of ``fastbp.backends.interface`` as @njit kernels.

This module is the Python side: it turns a checked call into a kernel's arguments (the head
pack) and picks the path by shape (``tuning.Numba``; docs/performance.md). The compiled code is
in modules that mirror csrc/: ``rows`` (a head's row math: rows.h), ``heads`` (heads.c),
``linear`` and ``columns`` (linear.c), ``mlp`` (layer_ops.h, mlp.c), ``runtime`` (threads,
fork, memory, the BLAS binding: runtime.c) and ``fastcall`` (C callbacks for
csrc/fastcall.c). ``_jit`` holds the compile options and the on-disk cache, keyed by a hash of
every source the kernels compile in.

``linear_head`` has three paths, chosen per shape:
*fused rows* (``linear.linear_rows``): scores, head, ``dW += g x^T``, ``db += g``, ``dX = g W``
in one pass over four rows at a time, rows split over ``get_num_threads()`` fixed blocks whose
partials are combined in block order (the same bits run to run): tiny weights, and few classes
on large work; a few scores (B n <= FUSED_TINY_SCORES) one row at a time
(``linear_rows_tiny``). *Chunked BLAS*, per block of ``chunk_rows`` rows: GEMM, the head in
place, ``dW += dS^T X``, ``dX = dS W``, on a team of Numba's threads each calling BLAS on one
thread (``_linear_chunked``): peak extra memory one score block and the team's partials,
whatever B; on one thread, when the whole batch is one block, the same in one compiled call
(``linear_one_block``).
softmax_nll with many classes: *column blocks* (``_linear_columns``, two passes over the
columns, as csrc/linear.c). Layers and MLPs: BLAS GEMMs with fused epilogues.

Mean reductions: the total weight ``sum(omega)`` is computed first (O(B)), so every gradient
row is written already scaled. Compilation is lazy (first call) and cached on disk.
"""
import contextlib
import sys

import numba as nb
import numpy as np

from ..._registry import DEFAULT_OPTIONS, HeadPack
from .. import _compose
from .._args import ACT_CODES, fast_entry, head_pack, reduced_loss
from .. import tuning
from ..tuning import Numba as TUNING
from .fastcall import _fused_cfuncs
from .heads import heads_blocks, heads_parallel, mean_scale, rows_entry
from .columns import softmax_cols_block, softmax_cols_loss
from .linear import (chunk_team, chunk_team_blocks, linear_fused, linear_fused_blocks,
                     linear_fused_serial, linear_one_block, loss_block, loss_team, rows_combine,
                     rows_combine_blocks, rows_team, rows_team_blocks)
from .mlp import (_ADAM, _SGD, activation_backward, bias_activate, bias_maxout, maxout_backward,
                  mlp_epoch_kernel, mlp_step_kernel)
from .runtime import (_EMPTY, _NO_LABELS, _NO_Z, BLAS, _forked, _threads, blas_one_thread, gemm,
                      set_num_threads)

__all__ = ["head", "linear_head", "linear_loss", "fast_linear_head", "linear_act_forward",
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
        entry = heads_blocks if _forked[0] else heads_parallel
        total, osum = entry(S, mean, nblocks, out, rows, *pack)
    else:
        total, osum = rows_entry(S, mean, 1.0, _EMPTY[dt], _EMPTY[_F64], out, rows, *pack)
    if reduction == "none":
        return rows.astype(dt)
    return reduced_loss(total, osum, reduction)


# Numba's dispatch of the fused rows alone costs more than the checks, so tiny calls go
# through csrc/fastcall.c and fastcall.py's C callbacks when it was built (not under
# NUMBA_DISABLE_JIT: there is no machine code to call then).
fast_linear_head = None if nb.config.DISABLE_JIT else fast_entry("numba", _fused_cfuncs)


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
            total, osum = linear_one_block(X, W, b_, mean, dW, db_, dX_, *h)
        elif p.blocks == 1:
            total, osum = linear_fused_serial(X, W, b_, mean, dW, db_, dX_, *h)
        elif _forked[0]:
            total, osum = linear_fused_blocks(X, W, b_, mean, p.blocks, dW, db_, dX_, *h)
        else:
            total, osum = _dynamic(linear_fused, X, W, b_, mean, p.blocks, dW, db_, dX_, *h)
    elif p.path == "columns":
        total, osum = _linear_columns(h, X, W, b_, mean, p.chunk, p.cols, dW, db, dX)
    else:
        total, osum = _linear_chunked(h, X, W, b_, mean, p, dW, db, dX, filter_eps)
    return reduced_loss(total, osum, reduction)


def linear_loss(X, W, b, target, head, options, reduction, chunk_rows):
    """The loss alone, per block of rows: S = X_c W^T (own_scores where linear_head takes it)
    and the head's row losses, on a team split by classes (loss_team), BLAS held to one thread
    when it is BLAS's product; no gradient products."""
    (B, d), n, dt = X.shape, W.shape[0], X.dtype
    h = _pack(head, X, target, options)
    b_ = _EMPTY[dt] if b is None else b
    p = tuning.plan("numba", B, d, n, dt, head, options, chunk_rows, _threads[0], loss=True)
    own, chunk, team = bool(p.own), p.chunk, p.team
    rows = np.empty(B)
    total = osum = 0.0
    with (blas_one_thread() if team > 1 and not own else contextlib.nullcontext(True)) as held:
        team = team if held else 1
        block = np.empty((chunk, n), dt)
        for lo in range(0, B, chunk):
            hi = min(lo + chunk, B)
            hp = _rows_of(h, slice(lo, hi))
            if team > 1 and not _forked[0]:
                t, o = loss_team(block[:hi - lo], X[lo:hi], W, b_, own, team, rows[lo:hi], *hp)
            else:
                t, o = loss_block(block[:hi - lo], X[lo:hi], W, b_, own, rows[lo:hi], *hp)
            total += t
            osum += o
    if reduction == "none":
        return rows.astype(dt)
    return reduced_loss(total, osum, reduction)


def _rows_of(h, rows):
    """The pack for a block of rows: its labels, targets and sample weights (absent stay empty)."""
    return h._replace(**{k: getattr(h, k)[rows] for k in ("y", "Z", "sample_weight")
                         if getattr(h, k).size})


def _linear_chunked(h, X, W, b, mean, p, dW, db, dX, filter_eps=0.0):
    """Per row block: S = X_c W^T (own: by own_scores, else BLAS), bias + head (db in
    float64), dW += S^T X_c, dX_c = S W (with filter_eps > 0 on the block's active classes
    only), on a team of Numba's threads with BLAS
    held to one thread, of the plan's (``p``) size, split by classes (chunk_team) or by rows
    (rows_team), as csrc/linear.c's chunked_rows; a team of one, or a forked child's,
    runs the threads' shares one after the other (the *_blocks twins: the same bits) with BLAS
    on all threads (one) or held (the child). Only one block of scores is ever held; the rows'
    losses are summed in row order."""
    B, n, dt = X.shape[0], W.shape[0], X.dtype
    scale = mean_scale(h, B) if mean else 1.0
    chunk, team, by_rows, own = p.chunk, p.team, p.by_rows, p.own
    with blas_one_thread() if team > 1 else contextlib.nullcontext(False) as held:
        team = team if held else 1
        block, lrow = np.empty((chunk, n), dt), np.empty(chunk)
        db64 = np.zeros(n) if db is not None else _EMPTY[_F64]
        if team > 1 and by_rows:
            total, osum = _rows_team(h, X, W, b, scale, chunk, dW, db64, dX, team, block, lrow,
                                     own)
        else:
            total, osum = _class_team(h, X, W, b, scale, chunk, dW, db64, dX, team, block, lrow,
                                      filter_eps, own)
    if db is not None:
        with np.errstate(over="ignore"):       # a diverging run's inf is the answer
            db[...] = db64
    return total, osum


def _class_team(h, X, W, b, scale, chunk, dW, db64, dX, team, block, lrow, filter_eps, own):
    """chunk_team (chunk_team_blocks on one thread) over the blocks of rows."""
    B, (n, d), dt = X.shape[0], W.shape, X.dtype
    P = np.empty((team, chunk, d) if dX is not None else (team, 0, 0), dt)
    thr = filter_eps * scale
    # filter_eps's groups: all threads' Wg and Tg within half the score block
    group = max(1, min(n, chunk * n // (4 * max(d, 1))) // team) if filter_eps else 0
    Wg, Tg = np.empty((team, group, d), dt), np.empty((team, group, d), dt)
    idx = np.empty(n if filter_eps else 0, np.intp)
    entry = chunk_team if team > 1 and not _forked[0] else chunk_team_blocks
    total = osum = 0.0
    if B == 0 or filter_eps:
        dW[...] = 0
    for lo in range(0, B, chunk):
        hi = min(lo + chunk, B)
        dXc = _NO_Z[dt] if dX is None else dX[lo:hi]
        Pb = P if team > 1 or dX is None else dXc[None]    # one thread: dX_c itself
        t, o = entry(block[:hi - lo], X[lo:hi], W, b, scale, lo == 0, bool(own), dW, db64, dXc,
                     Pb, lrow, thr, Wg, Tg, idx, *_rows_of(h, slice(lo, hi)))
        total += t
        osum += o
    return total, osum


def _rows_team(h, X, W, b, scale, chunk, dW, db64, dX, team, block, lrow, own):
    """rows_team over the blocks of rows, then rows_combine."""
    B, (n, d), dt = X.shape[0], W.shape, X.dtype
    Pw, Pb = np.empty((team, n, d), dt), np.zeros((team, n))
    total = osum = 0.0
    for lo in range(0, B, chunk):
        hi = min(lo + chunk, B)
        dXc = _NO_Z[dt] if dX is None else dX[lo:hi]
        t, o = (rows_team_blocks if _forked[0] else rows_team)(
            block[:hi - lo], X[lo:hi], W, b, scale, lo == 0, bool(own), Pw, Pb, dXc, lrow,
            *_rows_of(h, slice(lo, hi)))
        total += t
        osum += o
    (rows_combine_blocks if _forked[0] else rows_combine)(Pw, Pb, dW, db64)
    return total, osum


def _linear_columns(h, X, W, b, mean, rows, cols, dW, db, dX):
    """softmax_nll in blocks of (rows, cols) scores, cols < n, as csrc/linear.c's
    linear_columns: per panel of rows X_p, pass 1 per column block S = X_p W_c^T + b_c and the
    rows' statistics; pass 2 S again, the gradient in place, dW_c += S^T X_p, dX_p += S W_c.
    st: per row M, r, rest and the argmax (as a float: exact below 2^53)."""
    B, n, dt = X.shape[0], W.shape[0], X.dtype
    scale = mean_scale(h, B) if mean else 1.0
    rows = min(rows, max(B, 1))
    flat = np.empty(rows * cols, dt)          # a block of any shape, C-contiguous for BLAS
    st, lin = np.empty((rows, 4)), np.empty(rows)
    x = np.empty(cols)
    db64 = np.zeros(n) if db is not None else _EMPTY[_F64]
    total = osum = 0.0
    if B == 0:
        dW[...] = 0
    for lo in range(0, B, rows):
        hi = min(lo + rows, B)
        Xp, hp = X[lo:hi], _rows_of(h, slice(lo, hi))
        for second in (False, True):
            for c0 in range(0, n, cols):
                c1 = min(c0 + cols, n)
                S, Wc = flat[:(hi - lo) * (c1 - c0)].reshape(hi - lo, c1 - c0), W[c0:c1]
                gemm(S, Xp, Wc, trans_b=True)
                softmax_cols_block(second, S, c0, n, b, hp, scale, st, lin, db64, x)
                if not second:
                    continue
                gemm(dW[c0:c1], S, Xp, trans_a=True, beta=1.0 if lo else 0.0)
                if dX is not None:
                    gemm(dX[lo:hi], S, Wc, beta=1.0 if c0 else 0.0)
        t, o = softmax_cols_loss(st[:hi - lo], lin, hp, n)
        total += t
        osum += o
    if db is not None:
        with np.errstate(over="ignore"):
            db[...] = db64
    return total, osum


def linear_act_forward(X, W, b, activation, alpha):
    dt = X.dtype
    S = np.empty((X.shape[0], W.shape[0]), dt)
    gemm(S, X, W, trans_b=True)
    b_ = _EMPTY[dt] if b is None else b
    if activation == "maxout":
        A = np.empty((X.shape[0], W.shape[0] // alpha), dt)
        winners = np.empty(A.shape, np.intp)
        bias_maxout(S, b_, alpha, A, winners)
        return A, winners
    bias_activate(S, b_, ACT_CODES[activation], 0.0 if alpha is None else alpha)
    return S, None


def _backward_dS(dA, cache, db):
    """dS of a linear+activation layer, and db (if wanted) in the same pass."""
    db64 = np.zeros(cache.W.shape[0]) if db is not None else _EMPTY[_F64]
    dS = np.empty((dA.shape[0], cache.W.shape[0]), dA.dtype)
    if cache.activation == "maxout":
        maxout_backward(dA, cache.argmax, cache.alpha, dS, db64)
    else:
        activation_backward(dA, cache.A, ACT_CODES[cache.activation],
                            0.0 if cache.alpha is None else cache.alpha, dS, db64)
    if db is not None:
        with np.errstate(over="ignore"):
            db[...] = db64
    return dS


def linear_act_backward(dA, cache, dX, dW, db):
    dS = _backward_dS(dA, cache, db)
    gemm(dW, dS, cache.X, trans_a=True)
    if dX is not None:
        gemm(dX, dS, cache.W)


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
