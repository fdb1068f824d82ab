"""Layers and training (csrc/layer_ops.h, csrc/mlp.c): the activations' epilogues after a BLAS
product, and a whole SGD / Adam step -- or an epoch of them -- in one compiled call."""
import math

import numpy as np

from ..._registry import SCALARS_AT, HeadPack
from .._args import ADAM, ELU, LEAKY, RELU, SGD, SIGMOID, TANH
from .heads import _unowned_pack, head_rows
from .rows import relu, sigmoid
from .runtime import gemm
from ._jit import jit

@jit
def activate(code, x, alpha):
    if code == SIGMOID:
        return sigmoid(x)
    if code == TANH:
        return math.tanh(x)
    if code == RELU:
        return relu(x)
    if code == LEAKY:
        return x if x > 0 else alpha * x
    if code == ELU:
        return x if x > 0 else alpha * math.expm1(min(x, 0.0))
    return x


@jit
def activation_grad(code, a, alpha):
    """f'(s) read off a = f(s) (alpha >= 0 keeps the sign of s)."""
    if code == SIGMOID:
        return a * (1.0 - a)
    if code == TANH:
        return 1.0 - a * a
    if code == RELU:
        return 1.0 if a > 0 else 0.0
    if code == LEAKY:
        return 1.0 if a > 0 else alpha
    if code == ELU:
        return 1.0 if a > 0 else a + alpha
    return 1.0


@jit
def bias_activate(S, b, code, alpha):
    """A = f(S + b), in place on S (one pass after the GEMM)."""
    for i in range(S.shape[0]):
        s = S[i]
        for j in range(s.size):
            s[j] = activate(code, s[j] + b[j] if b.size else s[j], alpha)


@jit
def bias_maxout(S, b, k, A, winners):
    """A[i, u] = max_p S[i, p*n + u] + b[p*n + u] (first maximum; a NaN piece wins); winners
    gets the winning p."""
    n = A.shape[1]
    for i in range(S.shape[0]):
        for u in range(n):
            best = 0
            M = S[i, u] + (b[u] if b.size else 0.0)
            for q in range(1, k):
                v = S[i, q * n + u] + (b[q * n + u] if b.size else 0.0)
                if v > M or (v != v and M == M):
                    best, M = q, v
            A[i, u] = M
            winners[i, u] = best


@jit
def activation_backward(dA, A, code, alpha, dS, db):
    """dS = dA * f'(a) and db (float64, if given) += sum_i dS[i], in one pass."""
    for i in range(dA.shape[0]):
        for j in range(dA.shape[1]):
            g = dA[i, j] * activation_grad(code, A[i, j], alpha)
            dS[i, j] = g
            if db.size:
                db[j] += g


@jit
def maxout_backward(dA, argmax, k, dS, db):
    """dS: dA routed to the winning piece, zero elsewhere; db += sum_i dS[i]."""
    n = dA.shape[1]
    dS[:] = 0
    for i in range(dA.shape[0]):
        for u in range(n):
            col = argmax[i, u] * n + u
            dS[i, col] = dA[i, u]
            if db.size:
                db[col] += dA[i, u]


_SGD, _ADAM = SGD, ADAM     # (globals: compiled in as constants)


@jit
def optimizer_update(p, g, s1, s2, kind, lr, momentum, nesterov, wd, b1, b2, eps, t):
    """One parameter array, in place: torch's SGD (s1 = momentum buffer) or Adam (s1 = m,
    s2 = v), the formulas of fastbp.model term for term (weight decay: g + wd p)."""
    p, g, s1, s2 = p.reshape(-1), g.reshape(-1), s1.reshape(-1), s2.reshape(-1)
    inv_bc2 = 1.0 / math.sqrt(1.0 - b2 ** t) if kind == _ADAM else 1.0
    step1 = lr / (1.0 - b1 ** t) if kind == _ADAM else lr
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        if kind == _ADAM:
            m_ = b1 * s1[i] + (1.0 - b1) * gi
            v_ = b2 * s2[i] + (1.0 - b2) * (gi * gi)
            s1[i] = m_
            s2[i] = v_
            p[i] -= step1 * (m_ / (math.sqrt(v_) * inv_bc2 + eps))
        elif momentum != 0:
            v_ = gi if t == 1 else momentum * s1[i] + gi
            s1[i] = v_
            p[i] -= lr * (gi + momentum * v_ if nesterov else v_)
        else:
            p[i] -= lr * gi


@jit
def mlp_step_kernel(X, Ws, bs, dWs, dbs, act, alpha, mean, s1W, s1b, s2W, s2b, kind, lr,
                    momentum, nesterov, wd, b1, b2, adam_eps, t, *head):
    """A whole training step in one call: forward (BLAS products, bias + activation fused),
    the head in place on the last scores, backward (dh * f'(a) fused with the next layer's
    gradient), then the optimizer on every W and b. Returns the loss sums (total, omega)."""
    return _mlp_step(_unowned_pack(HeadPack(*head)), X, Ws, bs, dWs, dbs, act, alpha, mean,
                     s1W, s1b, s2W, s2b, kind, lr, momentum, nesterov, wd, b1, b2, adam_eps, t)


@jit
def mlp_epoch_kernel(X, Ws, bs, dWs, dbs, act, alpha, mean, s1W, s1b, s2W, s2b, kind, lr,
                     momentum, nesterov, wd, b1, b2, adam_eps, t0, batch, sums, *head):
    """mlp_step_kernel on each block of ``batch`` consecutive rows (the head's per-row arrays
    sliced alike) with step counts t0 + 1, t0 + 2, ...: the epoch in one call (a call from
    Python costs more than a small step). sums[s]: block s's loss sums (total, omega)."""
    h = _unowned_pack(HeadPack(*head))
    for s, lo in enumerate(range(0, X.shape[0], batch)):
        hi = min(lo + batch, X.shape[0])
        hb = HeadPack(h.code, h.y[lo:hi] if h.y.size else h.y, h.Z[lo:hi] if h.Z.shape[0] else h.Z,
                      h.sample_weight[lo:hi] if h.sample_weight.size else h.sample_weight,
                      h.weight, h.pos_weight, *h[SCALARS_AT:])
        sums[s, 0], sums[s, 1] = _mlp_step(hb, X[lo:hi], Ws, bs, dWs, dbs, act, alpha, mean,
                                           s1W, s1b, s2W, s2b, kind, lr, momentum, nesterov,
                                           wd, b1, b2, adam_eps, t0 + s + 1)


@jit
def _mlp_step(h, X, Ws, bs, dWs, dbs, act, alpha, mean, s1W, s1b, s2W, s2b, kind, lr, momentum,
              nesterov, wd, b1, b2, adam_eps, t):
    """mlp_step_kernel on a HeadPack."""
    L = len(Ws)
    B = X.shape[0]
    hs = [X]
    for l in range(L - 1):
        W, b = Ws[l], bs[l]
        S = np.empty((B, W.shape[0]), X.dtype)
        gemm(S, hs[l], W, False, True)
        for i in range(B):
            for j in range(S.shape[1]):
                S[i, j] = activate(act, S[i, j] + b[j], alpha)
        hs.append(S)
    W, b = Ws[L - 1], bs[L - 1]
    G = np.empty((B, W.shape[0]), X.dtype)
    gemm(G, hs[L - 1], W, False, True)
    total, osum = head_rows(h, G, mean, 1.0, b, np.empty(0), G, np.empty(0))
    for l in range(L - 1, -1, -1):
        gemm(dWs[l], G, hs[l], True, False)
        db = dbs[l]
        db[:] = 0.0
        for i in range(B):
            for j in range(G.shape[1]):
                db[j] += G[i, j]
        if l > 0:
            A = hs[l]
            dh = np.empty_like(A)
            gemm(dh, G, Ws[l])
            for i in range(B):
                for j in range(A.shape[1]):
                    dh[i, j] *= activation_grad(act, A[i, j], alpha)
            G = dh
    for l in range(L):
        optimizer_update(Ws[l], dWs[l], s1W[l], s2W[l], kind, lr, momentum, nesterov, wd, b1,
                         b2, adam_eps, t)
        optimizer_update(bs[l], dbs[l], s1b[l], s2b[l], kind, lr, momentum, nesterov, wd, b1,
                         b2, adam_eps, t)
    return total, osum
