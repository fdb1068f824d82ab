"""The naive path: explicit dense Jacobians, batched over the whole batch, on purpose (docs/api.md
s. 4).

This is the lecture notes' chain rule taken literally: every layer's local Jacobian is built as a
dense matrix over the flattened batch while going forward, and the backward pass multiplies the
upstream gradient by their transposes. Its numbers equal the fused path's; its time and memory
are what ``fastbp compare`` measures. Every Jacobian is planned (``_plan``) before anything is
allocated, so a too-large request raises ``JacobianTooLarge`` at once, and ``jacobian_bytes``
predicts the bytes exactly: all planned Jacobians are alive together, as a tape would keep them.

Loss values come from the reference heads; the gradients flow through the Jacobians. Softmax and
sigmoid heads go through their probability Jacobian, as the notes do (dL/dp, then dp/ds); the
other heads start from their own dL/ds.
"""
import os

import numpy as np

from . import _checks
from .errors import JacobianTooLarge
from .layers import Grads


def _reference():
    """The NumPy backend, imported at the first naive call (``import fastbp`` loads no backend)."""
    from .backends import reference
    return reference

# Heads whose gradient the notes route through probabilities p = softmax(s) or sigma(s).
_PROB_HEADS = {"softmax_nll": "softmax", "sigmoid_bce": "sigmoid", "sigmoid_l2": "sigmoid"}
ELEMENTWISE = tuple(a for a in _checks.ACTIVATIONS if a != "maxout")


def default_max_bytes():
    """The smaller of 2 GiB and half the memory available now."""
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(2 << 30, available // 2)


# ---------------------------------------------------------------------------- the plan
def _plan(op, B, d, n, h=None, head="softmax_nll", bias=True, softcap=False):
    """[(name, rows, cols)] of every Jacobian ``op`` builds, in the order it builds them."""
    if op == "elementwise":
        return [("df/ds", B * n, B * n)]
    if op not in ("linear_head", "mlp"):
        raise ValueError(f"op must be 'elementwise', 'linear_head' or 'mlp', got {op!r}")
    if op == "mlp" and h is None:
        raise ValueError("op 'mlp' needs h, the hidden layer width(s)")
    hidden = () if op == "linear_head" else ((h,) if np.isscalar(h) else tuple(h))
    widths = (d,) + hidden + (n,)
    plan = []
    for l in range(1, len(widths)):
        n_in, n_out = widths[l - 1], widths[l]
        plan.append((f"ds{l}/dW{l}", B * n_out, n_out * n_in))
        if bias:
            plan.append((f"ds{l}/db{l}", B * n_out, n_out))
        if l > 1 or op == "linear_head":      # dX is returned by linear_head only
            plan.append((f"ds{l}/dh{l - 1}", B * n_out, B * n_in))
        if l < len(widths) - 1:
            plan.append((f"dh{l}/ds{l}", B * n_out, B * n_out))
    if softcap:
        plan.append(("ds'/ds", B * n, B * n))
    if head in _PROB_HEADS:
        plan.append(("dp/ds", B * n, B * n))
    return plan


def jacobian_bytes(op, *, B, d=None, n, h=None, dtype="float64", head="softmax_nll", bias=True,
                   softcap=False):
    """Bytes of the dense Jacobians the naive path builds for ``op``:

    - ``"elementwise"``: an elementwise layer on (B, n): one (B*n) x (B*n) matrix;
    - ``"linear_head"``: S = X W^T + b on X (B, d), W (n, d), then ``head``;
    - ``"mlp"``: the network d -> h... -> n (``h`` an int or a sequence of widths), then ``head``.
    ``softcap``: softmax_nll's soft-capping is on (one more (B*n) x (B*n) matrix, ds'/ds).
    """
    itemsize = np.dtype(dtype).itemsize
    return itemsize * sum(r * c for _, r, c in _plan(op, B, d, n, h, head, bias, softcap))


def _guard(what, needed, max_bytes):
    limit = default_max_bytes() if max_bytes is None else max_bytes
    if needed > limit:
        raise JacobianTooLarge(what, needed, limit)


# ---------------------------------------------------------------------------- Jacobians
def _diag(v):
    J = np.zeros((v.size, v.size), v.dtype)
    J.flat[::v.size + 1] = v.ravel()
    return J


def _linear_jacobians(h, W, bias, need_input):
    """d vec(s)/d vec(W), d vec(s)/d b and d vec(s)/d vec(h) of s = h W^T + b, densely."""
    (B, n_in), n = h.shape, W.shape[0]
    out, rows, units = [], np.arange(B), np.arange(n)
    J = np.zeros((B * n, n * n_in), h.dtype)
    J.reshape(B, n, n, n_in)[:, units, units, :] = h[:, None, :]   # ds_ia/dW_ak = h_ik
    out.append(J)
    if bias:
        J = np.zeros((B * n, n), h.dtype)
        J.reshape(B, n, n)[:, units, units] = 1                     # ds_ia/db_a = 1
        out.append(J)
    if need_input:
        J = np.zeros((B * n, B * n_in), h.dtype)
        J.reshape(B, n, B, n_in)[rows, :, rows, :] = W              # ds_ia/dh_ik = W_ak
        out.append(J)
    return out


def _head_backward(head, S, target, opts, reduction, tape):
    """Loss and dL/d vec(S); probability heads append their dense dp/ds to ``tape``."""
    wl, wG, omega = _reference().ROWS[head](S, target, **opts)
    total = float(np.sum(wl, dtype=np.float64))
    if reduction == "none":                 # the row losses, the gradient of their sum
        loss, scale = wl.astype(S.dtype), 1.0
    elif reduction == "sum":
        loss, scale = total, 1.0
    else:
        loss, scale = _reference().mean_scale(total, float(np.sum(omega, dtype=np.float64)))
    kind = _PROB_HEADS.get(head)
    if kind is None:                                    # the head's own dL/ds
        return loss, (wG * scale).ravel()
    return loss, _prob_backward(head, kind, S, target, opts, omega, scale, tape)


def _prob_backward(head, kind, S, target, opts, omega, scale, tape):
    """dL/d vec(S) of a probability head, its dense dp/ds (and ds'/ds) on ``tape``."""
    sample_weight = opts.get("sample_weight")
    if kind == "softmax":
        return _softmax_backward(S, target, opts, omega, scale, tape)
    P = _reference().sigmoid(S)
    w = np.ones(len(S), S.dtype) if sample_weight is None else sample_weight
    if head == "sigmoid_l2":
        dP = -2 * (target - P)
    else:
        pw = 1 if opts["pos_weight"] is None else opts["pos_weight"]
        dP = -pw * target / P + (1 - target) / (1 - P)
    dP = w[:, None] * dP
    J = _diag(_reference().sigmoid_prime(S))
    tape.append(J)
    return J.T @ (dP.ravel() * scale)


def _softmax_backward(S, target, opts, omega, scale, tape):
    """dL/d vec(S) of softmax_nll through p = softmax(s'), s' = c tanh(s / c) with softcap c
    (its diagonal ds'/ds on the tape too), the z_loss term's 2 z lse p added at s'."""
    cap = opts["softcap"]
    Sc = S if cap is None else cap * np.tanh(S / cap)
    C, _ = _reference().softmax_targets(S.shape[1], target, opts["sample_weight"], opts["weight"],
                                     opts["ignore_index"], opts["label_smoothing"], S.dtype)
    logP = _reference().log_softmax(Sc)
    P = np.exp(logP)
    dP = np.where(C != 0, -C / np.where(C != 0, P, 1), 0)              # d(-sum C log p)/dp
    J = np.zeros((S.size, S.size), S.dtype)                             # dp_a/ds'_b per row:
    blocks = np.einsum("ia,ab->iab", P, np.eye(S.shape[1])) - P[:, :, None] * P[:, None, :]
    rows = np.arange(len(S))
    J.reshape(len(S), S.shape[1], len(S), S.shape[1])[rows, :, rows, :] = blocks
    tape.append(J)
    g = J.T @ (dP.ravel() * scale)
    if opts["z_loss"]:                  # z lse^2 per row, weighted as the row: 2 z lse p
        lse = (Sc - logP)[:, :1]
        g += (scale * 2 * opts["z_loss"] * omega[:, None] * lse * P).ravel()
    if cap is not None:
        J = _diag(1 - np.tanh(S / cap) ** 2)                             # ds'/ds
        tape.append(J)
        g = J.T @ g
    return g


# ---------------------------------------------------------------------------- public
def linear_head(X, W, b, target, head="softmax_nll", *, max_bytes=None, **head_options):
    """``fastbp.linear_head``'s numbers, by dense Jacobian products. Returns ``Grads``."""
    X, W, b, target, head, opts, reduction = _checks.check_linear_head(
        X, W, b, target, head, head_options, True, None, None)[:7]
    (B, d), n = X.shape, W.shape[0]
    _guard(f"naive linear_head ({head}, B={B}, d={d}, n={n})",
           jacobian_bytes("linear_head", B=B, d=d, n=n, dtype=X.dtype, head=head,
                          bias=b is not None, softcap=opts.get("softcap") is not None),
           max_bytes)
    tape = _linear_jacobians(X, W, b is not None, True)
    S = X @ W.T + (0 if b is None else b)
    loss, g = _head_backward(head, S, target, opts, reduction, tape)
    J_W, J_X = tape[0], tape[2 if b is not None else 1]
    db = None if b is None else tape[1].T @ g
    return Grads(loss, (J_W.T @ g).reshape(W.shape), db, (J_X.T @ g).reshape(X.shape))


def mlp_loss_grad(X, params, target, *, activation="relu", alpha=None, head="softmax_nll",
                  max_bytes=None, **head_options):
    """``fastbp.mlp_loss_grad``'s numbers, by dense Jacobian products (maxout not supported)."""
    (X, params, target, activation, alpha, head, opts, reduction,
     _) = _checks.check_mlp_loss_grad(X, params, target, activation, alpha, head, head_options,
                                      None)
    if activation == "maxout" and len(params) > 1:
        raise ValueError("naive.mlp_loss_grad does not support activation 'maxout'")
    bias = all(b is not None for _, b in params)
    if not bias and any(b is not None for _, b in params):
        raise ValueError("naive.mlp_loss_grad needs a bias in every layer or in none")
    widths = [W.shape[0] for W, _ in params]
    _guard(f"naive mlp_loss_grad ({activation}, {head}, B={len(X)}, sizes={widths})",
           jacobian_bytes("mlp", B=len(X), d=X.shape[1], n=widths[-1], h=widths[:-1],
                          dtype=X.dtype, head=head, bias=bias,
                          softcap=opts.get("softcap") is not None), max_bytes)
    # forward: record every local Jacobian
    layers, h = [], X
    for l, (W, b) in enumerate(params):
        jac = _linear_jacobians(h, W, bias, l > 0)
        s = h @ W.T + (0 if b is None else b)
        if l < len(params) - 1:
            h = _reference().activate(activation, s, alpha)
            jac.append(_diag(_reference().activation_grad(activation, h, alpha)))
        layers.append(jac)
    tape = [J for jac in layers for J in jac]
    loss, g = _head_backward(head, s, target, opts, reduction, tape)
    # backward: g = dL/d vec(s_l), one transpose-product per Jacobian
    grads = []
    for l in range(len(params) - 1, -1, -1):
        jac, (W, b) = layers[l], params[l]
        if l < len(params) - 1:
            g = jac.pop().T @ g                              # dh_l -> ds_l
        db = jac[1].T @ g if bias else None
        grads.append(((jac[0].T @ g).reshape(W.shape), db))
        if l > 0:
            g = jac[-1].T @ g                                # ds_l -> dh_{l-1}
    return loss, grads[::-1]


def elementwise_backward(name, dA, S, *, alpha=None, max_bytes=None):
    """dS = J^T dA with J the dense (B*n) x (B*n) Jacobian of a = f(s) on the batch S (B, n):
    the notes' 409,600 x 409,600 matrix for 100 vectors of 4096 features."""
    name, alpha = _checks.activation_alpha(name, alpha)
    if name == "maxout":
        raise ValueError("name must be an elementwise activation (not 'maxout'), got 'maxout'")
    S = _checks.float_array("S", S, ndim=2, what="(B, n)")
    dA = _checks.float_array("dA", dA, S.dtype)
    _checks.expect_shape("dA", dA, S.shape, " (the shape of S)")
    B, n = S.shape
    _guard(f"naive elementwise_backward ({name}, B={B}, n={n})",
           jacobian_bytes("elementwise", B=B, n=n, dtype=S.dtype), max_bytes)
    J = _diag(_reference().activation_grad(name, _reference().activate(name, S, alpha), alpha))
    return (J.T @ dA.ravel()).reshape(S.shape)
