"""Backends, threads and info (docs/api.md s. 6)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp


def test_numpy_reference_is_always_available():
    names = fastbp.available_backends()
    assert "numpy" in names and names[-1] == "numpy"   # fastest first, the reference last


def test_set_and_use_backend():
    before = fastbp.get_backend()
    try:
        fastbp.set_backend("numpy")
        assert fastbp.get_backend() == "numpy"
        for name in fastbp.available_backends():
            with fastbp.use_backend(name):
                assert fastbp.get_backend() == name
            assert fastbp.get_backend() == "numpy"
        fastbp.set_backend("auto")
        assert fastbp.get_backend() == fastbp.available_backends()[0]
    finally:
        fastbp.set_backend(before)


def test_unknown_backend_names_are_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastbp.set_backend("gpu")
    with pytest.raises(ValueError):
        with fastbp.use_backend("gpu"):
            pass
    with pytest.raises(TypeError):
        fastbp.set_backend(3)


def test_unavailable_backend_raises_backend_unavailable(monkeypatch):
    from fastbp import _dispatch
    monkeypatch.setitem(_dispatch._REGISTRY, "broken", "fastbp.backends.does_not_exist")
    monkeypatch.setattr(_dispatch, "_PREFERENCE", ("broken",) + _dispatch._PREFERENCE)
    assert "broken" not in fastbp.available_backends()
    with pytest.raises(fastbp.BackendUnavailable, match="'broken' is unavailable"):
        fastbp.set_backend("broken")
    _dispatch._why_not.pop("broken", None)


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_env_var_sets_the_initial_default():
    run = _run("import fastbp; print(fastbp.get_backend())", FASTBP_BACKEND="numpy")
    assert run.stdout.strip() == "numpy"
    run = _run("import fastbp; fastbp.get_backend()", FASTBP_BACKEND="nope")
    assert run.returncode != 0 and "FASTBP_BACKEND must be one of" in run.stderr


def test_import_loads_no_backend():
    """Only the backends' interface (LayerCache, plain Python) is imported with fastbp: no
    backend, no Numba, no cffi."""
    run = _run("import sys, fastbp; print(sorted(m for m in sys.modules "
               "if m.startswith(('numba', 'cffi', 'fastbp.backends.'))))")
    assert run.stdout.strip() == "['fastbp.backends.interface']"


def test_threads_knob():
    before = fastbp.get_num_threads()
    try:
        fastbp.set_num_threads(1)
        assert fastbp.get_num_threads() == 1
        assert all(lib["num_threads"] == 1 for lib in fastbp.info()["blas"])
        if "numba" in fastbp.available_backends():
            import numba
            assert numba.get_num_threads() == 1
        if "c" in fastbp.available_backends():
            from fastbp.backends import c_kernels
            assert c_kernels._threads[0] == 1          # passed to every OpenMP region
    finally:
        fastbp.set_num_threads(before)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            fastbp.set_num_threads(bad)


def test_info_reports_the_machine():
    info = fastbp.info()
    assert info["backends"] == list(fastbp.available_backends())
    assert info["versions"]["numpy"] == np.__version__
    assert info["threads"] == fastbp.get_num_threads()
    for key in ("python", "blas", "cpu", "default_backend", "unavailable"):
        assert key in info
    for backend in ("c", "numba"):
        if backend in info["backends"]:
            assert info[f"{backend}_blas"] in ("numpy", "scipy")
    if "c" in info["backends"]:
        # the fast entry is built by the same compiler, beside the C backend
        assert info["fastcall"]


@pytest.mark.skipif("c" not in fastbp.available_backends(), reason="the C backend is not built")
@pytest.mark.parametrize("user_env, want", [
    ({}, 1000), ({"GOMP_SPINCOUNT": "5"}, 5), ({"OMP_WAIT_POLICY": "active"}, -1)])
def test_openmp_spin_default_is_in_force_as_libgomp_loads_and_environ_is_left_alone(user_env,
                                                                                    want):
    """libgomp (loaded with a compiled backend) reads fastbp's spin count unless the user chose
    a policy; os.environ is the user's after importing fastbp and loading every backend."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = ("import os; before = dict(os.environ); import fastbp\n"
            "same = [dict(os.environ) == before]\n"
            "import numpy as np\n"
            "for b in fastbp.available_backends():\n"
            "    fastbp.linear_head(np.ones((2, 2)), np.ones((3, 2)), None, [0, 1], backend=b)\n"
            "    same.append(dict(os.environ) == before)\n"
            "from fastbp.backends import c_kernels\n"
            "print(all(same), c_kernels.lib.fbp_spin_at_load())")
    out = subprocess.run([sys.executable, "-c", code], env={**env, **user_env},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", str(want)]


def test_info_says_which_tuning_is_in_force_and_where_it_came_from():
    from fastbp.backends import tuning
    t = fastbp.info()["tuning"]
    assert t["isa"] == tuning.host_isa() and t["isa"] in tuning.ISAS
    assert t["own_products"] == {b: t["isa"] in T.OWN_ISAS for b, T in tuning.TUNING.items()}
    assert t["fused_windows"] == {b: t["isa"] in T.FUSED_ISAS for b, T in tuning.TUNING.items()}
    assert t["fused_tile"] == t["isa"]          # (no test leaves another kernel set in force)
    assert "tuning.py" in t["thresholds"]["source"] and t["thresholds"]["path"] is None
    assert t["thresholds"]["in_force"] == {     # (the sessions run the shipped values)
        b: {k: getattr(T, k) for k in tuning.MEASURED} for b, T in tuning.TUNING.items()}
    assert t["score_block_bytes"] > 0
