"""The backends: ``reference`` (NumPy), ``numba_kernels``, ``c_kernels`` (same kernel set).

Importing this package (which every backend import does first) sets fastbp's OpenMP default.
"""
import os

# OpenMP threads (libgomp's: the C backend's and Numba's) spin up to 300,000 times waiting for
# the next parallel region by default. Next to BLAS that is a fight for the cores: right after a
# numpy matmul (OpenBLAS's threads then spin too) a C head of 37 us took 3.9-7.8 ms, a time
# slice (`python benchmarks/threads.py`). 1000 spins still bridge back-to-back
# calls (no cost measured) and then yield: 50-150 us after the matmul. OMP_WAIT_POLICY=passive
# would cost 50 us on every call instead. libgomp reads this once, when it loads: so before the
# first compiled backend loads (this package is imported first), and only if the user chose no
# policy.
_GOMP_SPINCOUNT = "1000"
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", _GOMP_SPINCOUNT)
