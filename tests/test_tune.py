"""`fastbp tune` (docs/performance.md, "fastbp tune"): it measures the thresholds of
tuning.MEASURED, caches them per CPU model, a later process applies the cache at import and
fastbp.info() says so; a cache that does not fit is ignored with a warning; the shipped values
hold without one (every test session runs them: conftest.py sets FASTBP_TUNING=defaults)."""
import json
import os
import re
import subprocess
import sys

import pytest

import fastbp
from fastbp import cli, tune
from fastbp.backends import tuning


@pytest.fixture(autouse=True)
def shipped(monkeypatch, tmp_path):
    """Each test's own cache folder, and the shipped thresholds back afterwards."""
    monkeypatch.setenv("FASTBP_CACHE_DIR", str(tmp_path / "cache"))
    yield
    tuning.reset_measured()


def _in_force():
    return {b: {k: getattr(T, k) for k in tuning.MEASURED} for b, T in tuning.TUNING.items()}


def _cache(**values):
    return {"format": tuning.CACHE_FORMAT, "fastbp": tuning.fastbp_version(),
            "cpu": tuning.cpu_model(), "date": "today",
            "values": {"c": {"FUSED_FEW_N": 7, "OWN_ISAS": []}, **values}}


@pytest.mark.parametrize("times, k", [
    ([(1, 2), (1, 2), (2, 1)], 2),          # a wins the first two steps
    ([(2, 1), (2, 1)], 0),                  # b everywhere
    ([(1, 2)] * 3, 3),                      # a everywhere
    ([(1, 2), (1.01, 1), (1, 2), (3, 1)], 3),   # a near tie inside a's run does not end it
    ([(1, 2), (2, 1), (2, 1), (1.01, 1)], 1),   # nor does one near win of a past b's losses
])
def test_split_minimises_the_relative_time(times, k):
    assert tune.split(times) == k


def test_tune_measures_caches_and_applies_and_a_fresh_process_uses_it(capsys):
    shipped = _in_force()
    data = tune.run(quick=True, save=True)
    path = tuning.cache_path()
    assert json.loads(open(path).read()) == data
    assert data["cpu"] == tuning.cpu_model() and data["isa"] == tuning.host_isa()
    compiled = [b for b in ("c", "numba") if b in fastbp.available_backends()]
    assert sorted(data["values"]) == sorted(compiled)
    for b, v in data["values"].items():
        assert v["FUSED_FEW_N"] in (0, *tune.SHAPES["quick"]["few_n"])
        assert v["OWN_ISAS"] in ([], [tuning.host_isa()])
        assert set(v) <= set(tuning.MEASURED)
        for key in ("FUSED_MIN_WORK", "FUSED_MIN_WORK_F32"):   # (only with threads to split)
            assert v.get(key, shipped[b][key]) >= tuning.TUNING[b].PARALLEL_MIN_WORK
    # every step left timings of both of its paths, and they were measured
    assert {r["threshold"] for r in data["timings"]} >= {"FUSED_FEW_N", "OWN_ISAS"}
    assert all(t > 0 for r in data["timings"] for k, t in r.items()
               if k in ("fused", "chunked", "parallel", "otherwise", "own", "blas"))
    in_force = _in_force()
    for b, v in data["values"].items():
        assert {k: in_force[b][k] for k in v} == {k: tuple(x) if isinstance(x, list) else x
                                                  for k, x in v.items()}
    assert tuning.SOURCE["path"] == path and "fastbp tune" in tuning.SOURCE["source"]
    # a later process reads the cache at import; info() names it and the values in force
    code = ("import fastbp, json; fastbp.available_backends(); "
            "print(json.dumps(fastbp.info()['tuning']['thresholds']))")
    env = {**os.environ, "FASTBP_TUNING": "cache"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=300)
    seen = json.loads(out.stdout)
    assert seen["path"] == path and seen["measured"] == data["values"]
    for b, v in data["values"].items():
        assert {k: seen["in_force"][b][k] for k in v} == v
    # ... unless told to take the shipped values
    env["FASTBP_TUNING"] = "defaults"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=300)
    seen = json.loads(out.stdout)
    assert seen["path"] is None and "shipped" in seen["source"]
    assert seen["in_force"] == json.loads(json.dumps(shipped))


def test_a_saved_cache_is_applied_over_the_shipped_values(monkeypatch):
    path = tuning.cache_path()
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        json.dump(_cache(numba={"FUSED_FEW_N": 5, "OWN_ISAS": ["default"]}), f)
    monkeypatch.setenv("FASTBP_TUNING", "cache")
    tuning.apply_measured()
    assert tuning.C.FUSED_FEW_N == 7 and tuning.C.OWN_ISAS == ()
    assert tuning.Numba.FUSED_FEW_N == 5 and tuning.Numba.OWN_ISAS == ("default",)
    # the thresholds it does not name keep their shipped values, and the plan follows
    assert tuning.C.FUSED_MIN_WORK == tuning._SHIPPED["c"]["FUSED_MIN_WORK"]
    assert tuning.plan("c", 8, 4096, 7, "float32").path == "fused"
    assert tuning.tiny_window("c")[1] == (7 if tuning.host_isa() in tuning.C.FUSED_ISAS else 0)
    assert fastbp.info()["tuning"]["thresholds"]["path"] == path
    tuning.reset_measured()
    assert tuning.C.FUSED_FEW_N == tuning._SHIPPED["c"]["FUSED_FEW_N"]


@pytest.mark.parametrize("change, why", [
    (lambda d: d.update(cpu="GenuineIntel 6 207 Xeon"), "measured on another CPU"),
    (lambda d: d.update(fastbp="0.0.1"), "measured with fastbp 0.0.1"),
    (lambda d: d.update(format=99), "not a format-1"),
    (lambda d: d["values"]["c"].update(FUSED_FEW_N=-1), "c.FUSED_FEW_N = -1"),
    (lambda d: d["values"]["c"].update(FUSED_FEW_N="12"), "c.FUSED_FEW_N = '12'"),
    (lambda d: d["values"]["c"].update(OWN_ISAS=["sse9"]), "c.OWN_ISAS = ['sse9']"),
    (lambda d: d["values"]["c"].update(BLOCKS_PER_THREAD=2), "c.BLOCKS_PER_THREAD = 2"),
    (lambda d: d["values"].update(torch={}), "not {backend: {threshold: value}}"),
])
def test_a_cache_that_does_not_fit_warns_and_the_shipped_values_hold(change, why):
    data = _cache()
    change(data)
    match = r"tuning cache x\.json ignored \(.*" + re.escape(why)
    with pytest.warns(RuntimeWarning, match=match):
        tuning.apply_measured(data, "x.json")
    assert _in_force() == {b: dict(v) for b, v in tuning._SHIPPED.items()}
    assert tuning.SOURCE["path"] is None


def test_an_unreadable_cache_file_and_a_bad_setting_warn(monkeypatch):
    path = tuning.cache_path()
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("{not json")
    monkeypatch.setenv("FASTBP_TUNING", "cache")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        tuning.apply_measured()
    monkeypatch.setenv("FASTBP_TUNING", "measured")
    with pytest.warns(RuntimeWarning, match="FASTBP_TUNING must be 'cache' or 'defaults', got "
                                            "'measured'"):
        with pytest.warns(RuntimeWarning, match="unreadable"):
            tuning.apply_measured()
    monkeypatch.setenv("FASTBP_TUNING", "defaults")
    tuning.apply_measured()                    # (the file is not read: no warning)
    assert tuning.SOURCE["path"] is None


def test_cache_path_is_per_cpu_model_under_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTBP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = tuning.cache_path()
    assert os.path.dirname(path) == str(tmp_path / "xdg" / "fastbp")
    name = os.path.basename(path)
    assert name.startswith("tuning-") and name.endswith(".json") and " " not in name
    monkeypatch.setattr(tuning, "cpu_model", lambda: "AuthenticAMD 26 2 AMD EPYC 9B45")
    assert os.path.basename(tuning.cache_path()) == "tuning-authenticamd-26-2-amd-epyc-9b45.json"


def test_cli_tune_quick_show_reset_and_errors(capsys):
    path = tuning.cache_path()
    assert cli.main(["tune", "--quick", "--backends", "c"]) == 0
    out = capsys.readouterr().out
    assert "FUSED_FEW_N" in out and "not saved" in out and not os.path.exists(path)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        json.dump(_cache(), f)
    tuning.apply_measured(json.load(open(path)), path)
    assert cli.main(["tune", "--show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["path"] == path and shown["in_force"]["c"]["FUSED_FEW_N"] == 7
    assert cli.main(["tune", "--reset"]) == 0
    assert "removed" in capsys.readouterr().out and not os.path.exists(path)
    assert tuning.C.FUSED_FEW_N == tuning._SHIPPED["c"]["FUSED_FEW_N"]
    assert cli.main(["tune", "--backends", "numpy"]) == 2
    assert "--backends must name some of numba, c, got 'numpy'" in capsys.readouterr().err
