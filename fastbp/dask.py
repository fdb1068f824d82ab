"""fastbp over a Dask array split into row chunks (docs/api.md section 9).

    import fastbp.dask as fbd
    g = fbd.linear_head(X, W, b, y)      # X: a dask.array of row chunks; W, b: NumPy
    clf = fbd.LinearClassifier(alpha=1e-4).fit(X, y)

Each chunk runs the fused kernel where it lives (``fastbp.linear_head`` / ``mlp_loss_grad``
with ``reduction="sum"``) and returns partial sums: the loss, the gradients and the "mean"
denominator (the rows' weights, which class weights, sample weights and ``ignore_index`` make
data-dependent). A pairwise tree in chunk order adds them, so the result does not depend on
which worker ran what, and equals the one-machine call to rounding. It runs on the current
``distributed.Client`` (a LocalCluster or a real cluster) or on Dask's local scheduler. Needs
the optional extra ``dask``; ``import fastbp`` does not import this module.
"""
import warnings

try:
    import dask
    import dask.array as da
    import sklearn  # noqa: F401  (LinearClassifier is an estimator)
except ImportError as exc:
    from .errors import missing_extra
    raise ImportError(missing_extra("fastbp.dask", exc.name or "dask", "dask")) from exc
import numpy as np
from dask import delayed
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import _bf16, _checks, layers
from ._registry import SPECS
from . import _math
from .layers import Grads

__all__ = ["linear_head", "mlp_loss_grad", "LinearClassifier"]


# ---------------------------------------------------------------------------- operands
def _check_X(X):
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask.array.Array split into row chunks, got "
                        f"{type(X).__name__}; wrap a NumPy array with dask.array.from_array("
                        f"X, chunks=(rows, -1)), or call fastbp.linear_head on it")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features), got shape {X.shape}")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError("X has unknown row chunk sizes; call X.compute_chunk_sizes() first")
    if X.numblocks[1] != 1:
        raise ValueError(f"X must be split into row chunks only, got {X.numblocks[1]} column "
                         f"chunks {X.chunks[1]}; rechunk it with X.rechunk({{1: -1}})")
    return X


def _row_blocks(name, a, chunks):
    """``a`` (dask or NumPy, one entry per row of X) as one delayed block per chunk of X."""
    if isinstance(a, da.Array):
        if a.ndim == 0 or a.chunks[0] != chunks:
            raise ValueError(f"{name}'s row chunks must match X's {chunks}, got "
                             f"{a.chunks[0] if a.ndim else 'a 0-d array'}; rechunk it with "
                             f"{name}.rechunk({{0: X.chunks[0]}})")
        if any(nb != 1 for nb in a.numblocks[1:]):
            raise ValueError(f"{name} must be split into row chunks only, got chunks "
                             f"{a.chunks}; rechunk it with {name}.rechunk({{1: -1}})")
    else:
        a = _checks.as_array(name, a)
        if a.ndim == 0 or len(a) != sum(chunks):
            raise ValueError(f"{name} must have one entry per row of X ({sum(chunks)}), got "
                             f"shape {a.shape}")
        a = da.from_array(a, chunks=(chunks,) + a.shape[1:])
    return list(a.to_delayed().ravel())


def _empty_rows(a):
    """A row-aligned operand with no rows, for checking the call on the client."""
    shape, dtype = getattr(a, "shape", None), getattr(a, "dtype", None)
    if shape is None:
        a = np.asarray(a)
        shape, dtype = a.shape, a.dtype
    return np.empty((0,) + tuple(shape[1:]), dtype)


def _split(X, target, head, options):
    """The row operands split per chunk of X: (head, reduction, target blocks, [row options
    per block], the other options, target and row options with zero rows). The callers check
    the call once on the client with the zero-row operands (every check but the labels'
    range, which the chunks make)."""
    head = _checks.choice("head", head, _checks.HEADS)
    reduction, options = _checks.head_reduction(options)
    row_names = [k for k, v in options.items()
                 if k in SPECS[head].options and SPECS[head].options[k].kind == "row"
                 and v is not None]
    empty = {k: _empty_rows(options[k]) for k in row_names}
    targets = _row_blocks("target", target, X.chunks[0])
    rows = [_row_blocks(k, options[k], X.chunks[0]) for k in row_names]
    rest = {k: v for k, v in options.items() if k not in row_names}
    per_chunk = [dict(zip(row_names, blocks)) for blocks in zip(*rows)] if rows else \
        [{}] * len(targets)
    return head, reduction, targets, per_chunk, rest, _empty_rows(target), empty


# ---------------------------------------------------------------------------- partial sums
def _denominator(head, target, options, B, n, dtype):
    target, opts = _checks.head_target(head, target, B, n, dtype, options, ("W", n, "rows"))
    return float(np.sum(_math.row_weights(head, target, opts, dtype), dtype=np.float64))


def _linear_part(X, target, rows, W, b, head, options, mean, need_dX, backend, low):
    """One chunk: ((loss, [dW, db], denominator), dX), all sums; ``low`` (a bfloat16 call):
    the chunk's gradients in float32, rounded only once the chunks are summed."""
    options = {**options, **rows}
    g = layers.linear_head(X, W, b, target, head, need_dX=need_dX, backend=backend,
                           reduction="sum", grad_dtype=np.float32 if low else None, **options)
    omega = 0.0
    if mean:
        if low:                     # (the head's arrays of a bfloat16 call: float32)
            target = _bf16.head_array("target", target, "X")
            options = {k: _bf16.head_array(k, v, "X") for k, v in options.items()}
        omega = _denominator(head, target, options, len(X), len(W),
                             np.dtype(np.float32) if low else X.dtype)
    return (g.loss, [g.dW, g.db], omega), g.dX


def _mlp_part(X, target, rows, params, activation, alpha, head, options, mean, backend):
    options = {**options, **rows}
    loss, grads = layers._mlp_loss_grad(X, params, target, activation, alpha, head,
                                        dict(options, reduction="sum"), None, backend)
    n = params[-1][0].shape[0]
    omega = _denominator(head, target, options, len(X), n, X.dtype) if mean else 0.0
    return loss, [g for pair in grads for g in pair], omega


def _add(p, q):
    return (p[0] + q[0], [None if a is None else a + c for a, c in zip(p[1], q[1])], p[2] + q[2])


def _tree(parts):
    """Pairwise sums in chunk order: the same additions whichever worker computes a chunk."""
    while len(parts) > 1:
        parts = [delayed(_add)(*parts[i:i + 2]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _finish(total, reduction):
    """(loss, gradients, gradient factor) from the summed parts: "mean" divides by the whole
    data set's denominator (nan loss and zero gradients where every weight is 0, as torch)."""
    loss, grads, omega = total
    scale = 1.0
    if reduction == "mean":
        loss, scale = _math.mean_scale(loss, omega)
        for g in grads:
            if g is not None:
                g *= scale
    return float(loss), grads, scale


def _times(a, scale, dtype):
    """A chunk's dX times the mean's factor, in ``dtype`` (rounded once, after the factor)."""
    return _bf16.result(a if scale == 1.0 else a * a.dtype.type(scale), np.dtype(dtype))


# ---------------------------------------------------------------------------- public
def linear_head(X, W, b, target, head="softmax_nll", *, need_dX=False, backend=None,
                **head_options):
    """``fastbp.linear_head`` over the row chunks of the dask array ``X``: ``Grads(loss, dW, db,
    dX)`` with loss, dW and db computed (NumPy) and dX, when asked, a dask array with X's
    chunks (held on the cluster until it is dropped). ``target`` and the row options
    (``sample_weight``): dask arrays with X's row chunks, or NumPy arrays."""
    X = _check_X(X)
    need_dX = _checks.flag("need_dX", need_dX)
    head, reduction, targets, rows, options, target0, rows0 = _split(X, target, head,
                                                                     head_options)
    opts0 = {**options, **rows0}
    low = _bf16.involved(X, W, b, target0, *opts0.values())
    empty = np.empty((0, X.shape[1]), X.dtype)
    dtypes = {"X": X.dtype, "W": getattr(W, "dtype", None), "b": getattr(b, "dtype", None)}
    if low:                         # (the bfloat16 rule checked on the client, as a call's)
        empty, W0, b0, target0, opts0, dtypes = _bf16.linear_call(empty, W, b, target0, opts0)
    _checks.check_linear_head(empty, W0 if low else W, b0 if low else b, target0, head,
                              {**opts0, "reduction": reduction}, need_dX, None, None)
    Wd, bd = delayed(W), delayed(b)
    parts, dXs = [], []
    for Xc, tc, rc in zip(X.to_delayed().ravel(), targets, rows):
        part, dXc = delayed(_linear_part, nout=2)(Xc, tc, rc, Wd, bd, head, options,
                                                  reduction == "mean", need_dX, backend, low)
        parts.append(part)
        dXs.append(dXc)
    if need_dX:             # one pass: the chunks' dX stay where they were computed
        persisted = dask.persist(*parts, *dXs)
        parts, dXs = list(persisted[:len(parts)]), persisted[len(parts):]
    (total,) = dask.compute(_tree(parts))
    loss, (dW, db), scale = _finish(total, reduction)
    if low:                         # the summed float32 gradients, rounded once
        dW, db = _bf16.result(dW, dtypes["W"]), _bf16.result(db, dtypes["b"])
    dX = None
    if need_dX:
        dX = da.concatenate([
            da.from_delayed(delayed(_times)(block, scale, X.dtype), shape=(rows_, X.shape[1]),
                            dtype=X.dtype)
            for block, rows_ in zip(dXs, X.chunks[0])], axis=0)
    return Grads(loss, dW, db, dX)


def mlp_loss_grad(X, params, target, *, activation="relu", alpha=None, head="softmax_nll",
                  backend=None, **head_options):
    """``fastbp.mlp_loss_grad`` over the row chunks of the dask array ``X``: (loss, [(dW1, db1),
    ...]) computed, as NumPy."""
    X = _check_X(X)
    head, reduction, targets, rows, options, target0, rows0 = _split(X, target, head,
                                                                     head_options)
    _checks.check_mlp_loss_grad(np.empty((0, X.shape[1]), X.dtype), params, target0,
                                activation, alpha, head,
                                {**options, **rows0, "reduction": reduction}, None)
    pd = delayed(params)
    parts = [delayed(_mlp_part)(Xc, tc, rc, pd, activation, alpha, head, options,
                                reduction == "mean", backend)
             for Xc, tc, rc in zip(X.to_delayed().ravel(), targets, rows)]
    (total,) = dask.compute(_tree(parts))
    loss, flat, _ = _finish(total, reduction)
    return loss, list(zip(flat[::2], flat[1::2]))


# ---------------------------------------------------------------------------- estimator
# The heads whose scores are a linear classifier's logits (nll's are probabilities; l1, l2 and
# huber regress).
CLASSIFIER_HEADS = tuple(h for h, s in SPECS.items() if s.predicts != "scores" and h != "nll")


def _has_proba(est):
    return est.head in ("softmax_nll", "sigmoid_bce", "sigmoid_l2", "sigmoid_focal")


def _targets(y, classes, kind, dtype):
    """Labels -> what the head takes: class indices, +-1, or 0/1 indicator rows in ``dtype``."""
    if kind.startswith("labels"):
        return np.searchsorted(classes, y)
    if kind == "pm1":
        return np.where(y == classes[1], 1, -1)
    if len(classes) == 2:
        return (y == classes[1]).astype(dtype)[:, None]
    return (y[:, None] == classes).astype(dtype)


def _scores(X, coef, intercept):
    return X @ coef.T.astype(X.dtype) + intercept.astype(X.dtype)


def _predict_block(X, coef, intercept, classes, head):
    S = _scores(X, coef, intercept)
    if S.shape[1] == 1:
        return classes[(S[:, 0] > 0).astype(np.intp)]
    return classes[S.argmax(axis=1)]


def _proba_block(X, coef, intercept, head):
    S = _scores(X, coef, intercept).astype(np.float64)
    if head == "softmax_nll":
        S -= S.max(axis=1, keepdims=True)
        np.exp(S, out=S)
        return S / S.sum(axis=1, keepdims=True)
    P = _math.sigmoid(S)
    if P.shape[1] == 1:
        return np.hstack([1 - P, P])
    return P / P.sum(axis=1, keepdims=True)      # one-vs-rest, normalised (scikit-learn's rule)


class LinearClassifier(ClassifierMixin, BaseEstimator):
    """A linear classifier on Dask data, fitted by SciPy's L-BFGS-B: every loss and gradient
    evaluation is one distributed ``linear_head`` pass (plus ``alpha / 2 * ||W||^2``).

    ``head``: one of ``CLASSIFIER_HEADS``. softmax_nll and multiclass_hinge fit one row of
    ``coef_`` per class; binary_hinge needs two classes and fits one; the sigmoid heads fit one
    row for two classes (logistic regression with sigmoid_bce) and one per class (one-vs-rest)
    beyond. ``tol``: L-BFGS-B's ``gtol`` (scikit-learn's LogisticRegression rule).
    ``head_options``: the head's options (``reduction``, ``weight``, ``margin`` ...);
    ``sample_weight`` goes to ``fit``. X is read once per evaluation: persist it
    (``X.persist()``) where it fits in the cluster's memory.
    """

    def __init__(self, head="softmax_nll", *, alpha=0.0, max_iter=100, tol=1e-6,
                 fit_intercept=True, backend=None, **head_options):
        self.head = head
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.backend = backend
        self.head_options = head_options

    # scikit-learn's get_params / clone see the head's options as parameters
    def get_params(self, deep=True):
        return {**super().get_params(deep), **self.head_options}

    def set_params(self, **params):
        for key in [k for k in params if k not in self._get_param_names()]:
            self.head_options[key] = params.pop(key)
        return super().set_params(**params)

    def _check_params(self):
        _checks.choice("head", self.head, CLASSIFIER_HEADS)
        _checks.real("alpha", self.alpha, 0.0)
        _checks.real("tol", self.tol, 0.0)
        _checks.integer("max_iter", self.max_iter, lo=1)
        if "sample_weight" in self.head_options:
            raise TypeError("pass sample_weight to fit, not to the constructor")

    def _operands(self, X, y=None):
        if not isinstance(X, da.Array):
            X = np.asarray(X)
            X = da.from_array(X, chunks=(max(1, min(len(X), 100_000)), -1))
        X = _check_X(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        if y is not None and not isinstance(y, da.Array):
            y = da.from_array(np.asarray(y), chunks=(X.chunks[0],))
        return X, y

    def fit(self, X, y, sample_weight=None):
        self._check_params()
        X, y = self._operands(X, y)
        if y.ndim != 1 or y.chunks[0] != X.chunks[0]:
            raise ValueError(f"y must be 1-D with X's row chunks {X.chunks[0]}, got shape "
                             f"{y.shape} and chunks {y.chunks}")
        self.classes_ = np.unique(da.unique(y).compute())
        K = len(self.classes_)
        kind = SPECS[self.head].target
        if K < 2 or (kind == "pm1" and K != 2):
            at = "exactly" if kind == "pm1" else "at least"
            raise ValueError(f"head {self.head!r} needs {at} 2 classes, y has {K}: "
                             f"{self.classes_}")
        n = 1 if kind == "pm1" or (kind == "float" and K == 2) else K
        d = X.shape[1]
        self.n_features_in_ = d
        if kind == "float":
            Z = y.map_blocks(_targets, self.classes_, kind, X.dtype, dtype=X.dtype, new_axis=1,
                             chunks=(y.chunks[0], (n,)))
        else:
            Z = y.map_blocks(_targets, self.classes_, kind, X.dtype, dtype=np.intp)
        options = dict(self.head_options)
        if sample_weight is not None:
            options["sample_weight"] = sample_weight
        dtype, alpha = X.dtype, float(self.alpha)

        def objective(theta):
            W = theta[:n * d].reshape(n, d).astype(dtype)
            b = theta[n * d:].astype(dtype) if self.fit_intercept else None
            g = linear_head(X, W, b, Z, self.head, backend=self.backend, **options)
            W64 = theta[:n * d]
            loss = g.loss + 0.5 * alpha * float(W64 @ W64)
            grad = g.dW.astype(np.float64).ravel() + alpha * W64
            if self.fit_intercept:
                grad = np.concatenate([grad, g.db.astype(np.float64)])
            return loss, grad

        theta0 = np.zeros(n * d + (n if self.fit_intercept else 0))
        res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "gtol": self.tol,
                                "ftol": 64 * np.finfo(float).eps})
        if res.nit >= self.max_iter:
            warnings.warn(f"L-BFGS-B did not converge in max_iter={self.max_iter} iterations "
                          f"({res.message})", ConvergenceWarning)
        self.coef_ = res.x[:n * d].reshape(n, d)
        self.intercept_ = res.x[n * d:] if self.fit_intercept else np.zeros(n)
        self.n_iter_ = int(res.nit)
        self.loss_ = float(res.fun)
        return self

    def _prepared(self, X):
        check_is_fitted(self, "coef_")
        if isinstance(X, da.Array):
            X = _check_X(X)
        else:
            X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} features, got shape {X.shape}")
        return X

    def decision_function(self, X):
        X = self._prepared(X)
        if isinstance(X, da.Array):
            return X.map_blocks(_scores, self.coef_, self.intercept_,
                                chunks=(X.chunks[0], (len(self.coef_),)), dtype=X.dtype)
        return _scores(X, self.coef_, self.intercept_)

    def predict(self, X):
        """Class labels: a dask array for a dask X (nothing computed), NumPy otherwise."""
        X = self._prepared(X)
        args = (self.coef_, self.intercept_, self.classes_, self.head)
        if isinstance(X, da.Array):
            return X.map_blocks(_predict_block, *args, drop_axis=1, dtype=self.classes_.dtype)
        return _predict_block(X, *args)

    @available_if(_has_proba)
    def predict_proba(self, X):
        """Class probabilities (softmax; sigmoid heads: one-vs-rest, normalised)."""
        X = self._prepared(X)
        args = (self.coef_, self.intercept_, self.head)
        if isinstance(X, da.Array):
            return X.map_blocks(_proba_block, *args, dtype=np.float64,
                                chunks=(X.chunks[0], (len(self.classes_),)))
        return _proba_block(X, *args)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy, computed (a float) for dask or NumPy inputs."""
        hits = self.predict(X) == y
        if sample_weight is None:
            return float(hits.mean().compute() if isinstance(hits, da.Array) else hits.mean())
        w = sample_weight
        total = (hits * w).sum() / w.sum()
        return float(total.compute() if hasattr(total, "compute") else total)
