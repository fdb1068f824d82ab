"""The backends: ``reference`` (NumPy), ``numba``, ``c_kernels``: the kernel set of
``interface.Backend``.

Importing this package (which every backend import does first) sets fastbp's OpenMP default.
"""
import os

# OpenMP threads (libgomp's: the C backend's and Numba's) spin for a long time waiting for the
# next parallel region, which next to BLAS's spinning threads is a fight for the cores; a short
# spin still bridges back-to-back calls (docs/performance.md, "Threads next to the user's own
# NumPy"). libgomp reads this once, when it loads: so before the first compiled backend loads
# (this package is imported first), and only if the user chose no policy.
_GOMP_SPINCOUNT = "1000"
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", _GOMP_SPINCOUNT)
