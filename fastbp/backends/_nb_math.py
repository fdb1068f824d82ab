"""Per-row and per-element math of the Numba backend (math.md), as small @njit functions that the
drivers in ``numba_kernels.py`` inline into their loops.

Every head is one ``head_row`` call per row: scores ``s`` in, the class-weighted loss returned,
``f`` times the class-weighted gradient written to ``g`` -- which may be ``s`` itself (each
``s[j]`` is read before ``g[j]`` is written). ``f`` carries the sample weight and the "mean"
scale, so a row is written once. The formulas are the reference backend's, term for term, so
float64 results agree to rounding; sums run in float64.
"""
import math

import numba as nb

from .. import config

jit = nb.njit(cache=True, fastmath=set(config.FASTMATH), error_model="numpy", nogil=True)

# Head codes (softmax_nll has two: label targets and probability rows).
SOFTMAX, SOFTMAX_PROBS, MHINGE, BHINGE, BCE, SIGMOID_L2, L2, L1, NLL = range(9)
HEAD_CODES = {"softmax_nll": SOFTMAX, "multiclass_hinge": MHINGE, "binary_hinge": BHINGE,
              "sigmoid_bce": BCE, "sigmoid_l2": SIGMOID_L2, "l2": L2, "l1": L1, "nll": NLL}
# Activation codes, in fastbp.ACTIVATIONS order (maxout is handled by its own kernels).
SIGMOID, TANH, RELU, LEAKY, ELU, MAXOUT, IDENTITY = range(7)


# ---------------------------------------------------------------------------- scalars
@jit
def relu(x):
    """max(x, 0) that keeps NaN (as np.maximum)."""
    return x if (x > 0 or x != x) else 0.0


@jit
def step(x):
    """1[x > 0], NaN for NaN and Inf (as the reference's (x > 0) + 0 * x)."""
    return (1.0 if x > 0 else 0.0) + 0.0 * x


@jit
def sign(x):
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return x            # 0 stays 0, NaN stays NaN


@jit
def sigmoid(x):
    """sigma(x) without overflow."""
    e = math.exp(-abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


@jit
def sigmoid_prime(x):
    """sigma(x) sigma(-x), with no cancellation in 1 - sigma(x)."""
    e = math.exp(-abs(x))
    return (1.0 / (1.0 + e)) * (e / (1.0 + e))


@jit
def softplus(x):
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|)."""
    return relu(x) + math.log1p(math.exp(-abs(x)))


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


# ---------------------------------------------------------------------------- head rows
@jit
def softmax_row(s, yi, z, w, eps, f, g):
    """C_j = w_j ((1 - eps) t_j + eps/n), t = e_y (labels) or z (probability rows);
    loss = sum_j C_j (lse - s_j), g_j = (sum C) p_j - C_j, in the reference's float32-accurate
    form: m = argmax s, r = sum_{j != m} exp(s_j - s_m), lse - s_j = (s_m - s_j) + log1p(r),
    p_j = e_j / (1 + r), g_m = (sum_{j != m} C_j - C_m r) / (1 + r)."""
    n = s.size
    m = 0
    M = s[0]
    for j in range(1, n):          # first maximum; the first NaN wins and stays
        if s[j] > M or (s[j] != s[j] and M == M):
            m, M = j, s[j]
    lin = 0.0          # sum_j C_j (M - s_j)
    r = 0.0
    rest = 0.0         # sum_{j != m} C_j
    c_m = 0.0
    for j in range(n):
        t = z[j] if z.size else (1.0 if j == yi else 0.0)
        c = (w[j] if w.size else 1.0) * ((1.0 - eps) * t + eps / n)
        if c != 0:
            lin += c * (M - s[j])
        if j == m:
            c_m = c
            g[j] = 1.0
        else:
            rest += c
            e = math.exp(s[j] - M)
            r += e
            g[j] = e
    l1p = math.log1p(r)
    total = rest + c_m
    for j in range(n):
        t = z[j] if z.size else (1.0 if j == yi else 0.0)
        c = (w[j] if w.size else 1.0) * ((1.0 - eps) * t + eps / n)
        if j == m:
            g[j] = f * ((rest - c_m * r) / (1.0 + r))
        else:
            g[j] = f * (total * (g[j] / (1.0 + r)) - c)
    return lin + total * l1p


@jit
def mhinge_row(s, yi, w, margin, p, f, g):
    """sum_{j != y} max(0, s_j - s_y + m)^p (p = 1, 2), times w_y; g_y = -sum of the others."""
    n = s.size
    sy = s[yi]
    wy = w[yi] if w.size else 1.0
    loss = 0.0
    gsum = 0.0
    for j in range(n):
        if j == yi:
            continue
        mj = s[j] - sy + margin
        h = relu(mj)
        if p == 1:
            loss += h
            gj = step(mj)
        else:
            loss += h * h
            gj = 2.0 * h
        gsum += gj
        g[j] = f * wy * gj
    g[yi] = -f * wy * gsum
    return wy * loss


@jit
def head_row(head, s, yi, z, w, pw, ignore, eps, margin, p, f, g):
    """One row of any head: returns the class-weighted loss, writes f * gradient into g."""
    n = s.size
    if head == SOFTMAX or head == SOFTMAX_PROBS:
        if head == SOFTMAX and yi == ignore:
            for j in range(n):
                g[j] = 0.0
            return 0.0
        return softmax_row(s, yi, z, w, eps, f, g)
    if head == MHINGE:
        return mhinge_row(s, yi, w, margin, p, f, g)
    if head == BHINGE:
        m = margin - yi * s[0]
        g[0] = -f * yi * step(m)
        return relu(m)
    if head == NLL:
        py = s[yi]
        for j in range(n):
            g[j] = 0.0
        g[yi] = -f / py
        return -math.log(py)
    loss = 0.0
    for j in range(n):
        x = s[j]
        zj = z[j]
        if head == BCE:     # (1-z) s + lw softplus(-s), lw = 1 + (pw-1) z; g = lw sigma(s) - pw z
            lw = 1.0 + (pw[j] - 1.0) * zj if pw.size else 1.0
            pz = pw[j] * zj if pw.size else zj
            loss += (1.0 - zj) * x + lw * softplus(-x)
            g[j] = f * (lw * sigmoid(x) - pz)
        elif head == SIGMOID_L2:
            d = zj - sigmoid(x)
            loss += d * d
            g[j] = f * (-2.0 * d * sigmoid_prime(x))
        elif head == L2:
            loss += (zj - x) * (zj - x)
            g[j] = f * (2.0 * (x - zj))
        else:               # L1
            loss += abs(zj - x)
            g[j] = f * sign(x - zj)
    return loss


@jit
def row_weight(i, y, sw, w, ignore):
    """omega_i: sample weight x class weight of the label (0 for ignore_index)."""
    om = sw[i] if sw.size else 1.0
    if y.size:
        if y[i] == ignore:
            return 0.0
        if w.size:
            om *= w[y[i]]
    return om
