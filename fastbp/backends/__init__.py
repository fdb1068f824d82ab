"""The backends: ``reference`` (NumPy), ``numba``, ``c_kernels``: the kernel set of
``interface.Backend``. Importing this package has no side effect; ``spin_policy`` is fastbp's
OpenMP default, in force only while a compiled backend loads libgomp.
"""
import contextlib
import os

# OpenMP threads (libgomp's: the C backend's and Numba's) spin for a long time waiting for the
# next parallel region, which next to BLAS's spinning threads is a fight for the cores; a short
# spin still bridges back-to-back calls (docs/performance.md, "Threads next to the user's own
# NumPy"). libgomp reads it once, when it loads.
_GOMP_SPINCOUNT = "1000"


@contextlib.contextmanager
def spin_policy():
    """GOMP_SPINCOUNT = _GOMP_SPINCOUNT in the environment while libgomp loads inside, unless
    the user chose a policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT); os.environ as it was after."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = _GOMP_SPINCOUNT
    try:
        yield
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)
