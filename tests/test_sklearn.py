"""fastbp.sklearn.MLPClassifier: scikit-learn's estimator checks, and digits accuracy beside
scikit-learn's own MLPClassifier with the same hyper-parameters."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")   # the `sklearn` extra; make test installs it
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLP  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp.sklearn import MLPClassifier  # noqa: E402
from fastbp.train import load_dataset  # noqa: E402


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([MLPClassifier(max_iter=30, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_digits_accuracy_matches_sklearn_within_one_point(solver):
    X_train, X_test, y_train, y_test = load_dataset("digits", seed=0, dtype="float64")
    params = dict(hidden_layer_sizes=(64,), solver=solver, max_iter=60, random_state=0,
                  learning_rate_init=0.01 if solver == "adam" else 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**params).fit(X_train, y_train).score(X_test, y_test)
        theirs = SkMLP(**params).fit(X_train, y_train).score(X_test, y_test)
    assert ours >= theirs - 0.01 and ours >= 0.95


def test_partial_fit_and_probabilities():
    X_train, X_test, y_train, y_test = load_dataset("digits", seed=0, dtype="float64")
    clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=0, learning_rate_init=0.01)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X_train[:10], y_train[:10])
    for _ in range(5):
        clf.partial_fit(X_train, y_train, classes=np.arange(10))
    P = clf.predict_proba(X_test)
    np.testing.assert_allclose(P.sum(axis=1), 1)
    assert (clf.classes_[P.argmax(1)] == clf.predict(X_test)).all()
    assert clf.score(X_test, y_test) > 0.9 and clf.n_iter_ == 5
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X_train[:3], np.array([0, 1, 42]))
