"""No leaks: a process's resident set stays flat over 20,000 tiny and 200 large calls of every
compiled backend's kernels, and the C kernels hold no scratch after returning (their allocator
counts it exactly). Each backend runs in a fresh interpreter, so nothing else moves its RSS."""
import os
import subprocess
import sys

import pytest

import fastbp

pytestmark = pytest.mark.fresh_process      # every test here starts fresh processes

# Under NUMBA_DISABLE_JIT (make test's second pass) Numba runs as plain Python: no threads, no
# compiled memory, nothing for these cases to check.
COMPILED = [pytest.param(b, marks=pytest.mark.skipif(
                b == "numba" and os.environ.get("NUMBA_DISABLE_JIT") == "1",
                reason="NUMBA_DISABLE_JIT: the Numba backend runs interpreted"))
            for b in fastbp.available_backends() if b != "numpy"]

SCRIPT = r"""
import sys
import numpy as np, fastbp

backend = sys.argv[1]
fastbp.set_backend(backend)
rng = np.random.default_rng(0)
tiny = (rng.standard_normal((5, 4)), rng.standard_normal((3, 4)), np.zeros(3),
        rng.integers(0, 3, 5))
big = (rng.standard_normal((512, 256)), rng.standard_normal((2000, 256)) / 16, np.zeros(2000),
       rng.integers(0, 2000, 512))
S, Z = rng.standard_normal((64, 100)), rng.random((64, 100))
net = fastbp.MLP([4, 8, 3], dtype="float64")
opt = fastbp.SGD(lr=0.01, momentum=0.9)


def tiny_calls():
    fastbp.linear_head(*tiny)
    fastbp.linear_head(*tiny, "multiclass_hinge", weight=np.ones(3))
    fastbp.sigmoid_focal(S[:4, :3], Z[:4, :3])
    net.step(tiny[0], tiny[3], optimizer=opt)


def big_calls():
    fastbp.linear_head(*big)
    fastbp.linear_head(*big, chunk_rows=100)
    fastbp.huber(S, Z)


def rss():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1]) * 1024


for _ in range(200):               # warm-up: compilation, BLAS buffers, allocator pools
    tiny_calls()
for _ in range(5):
    big_calls()
before = rss()
for _ in range(5000):
    tiny_calls()                   # 4 calls each: 20,000
for _ in range(67):
    big_calls()                    # 3 calls each: 201
grown = rss() - before
scratch = None
if backend == "c":
    from fastbp.backends import c_kernels
    scratch = c_kernels.scratch_bytes(reset=True)     # what is still held: must be 0
print(grown, scratch)
"""


@pytest.mark.parametrize("backend", COMPILED)
def test_rss_is_flat_over_many_calls(backend, tmp_path):
    script = tmp_path / "leak_case.py"
    script.write_text(SCRIPT)
    run = subprocess.run([sys.executable, str(script), backend], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    grown, scratch = run.stdout.split()
    print(f"{backend}: RSS grew {int(grown) / 1e6:.2f} MB over 20,000 tiny and 201 large calls; "
          f"C scratch still held: {scratch}")
    # a leak of one small array per tiny call would be 20,000 x >= 100 B = 2 MB at least
    assert int(grown) < 2_000_000
    if backend == "c":
        assert scratch == "0"
