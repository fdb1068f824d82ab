"""The kernel set every backend module provides, stated once (``Backend``).

A backend is a module (``reference``, ``numba``, ``c_kernels``) whose functions have exactly
these signatures; ``tests/test_interface.py`` checks every registered backend against this
protocol. Inputs are already validated by ``fastbp._checks`` (C-contiguous, one float dtype,
``intp`` labels in range, shapes that agree) and outputs are preallocated by the public layer,
so a kernel only computes. Gradients are written into the given arrays; ``None`` means "not
wanted".
"""
from typing import Callable, NamedTuple, Optional, Protocol, runtime_checkable

import numpy as np


class LayerCache(NamedTuple):
    """What ``linear_act_backward`` needs from ``linear_act_forward`` (cs231n's ``cache``).

    Only the post-activation ``A`` is kept (every f' of docs/math.md is cheap in ``a``), plus, for
    maxout, the index of the winning piece per output.
    """
    X: np.ndarray
    W: np.ndarray
    b: Optional[np.ndarray]
    activation: str
    alpha: Optional[float]
    A: np.ndarray
    argmax: Optional[np.ndarray]


@runtime_checkable
class Backend(Protocol):
    """The functions of a backend module. ``fast_linear_head`` and ``linear_head_bf16`` are
    functions or None."""

    #: linear_head's common tiny call (default options), checked and run in compiled code:
    #: ``(X, W, b, target, head, need_dX, out) -> (loss, dW, db, dX)``, or None when the call
    #: is not that one (nothing written; the checked path runs). None: no such entry.
    fast_linear_head: Optional[Callable]
    #: linear_head of a bfloat16 call reading X as bfloat16 in its kernel (fastbp/_bf16.py):
    #: ``(Xh, W, b, target, head, options, reduction, chunk_rows, dW, db, dX) -> loss``, or
    #: None where its plan has no such kernel (the caller converts X). None: no such entry.
    linear_head_bf16: Optional[Callable]

    def head(self, name, S, target, out, reduction, options):
        """Head ``name`` on scores S (B, n): writes dS into ``out`` (which may be S) and
        returns the loss (a float; the (B,) row losses for "none")."""

    def linear_head(self, X, W, b, target, head, options, reduction, chunk_rows, dW, db, dX,
                    threads=None, filter_eps=0.0):
        """S = X W^T + b, the head, and dW, db, dX, never holding more than ``chunk_rows``
        (or the score budget's) rows of scores; returns the "mean" or "sum" loss. ``threads``:
        the most threads the call may use (None: all of set_num_threads'); ``filter_eps`` > 0:
        the backward skips the classes whose gradient is below it (docs/math.md)."""

    def linear_loss(self, X, W, b, target, head, options, reduction, chunk_rows):
        """linear_head's loss alone: S = X W^T + b and the head's losses per block of rows
        (within the score budget), no gradient products; returns the "mean" or "sum" loss, or
        the (B,) weighted row losses for "none"."""

    def linear_act_forward(self, X, W, b, activation, alpha):
        """A = f(X W^T + b): returns (A, maxout's winners or None)."""

    def linear_act_backward(self, dA, cache, dX, dW, db):
        """dX (None: not wanted), dW, db (None: no bias) of the layer ``cache`` describes."""

    def mlp_forward(self, X, params, activation, alpha):
        """The network's output scores (the last layer linear)."""

    def mlp_loss_grad(self, X, params, target, activation, alpha, head, options, reduction,
                      grads):
        """The loss; every layer's (dW, db) written into ``grads``."""

    def mlp_step(self, X, params, target, activation, alpha, head, options, reduction, grads,
                 optimizer):
        """mlp_loss_grad, then ``optimizer``'s update in place: returns the loss."""

    def mlp_epoch(self, X, params, target, activation, alpha, head, options, reduction, grads,
                  optimizer, batch_size):
        """mlp_step on each block of ``batch_size`` consecutive rows: the list of losses."""


#: The functions of the protocol, by name (what tests/test_interface.py checks).
KERNELS = tuple(name for name in vars(Backend) if not name.startswith("_")
                and callable(vars(Backend)[name]))
