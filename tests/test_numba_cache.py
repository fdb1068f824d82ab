"""Numba's on-disk cache of the numba backend cannot go stale: its directory is named by a
hash of every source the kernels compile in, not only the kernel's own file (Numba's rule)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastbp

pytestmark = pytest.mark.skipif("numba" not in fastbp.available_backends()
                                or os.environ.get("NUMBA_DISABLE_JIT") == "1",
                                reason="needs compiled Numba")

_RUN = r"""
import json, numpy as np, fastbp
from fastbp.backends.numba import _jit, mlp
rng = np.random.default_rng(0)
X, W, b = rng.standard_normal((6, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
A, _ = fastbp.linear_act_forward(X, W, b, "relu", backend="numba")
print(json.dumps({"file": fastbp.__file__, "hash": _jit.SOURCES_HASH,
                  "relu": bool(np.allclose(A, np.maximum(X @ W.T + b, 0), rtol=1e-12)),
                  "hits": sum(mlp.bias_activate.stats.cache_hits.values()),
                  "misses": sum(mlp.bias_activate.stats.cache_misses.values()),
                  "path": _jit.SourcesLocator.from_function(mlp.bias_activate.py_func,
                                                            mlp.__file__).get_cache_path()}))
"""


def _run(root):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env["PYTHONPATH"] = str(root)
    out = subprocess.run([sys.executable, "-c", _RUN], cwd=root, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_edit_to_a_constant_in_another_file_recompiles(tmp_path):
    """A copy of the package; the kernel bias_activate (numba/mlp.py) compiles in the
    activation codes of fastbp/_registry.py. Swapping two codes there, in the copy, must
    recompile it: a cache keyed on mlp.py alone would run the old code, which reads relu's
    new code as tanh's."""
    src = os.path.dirname(fastbp.__file__)
    shutil.copytree(src, tmp_path / "fastbp", ignore=shutil.ignore_patterns("__pycache__"))
    first = _run(tmp_path)
    assert first["file"].startswith(str(tmp_path)) and first["relu"]
    assert first["misses"] == 1 and first["path"].startswith(str(tmp_path))
    again = _run(tmp_path)                              # the same sources: from the cache
    assert again["relu"] and again["hits"] == 1 and again["misses"] == 0
    assert again["hash"] == first["hash"]

    registry = tmp_path / "fastbp" / "_registry.py"
    text = registry.read_text()
    swapped = (text.replace('ActivationSpec(1, "TANH")', 'ActivationSpec(2, "TANH")')
               .replace('ActivationSpec(2, "RELU", init="he")',
                        'ActivationSpec(1, "RELU", init="he")'))
    assert swapped != text
    registry.write_text(swapped)
    edited = _run(tmp_path)
    assert edited["hash"] != first["hash"]
    assert edited["misses"] == 1 and edited["hits"] == 0       # compiled anew
    assert edited["relu"], "a stale kernel ran: relu's new code was read as tanh's"
    assert not os.path.exists(first["path"])                    # the old cache is pruned


def test_the_cache_hash_covers_every_source_the_kernels_import():
    """sources() follows the package's imports: the registry, tuning thresholds, config's
    FASTMATH and the pack's fields are in it; the public modules it never imports are not."""
    from fastbp.backends.numba import _jit
    names = {os.path.relpath(p, os.path.dirname(fastbp.__file__)) for p in _jit.sources()}
    assert {"_registry.py", "config.py", "backends/tuning.py", "backends/_args.py",
            "backends/numba/rows.py", "backends/numba/linear.py"} <= names
    assert not {"cli.py", "model.py", "torch.py", "backends/c_kernels.py"} & names
    assert np.all([os.path.isfile(p) for p in _jit.sources()])
