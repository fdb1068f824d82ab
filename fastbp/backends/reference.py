"""The NumPy reference backend: clear, short, vectorised -- the oracle every backend is tested
against.

Formulas: ``docs/math.md``. The kernel set and its signatures are ``interface.Backend``'s.

Every head is written as a *rows* function returning ``(wl, wG, omega)``: the weighted per-row
loss ``omega_i * l_i``, the weighted per-row gradient ``omega_i * g_i`` and the per-row weights
whose sum divides under ``"mean"``. The reductions are then the same for every head (``_reduce``);
``linear_head`` sums chunks and divides the gradients by ``sum(omega)`` at the end (they are
linear in dS), so no chunk needs the whole batch.

The network kernels (mlp_loss_grad, mlp_step, mlp_epoch) are composed from the layer kernels
once for every backend, in ``_compose.py``. This backend favours clarity: it allocates B x n
temporaries even when given ``out``.
"""
import sys

import numpy as np

from .._math import (activate, activation_grad, label_weights, log_softmax, mean_scale,  # noqa: F401
                     row_weights, row_weights_or_ones, sigmoid, sigmoid_prime, softplus)
from . import _compose
from .tuning import default_chunk_rows




def _scaled(w, G):
    return w[:, None] * G


# ---------------------------------------------------------------------------- head rows
def softmax_targets(n, target, sample_weight, weight, ignore_index, label_smoothing, dtype):
    """Every softmax_nll option folded into one matrix C (B, n) and the 'mean' weights omega.

    With C, torch.nn.functional.cross_entropy's loss for row i is ``sum_j C_ij (lse_i - s_ij)``
    and its gradient ``(sum_j C_ij) p_i - C_i``. Labels: ``C_i = (1-eps) w_y e_y + (eps/n) w``
    and omega = w_y (0 for ignore_index); probability rows z: ``C_i = w * ((1-eps) z + eps/n)``
    and omega = 1 (torch's "mean" divides by B there). sample_weight multiplies both.
    """
    B, eps = len(target), label_smoothing
    w = np.ones(n, dtype) if weight is None else weight
    if target.ndim == 2:
        C = w * ((1 - eps) * target + eps / n)
        omega = np.ones(B, dtype)
    else:
        keep = target != ignore_index
        y = np.where(keep, target, 0)
        omega = label_weights(target, weight, ignore_index, dtype)
        C = np.zeros((B, n), dtype)
        C[np.arange(B), y] = (1 - eps) * omega
        C += (eps / n) * w * keep[:, None]
    if sample_weight is not None:
        C *= sample_weight[:, None]
        omega = omega * sample_weight
    return C.astype(dtype, copy=False), omega.astype(dtype, copy=False)


def _softmax_nll_rows(S, target, sample_weight, weight, ignore_index, label_smoothing, z_loss,
                      softcap):
    """softcap c: s <- c tanh(s / c), and the gradient times 1 - tanh^2; z_loss z: + z lse^2
    per row, weighted as the row, gradient + 2 z lse p (docs/math.md, "The language-model
    options of softmax_nll")."""
    if softcap is None:
        return _softmax_ce_rows(S, target, sample_weight, weight, ignore_index, label_smoothing,
                                z_loss)
    U = S / S.dtype.type(softcap)
    e = np.exp(-2 * np.abs(U))
    wl, wG, omega = _softmax_ce_rows(softcap * np.tanh(U), target, sample_weight, weight,
                                     ignore_index, label_smoothing, z_loss)
    return wl, wG * (4 * e / (1 + e) ** 2), omega     # 1 - tanh^2 without its cancellation


def _softmax_ce_rows(S, target, sample_weight, weight, ignore_index, label_smoothing, z_loss):
    """loss_i = sum_j C_ij (lse_i - s_ij), g_i = (sum_j C_ij) p_i - C_i, in a form that keeps
    float32 accurate for confident rows: with m = argmax_j s_j, M = s_m, e_j = exp(s_j - M) and
    r = sum_{j != m} e_j, lse - s_j = (M - s_j) + log1p(r), p_j = e_j / (1 + r), and
    g_m = (sum_{j != m} C_j - C_m r) / (1 + r) (no 1 - p_m cancellation)."""
    C, omega = softmax_targets(S.shape[1], target, sample_weight, weight, ignore_index,
                               label_smoothing, S.dtype)
    rows = np.arange(len(S))
    m = S.argmax(axis=1)                    # first maximum; a NaN score wins (and propagates)
    M = S[rows, m][:, None]
    E = np.exp(S - M)
    E[rows, m] = 0
    r = E.sum(axis=1, keepdims=True)
    # C_ij * (lse - s_ij), with 0 where C_ij = 0 even if s_ij = -inf
    wl = np.where(C != 0, C * ((M - S) + np.log1p(r)), 0).sum(axis=1)
    C_m = C[rows, m].copy()
    C[rows, m] = 0
    rest = C.sum(axis=1)                    # sum_{j != m} C_ij
    C[rows, m] = C_m
    wG = (rest + C_m)[:, None] * (E / (1 + r)) - C
    wG[rows, m] = (rest - C_m * r[:, 0]) / (1 + r[:, 0])
    if z_loss:
        lse = M + np.log1p(r)                   # (B, 1)
        P = E / (1 + r)
        P[rows, m] = 1 / (1 + r[:, 0])
        wl = wl + omega * z_loss * lse[:, 0] ** 2
        wG += (omega[:, None] * (2 * z_loss) * lse) * P
    return wl, wG, omega


def _multiclass_hinge_rows(S, y, sample_weight, margin, p, weight):
    rows = np.arange(len(y))
    M = S - S[rows, y][:, None] + margin       # margins s_j - s_y + m
    M[rows, y] = 0                              # j = y is not a term
    H = np.maximum(M, 0)
    active = (M > 0) + 0 * M                    # 1[m > 0], NaN where m is NaN
    active[rows, y] = 0
    l, G = (H.sum(axis=1), active) if p == 1 else ((H * H).sum(axis=1), 2 * H)
    G[rows, y] = -G.sum(axis=1)
    omega = row_weights("multiclass_hinge", y, dict(sample_weight=sample_weight, weight=weight),
                        S.dtype)
    return omega * l, _scaled(omega, G), omega


def _binary_hinge_rows(s, y, sample_weight, margin):
    ys = y[:, None].astype(s.dtype)
    m = margin - ys * s
    omega = row_weights_or_ones(len(y), s.dtype, sample_weight)
    G = -ys * ((m > 0) + 0 * m)
    return omega * np.maximum(m, 0)[:, 0], _scaled(omega, G), omega


def _sigmoid_bce_rows(S, Z, sample_weight, pos_weight):
    # torch's binary_cross_entropy_with_logits: (1-z) s + lw softplus(-s), lw = 1 + (pw-1) z;
    # its derivative (1-z) - lw sigma(-s) = lw sigma(s) - pw z (= sigma(s) - z without pos_weight)
    if pos_weight is None:
        lw, pz = 1, Z
    else:
        lw, pz = 1 + (pos_weight - 1) * Z, pos_weight * Z
    l = ((1 - Z) * S + lw * softplus(-S)).sum(axis=1)
    G = lw * sigmoid(S) - pz
    omega = row_weights_or_ones(len(Z), S.dtype, sample_weight)
    return omega * l, _scaled(omega, G), omega


def _sigmoid_l2_rows(S, Z, sample_weight):
    P = sigmoid(S)
    omega = row_weights_or_ones(len(Z), S.dtype, sample_weight)
    G = -2 * (Z - P) * sigmoid_prime(S)
    return omega * ((Z - P) ** 2).sum(axis=1), _scaled(omega, G), omega


def _l2_rows(S, Z, sample_weight):
    omega = row_weights_or_ones(len(Z), S.dtype, sample_weight)
    return omega * ((Z - S) ** 2).sum(axis=1), _scaled(omega, 2 * (S - Z)), omega


def _l1_rows(S, Z, sample_weight):
    omega = row_weights_or_ones(len(Z), S.dtype, sample_weight)
    return omega * np.abs(Z - S).sum(axis=1), _scaled(omega, np.sign(S - Z)), omega


def _nll_rows(P, y, sample_weight):
    rows = np.arange(len(y))
    py = P[rows, y]
    G = np.zeros_like(P)
    G[rows, y] = -1 / py
    omega = row_weights_or_ones(len(y), P.dtype, sample_weight)
    return omega * -np.log(py), _scaled(omega, G), omega


def _huber_rows(S, Z, sample_weight, delta):
    """m = min(|r|, delta), r = s - z: loss m (|r| - m/2), gradient sign(r) m (clip(r, +-delta));
    one branch-free form, no r^2 to overflow."""
    R = S - Z
    A = np.abs(R)
    m = np.minimum(A, delta)
    omega = row_weights_or_ones(len(Z), S.dtype, sample_weight)
    return omega * (m * (A - m / 2)).sum(axis=1), _scaled(omega, np.sign(R) * m), omega


def _sigmoid_focal_rows(S, Z, sample_weight, alpha, gamma):
    """alpha_t q^gamma ce, ce = softplus(s) - z s, q = 1 - p_t = z sigma(-s) + (1 - z) sigma(s);
    gradient alpha_t q^gamma (gamma (1 - 2z) (sigma(s) sigma(-s) / q) ce + sigma(s) - z): the
    ratio is at most 1 (0 where q = 0), so it stays finite for gamma < 1 and |s| large."""
    P, Pm = sigmoid(S), sigmoid(-S)
    ce = softplus(S) - Z * S
    q = Z * Pm + (1 - Z) * P
    at = alpha * Z + (1 - alpha) * (1 - Z) if alpha >= 0 else 1
    qg = q ** gamma
    ratio = np.divide(P * Pm, q, out=np.zeros_like(q), where=q > 0)
    G = at * qg * (gamma * (1 - 2 * Z) * ratio * ce + (P - Z))
    omega = row_weights_or_ones(len(Z), S.dtype, sample_weight)
    return omega * (at * qg * ce).sum(axis=1), _scaled(omega, G), omega


ROWS = {"softmax_nll": _softmax_nll_rows, "multiclass_hinge": _multiclass_hinge_rows,
        "binary_hinge": _binary_hinge_rows, "sigmoid_bce": _sigmoid_bce_rows,
        "sigmoid_l2": _sigmoid_l2_rows, "l2": _l2_rows, "l1": _l1_rows, "nll": _nll_rows,
        "huber": _huber_rows, "sigmoid_focal": _sigmoid_focal_rows}


def _reduce(wl, wG, omega, reduction, out):
    if reduction == "none":
        out[...] = wG
        return wl.astype(out.dtype, copy=False)
    total = float(np.sum(wl, dtype=np.float64))
    if reduction == "sum":
        out[...] = wG
        return total
    loss, scale = mean_scale(total, float(np.sum(omega, dtype=np.float64)))
    np.multiply(wG, scale, out=out, casting="unsafe")
    return loss


def head(name, S, target, out, reduction, options):
    """Head ``name``: loss and dS (into out) of docs/math.md's rows, reduced."""
    return _reduce(*ROWS[name](S, target, **options), reduction, out)


# ---------------------------------------------------------------------------- linear + head
fast_linear_head = None          # no compiled entry for the whole call: always the checked path
linear_head_bf16 = None          # bfloat16 calls: X converted to float32 first (fastbp/_bf16.py)


def _head_blocks(X, W, b, target, head, options, chunk):
    """S = X W^T + b one block of ``chunk`` rows at a time, through the head's rows: yields
    (rows, wl, wG, omega) per block."""
    options = dict(options)
    sample_weight = options.pop("sample_weight")
    for lo in range(0, X.shape[0], chunk):
        rows = slice(lo, lo + chunk)
        S = X[rows] @ W.T
        if b is not None:
            S += b
        sw = None if sample_weight is None else sample_weight[rows]
        yield (rows, *ROWS[head](S, target[rows], sw, **options))


def linear_head(X, W, b, target, head, options, reduction, chunk_rows, dW, db, dX,
                threads=None, filter_eps=0.0):
    """S = X W^T + b, one row chunk at a time: head rows, then dW += dS^T X, db += sum dS,
    dX = dS W; "mean" scales the three gradients by 1/sum(omega) at the end. ``threads`` is
    NumPy's (BLAS's) business here: ignored."""
    chunk = chunk_rows or default_chunk_rows(W.shape[0], X.dtype.itemsize)
    total = omega_sum = 0.0
    dW[...] = 0
    if db is not None:
        db[...] = 0
    for rows, wl, dS, omega in _head_blocks(X, W, b, target, head, options, chunk):
        total += float(np.sum(wl, dtype=np.float64))
        omega_sum += float(np.sum(omega, dtype=np.float64))
        if db is not None:
            db += dS.sum(axis=0)
        if filter_eps:
            dS = dS * active_classes(dS, filter_eps * omega)
        dW += dS.T @ X[rows]
        if dX is not None:
            np.matmul(dS, W, out=dX[rows])
    if reduction == "sum":
        return total
    loss, scale = mean_scale(total, omega_sum)
    for g in (dW, db, dX):
        if g is not None:
            g *= scale
    return loss


def linear_loss(X, W, b, target, head, options, reduction, chunk_rows):
    """The loss alone: the head's rows per block of scores (their gradients unused)."""
    chunk = chunk_rows or default_chunk_rows(W.shape[0], X.dtype.itemsize)
    wl, total, omega_sum = np.empty(X.shape[0]), 0.0, 0.0
    for rows, w, _, omega in _head_blocks(X, W, b, target, head, options, chunk):
        wl[rows] = w
        total += float(np.sum(w, dtype=np.float64))
        omega_sum += float(np.sum(omega, dtype=np.float64))
    if reduction == "none":
        return wl.astype(X.dtype)
    return total if reduction == "sum" else mean_scale(total, omega_sum)[0]


def active_classes(G, thr):
    """filter_eps's rule (docs/math.md) on the gradient G of a block of rows: the classes j
    with some g_ij != 0 and not |g_ij| < thr_i (NaN counts as active) take part in the backward
    products; the others are skipped in the block."""
    return ((G != 0) & ~(np.abs(G) < thr[:, None])).any(axis=0)


# ---------------------------------------------------------------------------- activations


def linear_act_forward(X, W, b, activation, alpha):
    S = X @ W.T
    if b is not None:
        S += b
    if activation != "maxout":
        return activate(activation, S, alpha), None
    pieces = S.reshape(len(X), alpha, len(W) // alpha)     # W piece-major: piece * n + unit
    argmax = pieces.argmax(axis=1)                  # first piece on ties; a NaN piece wins
    return np.take_along_axis(pieces, argmax[:, None, :], axis=1)[:, 0, :], argmax


def linear_act_backward(dA, cache, dX, dW, db):
    X, W = cache.X, cache.W
    if cache.activation == "maxout":
        dS = np.zeros((len(dA), cache.alpha, dA.shape[1]), dA.dtype)
        np.put_along_axis(dS, cache.argmax[:, None, :], dA[:, None, :], axis=1)
        dS = dS.reshape(len(dA), len(W))
    else:
        dS = dA * activation_grad(cache.activation, cache.A, cache.alpha)
    np.matmul(dS.T, X, out=dW)
    if db is not None:
        np.sum(dS, axis=0, out=db)
    if dX is not None:
        np.matmul(dS, W, out=dX)


# ---------------------------------------------------------------------------- networks
def mlp_forward(X, params, activation, alpha):
    h = X
    for W, b in params[:-1]:
        h, _ = linear_act_forward(h, W, b, activation, alpha)
    W, b = params[-1]
    return h @ W.T + (0 if b is None else b)


def mlp_loss_grad(X, params, target, activation, alpha, head, options, reduction, grads):
    return _compose.mlp_loss_grad(sys.modules[__name__], X, params, target, activation, alpha,
                                  head, options, reduction, grads)


def mlp_step(X, params, target, activation, alpha, head, options, reduction, grads, optimizer):
    return _compose.mlp_step(sys.modules[__name__], X, params, target, activation, alpha, head,
                             options, reduction, grads, optimizer)


def mlp_epoch(X, params, target, activation, alpha, head, options, reduction, grads, optimizer,
              batch_size):
    return _compose.mlp_epoch(sys.modules[__name__], X, params, target, activation, alpha, head,
                              options, reduction, grads, optimizer, batch_size)
