"""tuning.plan, the one place a compiled backend chooses a path and a team, and the constants C
and Python share (csrc/fastbp.h's, compared at import): what each path forcing of cases.py
runs, csrc/fastcall.c's window, the team, the ISA, and an import that stops on a mismatch."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp.backends import tuning
from cases import BACKENDS, VARIANTS, variant

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

COMPILED = [b for b in BACKENDS if b != "numpy"]
needs_c = pytest.mark.skipif("c" not in COMPILED, reason="the C backend is not built")

# what each forced path of cases.py must make plan() choose at a small shape (4 threads)
_EXPECT = {"chunked": lambda p: p.path in ("chunked", "one_block"),
           "columns": lambda p: p.path == "columns",
           "parallel": lambda p: p.path == "fused" and p.blocks > 1,
           "own": lambda p: (p.path, p.own) == ("chunked", tuning.OWN_SCORES
                                                | tuning.OWN_BACKWARD),
           "ownscores": lambda p: p.path == "chunked" and p.own == tuning.OWN_SCORES}
_FORCED = [v for v in VARIANTS if ":" in v]


@pytest.mark.parametrize("name", _FORCED)
def test_each_forced_path_is_the_one_the_plan_takes(name):
    backend, _, path = name.partition(":")
    with variant(name):
        p = tuning.plan(backend, 64, 16, 12, np.float64, threads=4)
    assert _EXPECT[path](p), (name, p)


@pytest.mark.parametrize("backend", COMPILED)
def test_the_tiny_call_window_is_where_the_plan_runs_one_fused_block(backend):
    """csrc/fastcall.c runs a call on one block of fused rows exactly inside tiny_window (the
    thresholds it is passed): there plan() chooses the same, at any thread count."""
    max_w, few_n, few_d, few_w, max_work = tuning.tiny_window(backend)
    for B in (1, 7, 64, 300):
        for d in (1, 5, 64, 200, 3072):
            for n in (1, 3, 10, 40, 1000):
                inside = (n * d <= max_w or (n <= few_n and d >= few_d and n * d <= few_w)) \
                    and B * n * d < max_work
                for threads in (1, 2, 16):
                    p = tuning.plan(backend, B, d, n, np.float32, threads=threads)
                    if inside:
                        assert (p.path, p.blocks) == ("fused", 1), (B, d, n, threads, p)


@pytest.mark.parametrize("backend", COMPILED)
def test_the_team_follows_the_thread_count_and_the_shape(backend):
    T = tuning
    many = 4 * T.CHUNKED_MIN_CLASSES
    p = tuning.plan(backend, 4096, 256, many, np.float32, chunk_rows=256, threads=16)
    assert (p.path, p.team, p.by_rows) == ("chunked", 4, False)      # n / CHUNKED_MIN_CLASSES
    p = tuning.plan(backend, 4096, 256, many, np.float32, chunk_rows=256, threads=3)
    assert p.team == 3                                                  # at most the threads
    few = 2 * T.CHUNKED_MIN_CLASSES - 1
    p = tuning.plan(backend, 4096, 256, few, np.float32, chunk_rows=64, threads=16)
    assert (p.team, p.by_rows) == (64 // T.CHUNKED_MIN_ROWS, True)     # by rows below 2x
    p = tuning.plan(backend, 4096, 256, few, np.float32, chunk_rows=64, threads=16,
                    filter_eps=1e-3)
    assert not p.by_rows                                                # filtering: by classes
    p = tuning.plan(backend, 2, 3, many, np.float32, chunk_rows=1, threads=16)
    assert p.team == 1                                                  # below CHUNKED_MIN_WORK


def test_the_isa_is_the_one_the_c_kernels_run():
    assert tuning.host_isa() in tuning.ISAS
    if "c" in COMPILED:
        from fastbp.backends.c_kernels import lib
        assert tuning.ISAS[lib.fbp_isa()] == tuning.host_isa()
    assert tuning.plan("c", 4, 4, 4, np.float32).tile == tuning.host_isa()


@needs_c
@pytest.mark.parametrize("cname", ["FBP_OWN_KV", "FBP_OWN_RA", "FBP_OWN_SCORES",
                                   "FBP_HEADS_PARALLEL_MIN", "FBP_REDUCE_NONE",
                                   "FBP_ARR_WEIGHT"])
def test_every_shared_constant_is_compared_at_import(cname, monkeypatch):
    from fastbp.backends import c_kernels
    consts = c_kernels.shared_constants()
    assert cname in consts
    c_kernels._check_abi()                               # as built: they agree
    monkeypatch.setattr(c_kernels, "shared_constants",
                        lambda: dict(consts, **{cname: consts[cname] + 1}))
    with pytest.raises(ImportError, match=cname):
        c_kernels._check_abi()


@needs_c
def test_a_constant_flipped_in_a_copy_stops_the_import(tmp_path):
    """A copy of the package whose tuning.py states HEADS_PARALLEL_MIN differently from
    csrc/fastbp.h (as built): importing its C backend fails and names the constant."""
    src = Path(fastbp.__file__).parent
    shutil.copytree(src, tmp_path / "fastbp", ignore=shutil.ignore_patterns("__pycache__"))
    tuning_py = tmp_path / "fastbp" / "backends" / "tuning.py"
    text = tuning_py.read_text()
    assert "HEADS_PARALLEL_MIN = 1 << 16" in text
    tuning_py.write_text(text.replace("HEADS_PARALLEL_MIN = 1 << 16",
                                      "HEADS_PARALLEL_MIN = 1 << 15"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "nb"))
    run = subprocess.run([sys.executable, "-c", "import fastbp.backends.c_kernels"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "ImportError: FBP_HEADS_PARALLEL_MIN: fastbp/ has 32768, csrc/fastbp.h has 65536" \
        in run.stderr, run.stderr[-2000:]


def test_one_def_plan_in_the_package():
    root = Path(fastbp.__file__).parent
    defs = [p.relative_to(root).as_posix() for p in root.rglob("*.py")
            if "\ndef plan(" in p.read_text()]
    assert defs == ["backends/tuning.py"]


@pytest.mark.parametrize("backend", COMPILED)
def test_own_products_only_on_the_isas_their_tile_suits(backend, monkeypatch):
    """At V (n d = 2^24 weights) the chunked path's scores run on fastbp's own products on
    AVX-512; on AVX2 (whose 16 registers the tile spills: 0.05x OpenBLAS, docs/performance.md)
    and the baseline, BLAS's."""
    for isa, want in (("avx512f", tuning.OWN_SCORES), ("avx2", 0), ("default", 0)):
        monkeypatch.setattr(tuning, "host_isa", lambda isa=isa: isa)
        p = tuning.plan(backend, 1024, 512, 32000, np.float32, threads=2)
        assert (p.path, p.tile, p.own & tuning.OWN_SCORES) == ("chunked", isa, want)


def test_the_c_fused_windows_follow_fused_isas(monkeypatch):
    """C float32 (256 x 3072 x 10) on 1 and 2 threads and D (64 x 64 x 10) take C's fused rows
    on each ISA of FUSED_ISAS (every one: each has its kernel set, csrc/fused.h) and BLAS's
    products on an ISA left out of it; 16 classes take BLAS's. Tiny weights stay fused, and
    Numba's rows (compiled for the host) everywhere; the fast entry's window follows."""
    assert tuning.C.FUSED_ISAS == tuning.ISAS
    for isa in tuning.ISAS:
        monkeypatch.setattr(tuning, "host_isa", lambda isa=isa: isa)
        for gated in (False, True):
            monkeypatch.setattr(tuning.C, "FUSED_ISAS",
                                tuple(i for i in tuning.ISAS if i != isa or not gated))
            fused = not gated
            for t in (1, 2):
                assert (tuning.plan("c", 256, 3072, 10, np.float32, threads=t).path
                        == "fused") == fused
            assert (tuning.plan("c", 64, 64, 10, np.float64, threads=1).path == "fused") == fused
            assert (tuning.tiny_window("c")[1] > 0) == fused
            assert tuning.plan("c", 256, 3072, 16, np.float32, threads=1).path == "chunked"
            assert tuning.plan("c", 5, 4, 3, np.float64, threads=2).path == "fused"
            assert tuning.plan("numba", 256, 3072, 10, np.float32, threads=2).path == "fused"


@pytest.mark.parametrize("backend", COMPILED)
def test_a_call_held_to_one_thread_runs_no_team(backend):
    """threads=1 (the last layer inside a BLAS-driven network): neither fused blocks nor a
    chunked team beyond it, whatever the backend's thread count."""
    p = tuning.plan(backend, 256, 100, 600, np.float64, threads=16, fused_threads=1)
    assert p.team == 1 and p.blocks <= 1
    assert tuning.plan(backend, 256, 100, 600, np.float64, threads=16).team > 1
