"""Network-level kernels written once for every backend, from that backend's layer kernels
(``linear_act_forward``, ``linear_head``, ``linear_act_backward``)."""
import numpy as np

from .interface import LayerCache


def mlp_forward(kernels, X, params, activation, alpha):
    """Hidden layers by ``kernels.linear_act_forward``; the last one linear (identity)."""
    h = X
    for W, b in params[:-1]:
        h, _ = kernels.linear_act_forward(h, W, b, activation, alpha)
    W, b = params[-1]
    return kernels.linear_act_forward(h, W, b, "identity", None)[0]


def mlp_loss_grad(kernels, X, params, target, activation, alpha, head, options, reduction,
                  grads, **last_layer):
    """Forward keeping each hidden layer's cache (its output, and maxout's winners), the last
    layer fused with the head (``kernels.linear_head``, given ``last_layer`` keywords), then
    ``linear_act_backward`` down to layer 1 (whose dX is not needed)."""
    caches, h = [], X
    for W, b in params[:-1]:
        A, argmax = kernels.linear_act_forward(h, W, b, activation, alpha)
        caches.append(LayerCache(h, W, b, activation, alpha, A, argmax))
        h = A
    (W, b), (dW, db) = params[-1], grads[-1]
    dh = np.empty_like(h) if caches else None
    loss = kernels.linear_head(h, W, b, target, head, options, reduction, None, dW, db, dh,
                               **last_layer)
    for l in range(len(caches) - 1, -1, -1):
        dX = np.empty_like(caches[l].X) if l else None
        kernels.linear_act_backward(dh, caches[l], dX, *grads[l])
        dh = dX
    return loss


def mlp_step(kernels, X, params, target, activation, alpha, head, options, reduction, grads,
             optimizer):
    """One training step: ``kernels.mlp_loss_grad`` into grads, then ``optimizer.update``."""
    loss = kernels.mlp_loss_grad(X, params, target, activation, alpha, head, options,
                                 reduction, grads)
    optimizer.update(params, grads)
    return loss


def mlp_epoch(kernels, X, params, target, activation, alpha, head, options, reduction, grads,
              optimizer, batch_size):
    """``kernels.mlp_step`` on each block of ``batch_size`` consecutive rows (sample_weight,
    the one per-row option, sliced alike); the list of their losses."""
    sw = options.get("sample_weight")
    losses = []
    for lo in range(0, len(X), batch_size):
        rows = slice(lo, lo + batch_size)
        opts = options if sw is None else {**options, "sample_weight": sw[rows]}
        losses.append(kernels.mlp_step(X[rows], params, target[rows], activation, alpha, head,
                                       opts, reduction, grads, optimizer))
    return losses
