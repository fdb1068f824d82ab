"""``fastbp.sklearn.MLPClassifier``: a scikit-learn classifier trained on fastbp's fused kernels.

Same parameters and defaults as ``sklearn.neural_network.MLPClassifier`` where they exist
(hidden_layer_sizes, activation, solver "sgd" / "adam", alpha, batch_size, learning_rate_init,
max_iter, momentum, shuffle, tol, n_iter_no_change, random_state), plus ``backend``. The output
layer is a softmax over the classes (two classes: two outputs), trained with ``softmax_nll``;
``alpha`` is the same L2 penalty as scikit-learn's (``alpha / 2 * sum ||W||^2 / batch``, on the
weights, not the biases). Training stops after ``max_iter`` epochs, or earlier when the training
loss has not improved by ``tol`` for ``n_iter_no_change`` epochs (scikit-learn's rule); hitting
``max_iter`` first warns with ``ConvergenceWarning``.
"""
import warnings

import numpy as np
try:
    from sklearn.base import BaseEstimator, ClassifierMixin
except ImportError as exc:
    from .errors import missing_extra
    raise ImportError(missing_extra("fastbp.sklearn", "scikit-learn", "sklearn")) from exc
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from .model import MLP, SGD, Adam, _axpy

# scikit-learn's activation names -> fastbp's
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class MLPClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, hidden_layer_sizes=(100,), activation="relu", solver="adam", alpha=1e-4,
                 batch_size="auto", learning_rate_init=1e-3, max_iter=200, momentum=0.9,
                 shuffle=True, tol=1e-4, n_iter_no_change=10, random_state=None, backend=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.momentum = momentum
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.backend = backend

    # ------------------------------------------------------------------ set-up
    def _validate_params(self):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver must be 'sgd' or 'adam', got {self.solver!r}")
        sizes = ([self.hidden_layer_sizes] if np.isscalar(self.hidden_layer_sizes)
                 else list(self.hidden_layer_sizes))
        if any(int(h) != h or h < 1 for h in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive ints, got "
                             f"{self.hidden_layer_sizes!r}")
        for name in ("alpha", "tol"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate_init <= 0:
            raise ValueError(f"learning_rate_init must be > 0, got {self.learning_rate_init}")
        if self.max_iter < 1 or self.n_iter_no_change < 1:
            raise ValueError("max_iter and n_iter_no_change must be >= 1")
        if self.batch_size != "auto" and (int(self.batch_size) != self.batch_size
                                          or self.batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or a positive int, "
                             f"got {self.batch_size!r}")
        return [int(h) for h in sizes]

    def _initialize(self, n_features, hidden, dtype):
        rng = check_random_state(self.random_state)
        self._rng = rng
        self.model_ = MLP([n_features, *hidden, len(self.classes_)],
                          activation=_ACTIVATIONS[self.activation], head="softmax_nll",
                          dtype=dtype, backend=self.backend,
                          seed=int(rng.randint(np.iinfo(np.int32).max)))
        self._optimizer = (SGD(lr=self.learning_rate_init, momentum=self.momentum)
                           if self.solver == "sgd" else Adam(lr=self.learning_rate_init))
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.t_ = 0
        self._best_loss, self._no_improvement = np.inf, 0

    # ------------------------------------------------------------------ training
    def _epoch(self, X, y):
        """One pass over (X, y) in mini-batches; returns the mean loss (scikit-learn's)."""
        n = len(X)
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        total = 0.0
        for lo in range(0, n, batch):
            idx = order[lo:lo + batch]
            loss, grads = self.model_.loss_grad(X[idx], y[idx])
            if self.alpha:
                m = len(idx)
                loss += 0.5 * self.alpha * sum(float(np.vdot(W, W))
                                               for W, _ in self.model_.params) / m
                for (W, _), (dW, _) in zip(self.model_.params, grads):
                    _axpy(W, dW, self.alpha / m)
            self._optimizer.update(self.model_.params, grads)
            total += loss * len(idx)
        self.t_ += n
        self.n_iter_ += 1
        loss = total / n
        if not np.isfinite(loss):
            raise ValueError(f"training diverged in epoch {self.n_iter_} (loss {loss}); "
                             f"use a smaller learning_rate_init")
        self.loss_curve_.append(loss)
        self.loss_ = loss
        if loss > self._best_loss - self.tol:
            self._no_improvement += 1
        else:
            self._no_improvement = 0
        self._best_loss = min(self._best_loss, loss)
        return loss

    def _encode(self, y):
        return np.searchsorted(self.classes_, y)

    def fit(self, X, y):
        """Train from scratch for up to ``max_iter`` epochs."""
        hidden = self._validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=True)
        check_classification_targets(y)
        self.classes_ = unique_labels(y)
        self._initialize(X.shape[1], hidden, X.dtype)
        y = self._encode(y)
        for _ in range(self.max_iter):
            self._epoch(X, y)
            if self._no_improvement > self.n_iter_no_change:
                break
        else:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          f"and the optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y); the first call needs ``classes`` (all of them)."""
        first = not hasattr(self, "model_")
        hidden = self._validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = unique_labels(classes)
            self._initialize(X.shape[1], hidden, X.dtype)
        elif classes is not None and not np.array_equal(unique_labels(classes), self.classes_):
            raise ValueError(f"classes {unique_labels(classes)} differ from the first call's "
                             f"{self.classes_}")
        unknown = np.setdiff1d(unique_labels(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y has labels {unknown} that are not in classes {self.classes_}")
        self._epoch(X.astype(self.model_.dtype, copy=False), self._encode(y))
        return self

    # ------------------------------------------------------------------ prediction
    def _scores(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.model_.forward(X.astype(self.model_.dtype, copy=False))

    def predict_proba(self, X):
        """Softmax of the network's outputs, one column per class of ``classes_``."""
        S = self._scores(X).astype(np.float64)
        S -= S.max(axis=1, keepdims=True)
        np.exp(S, out=S)
        return S / S.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        winners = self._scores(X).argmax(axis=1)      # checks fitted-ness first
        return self.classes_[winners]
