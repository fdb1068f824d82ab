"""Public head functions: fused loss + gradient on scores (api.md section 1). check -> dispatch."""
import numpy as np

from . import _checks
from ._dispatch import backend_module


def _run(name, S, target, reduction, out, backend, **options):
    S, target, opts, reduction, buf, shape = _checks.check_head(name, S, target, options,
                                                                reduction, out)
    kernel = getattr(backend_module(backend), name)
    dS = buf if buf is not None else np.empty(S.shape, S.dtype)
    loss = kernel(S, target, dS, reduction, **opts)
    return loss, (out if out is not None else dS.reshape(shape))


def softmax_nll(S, target, *, weight=None, sample_weight=None, ignore_index=-100,
                label_smoothing=0.0, reduction="mean", out=None, backend=None):
    """Softmax + negative log-likelihood on logits ``S`` (B, n): ``(loss, dS)``.

    ``target`` is labels (B,) or class probabilities (B, n). Same loss and gradient as
    ``torch.nn.functional.cross_entropy`` for every ``weight`` / ``ignore_index`` /
    ``label_smoothing`` / ``reduction``; ``sample_weight`` (B,) multiplies each row's loss and
    its weight in the "mean" denominator.
    """
    return _run("softmax_nll", S, target, reduction, out, backend, weight=weight,
                sample_weight=sample_weight, ignore_index=ignore_index,
                label_smoothing=label_smoothing)


def multiclass_hinge(S, y, *, margin=1.0, p=1, weight=None, sample_weight=None,
                     reduction="mean", out=None, backend=None):
    """Multiclass SVM loss ``sum_{j != y} max(0, s_j - s_y + margin)^p`` (p = 1 or 2)."""
    return _run("multiclass_hinge", S, y, reduction, out, backend, margin=margin, p=p,
                weight=weight, sample_weight=sample_weight)


def binary_hinge(s, y, *, margin=1.0, sample_weight=None, reduction="mean", out=None,
                 backend=None):
    """Binary SVM loss ``max(0, margin - y s)``; ``s`` (B,) or (B, 1), ``y`` in {-1, +1}."""
    return _run("binary_hinge", s, y, reduction, out, backend, margin=margin,
                sample_weight=sample_weight)


def sigmoid_bce(S, Z, *, pos_weight=None, sample_weight=None, reduction="mean", out=None,
                backend=None):
    """Sigmoid + binary cross-entropy per output, summed over outputs (the notes' cross-entropy);
    ``pos_weight`` (n,) as in ``torch.nn.functional.binary_cross_entropy_with_logits``."""
    return _run("sigmoid_bce", S, Z, reduction, out, backend, pos_weight=pos_weight,
                sample_weight=sample_weight)


def sigmoid_l2(S, Z, *, sample_weight=None, reduction="mean", out=None, backend=None):
    """Sigmoid + squared error ``sum_j (z_j - sigma(s_j))^2`` (the notes' 1-layer L2 net)."""
    return _run("sigmoid_l2", S, Z, reduction, out, backend, sample_weight=sample_weight)


def l2(S, Z, *, sample_weight=None, reduction="mean", out=None, backend=None):
    """Squared error ``sum_j (z_j - s_j)^2`` per row."""
    return _run("l2", S, Z, reduction, out, backend, sample_weight=sample_weight)


def l1(S, Z, *, sample_weight=None, reduction="mean", out=None, backend=None):
    """Absolute error ``sum_j |z_j - s_j|`` per row; gradient ``sign(s - z)`` (0 where equal)."""
    return _run("l1", S, Z, reduction, out, backend, sample_weight=sample_weight)


def nll(P, y, *, sample_weight=None, reduction="mean", out=None, backend=None):
    """Log-likelihood loss ``-log p_y`` on probabilities ``P`` (the notes'); gradient ``-1/p_y``.
    P is not checked to be a distribution; ``p_y = 0`` gives an infinite loss, as ``-log 0``."""
    return _run("nll", P, y, reduction, out, backend, sample_weight=sample_weight)
