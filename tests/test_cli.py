"""The command line (docs/api.md s. 7): compare's table and JSON are real measurements; errors are
one line with exit code 2."""
import json
import subprocess
import sys

import numpy as np
import pytest

from fastbp import cli, compare


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(compare.PRESETS, "quick", ((4, 8), 1))


def test_compare_prints_a_table_and_writes_json(tiny_preset, tmp_path, capsys):
    path = tmp_path / "c.json"
    assert cli.main(["compare", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "naive time" in out and "1.34 TB" in out
    data = json.loads(path.read_text())
    assert len(data["rows"]) == 2 * len(compare.cases(1, "float64", np.random.default_rng(0))) + 1
    notes = data["rows"][-1]        # the notes' 100 x 4096 case: refused naive, measured fused
    assert notes["B"] == 100 and "4096" in notes["case"] and notes["naive_s"] is None
    assert notes["naive_predicted_bytes"] == 409600 ** 2 * 8
    assert all(f["s"] > 0 for f in notes["fused"].values())
    for row in data["rows"][:-1]:
        assert row["naive_s"] > 0 and row["naive_peak_bytes"] > 0
        # the naive path really holds its predicted Jacobians (test_naive checks the 10%)
        assert row["naive_predicted_bytes"] <= row["naive_peak_bytes"]
        for fused in row["fused"].values():
            # every fused call allocates at least its gradients (tracemalloc + C's exact count)
            assert 0 < fused["peak_bytes"] < row["naive_peak_bytes"]


def test_compare_shows_predicted_bytes_where_naive_refuses(monkeypatch):
    monkeypatch.setattr(compare.naive, "default_max_bytes", lambda: 1 << 16)
    monkeypatch.setitem(compare.PRESETS, "quick", ((64,), 1))
    rows = compare.run("quick")
    assert all(r["naive_s"] is None for r in rows)
    assert "> " not in compare.table(rows) and ">" in compare.table(rows)


def test_demo_runs(tiny_preset, capsys):
    assert cli.main(["demo"]) == 0
    assert "fused time" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["nope"], ["compare", "--preset", "huge"],
                                  ["compare", "--dtype", "float16"]])
def test_bad_command_lines_exit_2_with_one_line(argv):
    run = subprocess.run([sys.executable, "-m", "fastbp.cli", *argv], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_bench_prints_every_backend_and_the_blas_floor(monkeypatch, tmp_path, capsys):
    from fastbp import bench
    monkeypatch.setitem(bench.GRIDS, "quick", ("T",))
    path = tmp_path / "b.json"
    assert cli.main(["bench", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    import fastbp
    for name in fastbp.available_backends() + ("bare BLAS",):
        assert name in out
    rows = json.loads(path.read_text())
    assert len(rows) == len(bench.HEADS) and all(t > 0 for r in rows
                                                 for t in r["seconds"].values())


@pytest.mark.parametrize("B", [48])
def test_predicted_naive_bytes_match_the_measured_peak_within_10_percent(B):
    """Every case of fastbp compare, at a size where its Jacobians dominate the memory."""
    for name, (naive_fn, _, predicted) in compare.cases(B, np.dtype("float64"),
                                                        np.random.default_rng(0)).items():
        _, peak = compare._measure(naive_fn, 1)
        assert abs(peak - predicted) <= 0.10 * predicted, (name, peak, predicted)


def test_no_memory_ratio_where_a_side_measured_nothing():
    """0 bytes has no ratio: the table prints "-" there, never a ratio against a floor."""
    assert compare.memory_ratio(1000, 0) == "-" and compare.memory_ratio(0, 10) == "-"
    assert compare.memory_ratio(1000, 10) == "100"
    row = {"case": "x", "B": 8, "dtype": "float64", "naive_predicted_bytes": 10 ** 6,
           "naive_s": 1e-3, "naive_peak_bytes": 10 ** 6,
           "fused": {"c": {"s": 1e-5, "peak_bytes": 0}}}
    line = compare.table([row]).splitlines()[2]
    assert line.split()[-1] == "-" and "0 B" in line


def test_version_and_defaults_in_help(capsys):
    import fastbp
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == \
        f"fastbp {fastbp.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 50)", "(default: 64)", "(default: relu)", "(default: 0.1)"):
        assert shown in text


@pytest.mark.parametrize("module, extra, call", [
    ("matplotlib", "plot", lambda: compare.plot([], "x.png")),
    ("sklearn.datasets", "sklearn", lambda: __import__("fastbp.train").train.load_dataset()),
])
def test_a_missing_optional_dependency_names_its_extra(module, extra, call, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)      # import fails as if not installed
    with pytest.raises(ImportError, match=rf"pip install 'fastbp\[{extra}\]'"):
        call()


@pytest.mark.parametrize("module, blocked", [("fastbp.torch", "torch"), ("fastbp.jax", "jax"),
                                             ("fastbp.dask", "dask"),
                                             ("fastbp.sklearn", "sklearn")])
def test_an_adapter_without_its_library_names_the_extra(module, blocked):
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120).stdout
    assert "pip install 'fastbp[" in out, out


def test_compare_runs_its_cases_in_bfloat16(tiny_preset, capsys, tmp_path):
    """--dtype bfloat16: the fused calls on bfloat16 arrays (their results' dtypes), the naive
    path on the same values in float32 (its Jacobians' bytes at float32's size)."""
    path = tmp_path / "c.json"
    assert cli.main(["compare", "--dtype", "bfloat16", "--json", str(path)]) == 0
    assert "671 GB (float32)" in capsys.readouterr().out
    rows = json.loads(path.read_text())["rows"]
    assert all(r["dtype"] == "bfloat16" for r in rows)
    cases = compare.cases(4, compare.dtype_of("bfloat16"), np.random.default_rng(0))
    naive_fn, fused, predicted = cases["1-layer softmax (32->10)"]
    g = fused["numpy"]()
    assert g.dX.dtype.name == "bfloat16" and g.dW.dtype.name == "bfloat16"
    want = naive_fn()
    np.testing.assert_allclose(g.dW.astype(np.float32), want[1], rtol=2 ** -7, atol=1e-6)
