"""fastbp train / demo on the bundled digits data (docs/api.md s. 7)."""
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import cli, compare
from fastbp.train import TRAIN_HEADS, TrainingDiverged, load_dataset, train


def test_defaults_reach_97_percent(backend):
    _, hist = train(backend=backend)
    assert hist.test_accuracy >= 0.97 and len(hist.losses) == 50
    assert hist.losses[-1] < hist.losses[0]


def test_mean_accuracy_over_splits_is_above_97_percent():
    accs = [train(seed=s)[1].test_accuracy for s in range(5)]
    assert np.mean(accs) >= 0.97


def test_same_seed_same_run():
    """Same seed, same run -- also when the split is passed in preloaded (data=)."""
    a, b = train(epochs=3)[1], train(epochs=3, data=load_dataset("digits", seed=0))[1]
    assert a.losses == b.losses and a.accuracies == b.accuracies


@pytest.mark.parametrize("head", TRAIN_HEADS)
@pytest.mark.parametrize("activation", fastbp.ACTIVATIONS)
def test_every_head_and_activation_trains(head, activation):
    """Adam: SGD leaves sigmoid_l2's ten saturated sigmoids stuck near 0 for many epochs."""
    _, hist = train(head=head, activation=activation, epochs=10, lr=0.01, optimizer="adam")
    assert np.isfinite(hist.losses).all() and hist.losses[-1] < hist.losses[0]
    assert hist.test_accuracy > 0.85


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_stops_with_a_clear_message(capsys):
    with pytest.raises(TrainingDiverged, match=r"epoch 1; try a lower learning rate"):
        train(head="l2", activation="identity", lr=1e3, epochs=5)
    assert cli.main(["train", "--head", "l2", "--activation", "identity", "--lr", "1000"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lower learning rate" in err[0]


@pytest.mark.parametrize("argv", [
    ["train", "--dataset", "mnist"], ["train", "--head", "nll"], ["train", "--activation", "x"],
    ["train", "--lr", "0"], ["train", "--lr", "-1"], ["train", "--batch-size", "0"],
    ["train", "--epochs", "0"], ["train", "--epochs", "two"], ["train", "--backend", "gpu"],
])
def test_bad_train_arguments_exit_2_with_one_line(argv):
    run = subprocess.run([sys.executable, "-m", "fastbp.cli", *argv], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_train_cli_prints_epochs_and_writes_plot(tmp_path, capsys):
    path = tmp_path / "train.png"
    assert cli.main(["train", "--epochs", "3", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert "epoch   3/3" in out and "final test accuracy" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_writes_both_plots_and_a_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(compare.PRESETS, "quick", ((4, 8), 1))
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "summary" in out and "test accuracy" in out and "x less memory" in out
    for name in ("compare.png", "train.png"):
        assert (tmp_path / name).stat().st_size > 10_000
