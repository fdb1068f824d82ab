"""The C backend's build: optional at install, and present wherever a compiler was.

A test session refuses to start without every compiled backend (the repository's conftest.py)
unless FASTBP_ALLOW_MISSING names it, so a C extension that silently failed to build turns the
run red instead of quietly dropping the backend's tests.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp

# the C backend's tests, which `make test-asan` runs under the sanitizers
pytestmark = pytest.mark.asan

ROOT = Path(__file__).resolve().parents[1]


# A sitecustomize that makes the C extension unimportable, as a failed build would.
_BREAK_C = """
import sys
class _NoC:
    def find_spec(self, name, path=None, target=None):
        if name == "fastbp.backends._fastbp_c":
            raise ImportError("simulated: the C extension was not built")
sys.meta_path.insert(0, _NoC())
"""


@pytest.mark.fresh_process
@pytest.mark.skipif("c" not in fastbp.available_backends(),
                    reason="a machine without a compiler runs without C (the next test)")
def test_a_session_without_a_compiled_backend_fails_unless_allowed(tmp_path):
    """pytest's header names the backends under test; where a compiler exists, a missing
    compiled backend stops the session with the reason, and FASTBP_ALLOW_MISSING=c is the
    explicit opt-out."""
    (tmp_path / "sitecustomize.py").write_text(_BREAK_C)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("FASTBP_ALLOW_MISSING", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
           "tests/test_gradcheck.py"]
    refused = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "backend(s) c failed to build or load" in refused.stdout + refused.stderr
    allowed = subprocess.run(cmd, cwd=ROOT, env=dict(env, FASTBP_ALLOW_MISSING="c"),
                             capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "fastbp backends under test: numba, numpy" in allowed.stdout
    assert "'c' is missing (allowed: FASTBP_ALLOW_MISSING)" in allowed.stdout
    plain = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "fastbp backends under test: c, numba, numpy" in plain.stdout


@pytest.mark.fresh_process
def test_a_session_on_a_machine_without_a_compiler_runs_and_says_so(tmp_path):
    """No C compiler on the PATH (CC names none) and no C extension: the session runs the
    other backends, and says loudly, in its header and at its end, that C was not tested."""
    (tmp_path / "sitecustomize.py").write_text(_BREAK_C)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), CC="no-such-compiler-here")
    env.pop("FASTBP_ALLOW_MISSING", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                          "tests/test_gradcheck.py"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    head, _, tail = run.stdout.partition("test_gradcheck.py")
    assert "fastbp backends under test: numba, numpy" in head
    assert "THE C BACKEND WAS NOT TESTED: NO C COMPILER WAS FOUND" in head
    assert "fastbp backend 'c' was not tested" in tail
    assert "no C compiler was found (CC='no-such-compiler-here'" in tail


@pytest.mark.fresh_process
def test_install_without_a_compiler_drops_only_the_c_backend(tmp_path):
    """pip install with CC=false succeeds (the extension is optional=True); that install has
    no "c" backend, and asking for it raises BackendUnavailable saying why."""
    pytest.importorskip("setuptools")
    src, site = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.nbi", "*.nbc")
    for tree in ("fastbp", "csrc"):
        shutil.copytree(ROOT / tree, src / tree, ignore=ignore)
    env = dict(os.environ, CC="false", CXX="false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
         "--no-index", "--target", str(site), str(src)],
        env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    assert not list((site / "fastbp").rglob("_fastbp_c*"))
    assert not list((site / "fastbp").rglob("_fastcall*"))
    probe = subprocess.run(
        [sys.executable, "-c",
         "import fastbp\n"
         "assert fastbp.__file__.startswith(%r), fastbp.__file__\n"
         "assert 'c' not in fastbp.available_backends(), fastbp.available_backends()\n"
         "try:\n"
         "    fastbp.set_backend('c')\n"
         "except fastbp.BackendUnavailable as exc:\n"
         "    print(exc)\n" % str(site)],
        env=dict(os.environ, PYTHONPATH=str(site)), cwd=tmp_path, capture_output=True,
        text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    assert "'c' is unavailable" in probe.stdout and "was not built" in probe.stdout


def _function_asm(path, name):
    """The disassembly (objdump, binutils: every C compiler's companion) of function ``name``
    in the shared library ``path`` ("" when the build has no such function)."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                         text=True, check=True).stdout
    start = out.find(f"<{name}>:\n")
    return "" if start < 0 else out[start:out.find("\n\n", start)]


def test_the_bfloat16_tile_multiplies_with_vdpbf16ps_on_zmm_registers():
    """csrc/dot16.h's tile (docs/performance.md, "bfloat16"): 6 x 4 accumulators, so the
    product with AVX512-BF16 holds at least 24 vdpbf16ps on zmm registers; its emulated twin
    none (its float32 multiply-adds instead; its AVX-512 clone read). GCC 10 or later builds
    the former on any x86-64."""
    c = pytest.importorskip("fastbp.backends.c_kernels")
    so = next(Path(c.__file__).parent.glob("_fastbp_c*.so"))
    hw = _function_asm(so, "dot16_product_hw")
    emu = _function_asm(so, "dot16_product_emu.avx512f") or _function_asm(so, "dot16_product_emu")
    assert emu and "vdpbf16ps" not in emu
    if c._DOT16_BUILT or hw:
        assert len(re.findall(r"vdpbf16ps\s+[^\n]*%zmm", hw)) >= 24
