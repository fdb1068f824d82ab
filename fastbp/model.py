"""MLP, SGD and Adam (docs/api.md section 3): training on the fused kernels.

One ``MLP.step`` is forward + fused backward (``mlp_loss_grad`` into gradient buffers allocated
once) + an in-place optimizer update (state buffers allocated on the first step): no
parameter-sized array is allocated per step. Same seed, same thread count: same run, bit for bit.
"""
import numpy as np
from scipy.linalg import blas

from . import _bf16, _checks
from ._dispatch import backend_module
from ._registry import ACTIVATION_SPECS, SPECS
from .layers import _mlp_loss_grad, mlp_forward, mlp_loss_grad

# Initialisation (the registry's ``init``): He for the relu-like activations (their gain is
# sqrt(2)), Xavier/Glorot for the saturating and linear ones.
_HE = {a for a, spec in ACTIVATION_SPECS.items() if spec.init == "he"}


def _axpy(x, y, a):
    """y += a * x in place, with no temporary (BLAS ?axpy on the flat views)."""
    fn = blas.saxpy if y.dtype == np.float32 else blas.daxpy
    fn(x.reshape(-1), y.reshape(-1), a=a)


class MLP:
    """A fully connected network on fastbp's kernels.

    ``sizes`` = [inputs, hidden..., outputs]. Hidden layers use ``activation`` (maxout layers
    hold ``alpha`` pieces per unit); the last layer is linear and feeds ``head``.
    """

    def __init__(self, sizes, *, activation="relu", alpha=None, head="softmax_nll",
                 dtype="float32", backend=None, seed=0):
        sizes = [_checks.integer(f"sizes[{i}]", s, lo=1) for i, s in enumerate(sizes)]
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least the inputs and the outputs, got {sizes}")
        self.activation, self.alpha = _checks.activation_alpha(activation, alpha)
        self.head = _checks.choice("head", head, _checks.HEADS)
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64 (the parameters' dtype; bfloat16 "
                            f"batches train float32 parameters), got {dtype!r}")
        self.dtype, self.backend, self.sizes = np.dtype(dtype), backend, sizes
        rng = np.random.default_rng(seed)
        k = self.alpha if self.activation == "maxout" else 1
        self.params = []
        for l in range(1, len(sizes)):
            fan_in, fan_out = sizes[l - 1], sizes[l]
            rows = fan_out * (k if l < len(sizes) - 1 else 1)
            std = (np.sqrt(2.0 / fan_in) if self.activation in _HE
                   else np.sqrt(2.0 / (fan_in + fan_out)))
            W = (std * rng.standard_normal((rows, fan_in))).astype(self.dtype)
            self.params.append((W, np.zeros(rows, self.dtype)))
        self.grads = [(np.empty_like(W), np.empty_like(b)) for W, b in self.params]
        self._shapes = [(W.shape, b.shape) for W, b in self.params]

    def forward(self, X):
        """Scores (B, outputs)."""
        return mlp_forward(X, self.params, activation=self.activation, alpha=self.alpha,
                           backend=self.backend)

    def predict(self, X):
        """Class labels (argmax) for classification heads, -1/+1 for binary_hinge, else the
        scores themselves (l1, l2 regression)."""
        S = self.forward(X)
        predicts = SPECS[self.head].predicts
        if predicts == "labels":
            return S.argmax(axis=1)
        if predicts == "sign":
            return np.where(S[:, 0] >= 0, 1, -1)
        return S

    def loss_grad(self, X, target, **head_options):
        """Loss and gradients (the model's own buffers, overwritten by the next call). A
        bfloat16 batch is a bfloat16 call (docs/api.md, "bfloat16"): the products on the
        bfloat16 values of X and the parameters, the gradients in the parameters' dtype."""
        if _bf16.involved(X, target, *head_options.values()):
            return mlp_loss_grad(X, self.params, target, activation=self.activation,
                                 alpha=self.alpha, head=self.head, out=self.grads,
                                 backend=self.backend, **head_options)
        return _mlp_loss_grad(X, self.params, target, self.activation, self.alpha, self.head,
                              head_options, self.grads, self.backend)

    def step(self, X, target, *, optimizer, **head_options):
        """Forward, fused backward and an in-place update by ``optimizer``; returns the loss.

        The parameters are the model's own (their shapes were fixed at construction and are
        re-checked cheaply); X and target are validated as in ``mlp_loss_grad``. A backend may
        run the whole step in one compiled call (the Numba and C backends do, for SGD and Adam;
        a bfloat16 batch takes ``loss_grad`` then ``optimizer.update`` on the parameters).
        """
        if _bf16.involved(X, target, *head_options.values()):
            loss, grads = self.loss_grad(X, target, **head_options)
            optimizer.update(self.params, grads)
            return loss
        X, target, opts, reduction = _checks.check_batch(
            X, target, self.head, self.params, self._shapes, self.dtype, head_options)
        return backend_module(self.backend).mlp_step(
            X, self.params, target, self.activation, self.alpha, self.head, opts, reduction,
            self.grads, optimizer)

    def epoch(self, X, target, *, optimizer, batch_size, **head_options):
        """``step`` on each batch of ``batch_size`` consecutive rows, in order (the caller
        shuffles); returns the row-weighted mean of the batch losses. The same updates as those
        ``step`` calls, bit for bit, but X, target and the options are validated once for the
        whole epoch, and a backend may run all its steps in one call (the C backend does)."""
        batch_size = _checks.integer("batch_size", batch_size, lo=1)
        if _bf16.involved(X, target, *head_options.values()):     # (step by step)
            total = 0.0
            for lo in range(0, len(X), batch_size):
                rows = slice(lo, lo + batch_size)
                opts = {k: v[rows] if v is not None and SPECS[self.head].options.get(k)
                        and SPECS[self.head].options[k].kind == "row" else v
                        for k, v in head_options.items()}
                total += len(X[rows]) * self.step(X[rows], target[rows], optimizer=optimizer,
                                                  **opts)
            return total / len(X) if len(X) else float("nan")
        X, target, opts, reduction = _checks.check_batch(
            X, target, self.head, self.params, self._shapes, self.dtype, head_options)
        losses = backend_module(self.backend).mlp_epoch(
            X, self.params, target, self.activation, self.alpha, self.head, opts, reduction,
            self.grads, optimizer, batch_size)
        total = 0.0
        for lo, loss in zip(range(0, len(X), batch_size), losses):
            total += len(X[lo:lo + batch_size]) * loss
        return total / len(X) if len(X) else float("nan")


class _Optimizer:
    """Shared bookkeeping: ``t`` counts updates; ``state`` holds per-parameter buffers (one
    entry per array of ``params``, flattened in order), allocated on the first update."""
    kind = None

    def __init__(self, lr, weight_decay):
        self.lr = _checks.real("lr", lr, 0.0, np.inf)      # 0: a warm-up's first steps
        self.weight_decay = _checks.real("weight_decay", weight_decay, 0.0, np.inf)
        self.state = None
        self.t = 0
        self.backend_cache = None     # a backend's per-optimizer data (the C backend's pointers)

    def begin(self, arrays, steps=1):
        """Count ``steps`` more updates of ``arrays`` (allocating the state the first time); a
        backend that runs them itself uses step counts ``t - steps + 1 .. t``."""
        if self.state is None:
            self.state = [self._new_state(p) for p in arrays]
        self.t += steps

    def update(self, params, grads):
        """Update every array of ``params`` in place from ``grads`` (same structure)."""
        flat = [(p, g) for pair, gpair in zip(params, grads)
                for p, g in zip(pair, gpair) if p is not None]
        self.begin([p for p, _ in flat])
        for (p, g), state in zip(flat, self.state):
            if self.weight_decay:
                _axpy(p, g, self.weight_decay)       # L2: g += wd * p (g is a scratch buffer)
            self._update(p, g, state)


class SGD(_Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD:
    v = momentum v + g (v = g on the first step); p -= lr (g + momentum v if nesterov else v)."""
    kind = "sgd"

    def __init__(self, lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(lr, weight_decay)
        self.momentum = _checks.real("momentum", momentum, 0.0, 1.0)
        self.nesterov = _checks.flag("nesterov", nesterov)
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov=True needs momentum > 0")

    def _new_state(self, p):
        return np.zeros_like(p) if self.momentum else None

    def _update(self, p, g, v):
        if not self.momentum:
            _axpy(g, p, -self.lr)
            return
        if self.t == 1:
            v[...] = g
        else:
            v *= self.momentum
            v += g
        if self.nesterov:
            _axpy(v, g, self.momentum)
            _axpy(g, p, -self.lr)
        else:
            _axpy(v, p, -self.lr)


class Adam(_Optimizer):
    """Adam, as torch.optim.Adam (L2 weight decay added to the gradient):
    m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
    p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps)."""
    kind = "adam"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair, got {betas!r}")
        self.betas = tuple(_checks.real(f"betas[{i}]", b, 0.0, 1.0) for i, b in enumerate(betas))
        if max(self.betas) >= 1:
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.eps = _checks.real("eps", eps, 0.0, np.inf)

    def _new_state(self, p):
        return np.zeros_like(p), np.zeros_like(p), np.empty_like(p)   # m, v, scratch

    def _update(self, p, g, state):
        m, v, tmp = state
        b1, b2 = self.betas
        m *= b1
        _axpy(g, m, 1 - b1)
        v *= b2
        np.multiply(g, g, out=tmp)
        _axpy(tmp, v, 1 - b2)
        np.sqrt(v, out=tmp)
        tmp *= 1 / np.sqrt(1 - b2 ** self.t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        _axpy(tmp, p, -self.lr / (1 - b1 ** self.t))
