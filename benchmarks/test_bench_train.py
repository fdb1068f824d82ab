"""Training the default digits net (64 relu, softmax, SGD momentum 0.9, lr 0.1, batch 64,
50 epochs, same stratified split) with fastbp, scikit-learn's MLPClassifier and PyTorch eager,
in one group; each row records its test accuracy in extra_info."""
import warnings

import numpy as np
import pytest

import fastbp
from fastbp.train import load_dataset, train

GROUP = "train digits 64-relu softmax SGD(0.9) lr 0.1 batch 64, 50 epochs (float32)"
EPOCHS, LR, BATCH = 50, 0.1, 64


def _run(benchmark, fn):
    benchmark.group = GROUP
    acc = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["test_accuracy"] = acc
    assert acc > 0.9


@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_train_fastbp(benchmark, backend):
    data = load_dataset("digits", seed=0)         # loaded outside the timing, as for the peers
    _run(benchmark, lambda: train(backend=backend, epochs=EPOCHS, lr=LR, batch_size=BATCH,
                                  data=data)[1].test_accuracy)


def test_train_sklearn(benchmark):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    X_train, X_test, y_train, y_test = load_dataset("digits", seed=0)

    def fit():
        clf = MLPClassifier((64,), solver="sgd", momentum=0.9, nesterovs_momentum=False,
                            learning_rate_init=LR, batch_size=BATCH, max_iter=EPOCHS, alpha=0.0,
                            tol=0.0, n_iter_no_change=EPOCHS + 1, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X_train, y_train)
        return clf.score(X_test, y_test)

    _run(benchmark, fit)


def test_train_torch_eager(benchmark):
    torch = pytest.importorskip("torch")      # the `peers` extra (make bench installs it)
    torch.set_num_threads(fastbp.get_num_threads())
    X_train, X_test, y_train, y_test = load_dataset("digits", seed=0)
    Xt, yt = torch.from_numpy(X_train), torch.from_numpy(y_train)

    def fit():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 10))
        opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9)
        rng = np.random.default_rng(0)
        for _ in range(EPOCHS):
            order = torch.from_numpy(rng.permutation(len(Xt)))
            for lo in range(0, len(Xt), BATCH):
                idx = order[lo:lo + BATCH]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
                opt.step()
        with torch.no_grad():
            return float((net(torch.from_numpy(X_test)).argmax(1).numpy() == y_test).mean())

    _run(benchmark, fit)
