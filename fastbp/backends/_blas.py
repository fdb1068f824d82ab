"""Which BLAS the compiled backends' products run in: NumPy's own OpenBLAS where NumPy has one,
else SciPy's (``scipy.linalg.cython_blas``).

NumPy's copy is preferred: OpenBLAS's threads spin for a while after each call, so two OpenBLAS
copies in one process fight for the cores (docs/performance.md, "Threads next to the user's
own NumPy"); with NumPy's, the user's matmuls and fastbp's products share one pool.
"""
import ctypes
import pathlib

import numpy as np


def capsule_address(name):
    """The C function pointer inside scipy.linalg.cython_blas's capsule ``name`` (Fortran
    ``?gemm`` with 32-bit ints)."""
    from scipy.linalg import cython_blas
    capsule = cython_blas.__pyx_capi__[name]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


def _openblas(package):
    """ctypes.CDLL of the OpenBLAS that ``package`` (numpy or scipy) bundles, or None."""
    import threadpoolctl
    # wheels put it in numpy.libs/ beside the package (Linux, Windows) or in numpy/.dylibs
    # (macOS): both paths start with the package's
    prefix = str(pathlib.Path(package.__file__).resolve().parent)
    for info in threadpoolctl.threadpool_info():
        path = info.get("filepath") or ""
        if info.get("internal_api") == "openblas" and path.startswith(prefix):
            try:
                return ctypes.CDLL(path)
            except OSError:
                return None
    return None


def numpy_gemms():
    """The (sgemm, dgemm) addresses of NumPy's own OpenBLAS when it is the scipy-openblas64
    build NumPy's wheels bundle (Fortran ``scipy_?gemm_64_``, 64-bit ints), else None."""
    blas = _openblas(np)
    try:
        return tuple(ctypes.cast(getattr(blas, f"scipy_{t}gemm_64_"), ctypes.c_void_p).value
                     for t in "sd") if blas is not None else None
    except AttributeError:
        return None


def thread_controls(which):
    """(openblas_set_num_threads, openblas_get_num_threads) of the OpenBLAS the products run in
    (``which``: "numpy" or "scipy"), as addresses, or (None, None) when it is not an OpenBLAS
    whose symbols are found (the kernels then leave BLAS's threads alone)."""
    if which == "numpy":
        blas = _openblas(np)
    else:
        import scipy
        blas = _openblas(scipy)
    for prefix in ("", "scipy_"):                 # the affixes threadpoolctl looks for too
        for suffix in ("", "64_", "_64"):
            try:
                return tuple(ctypes.cast(getattr(blas, f"{prefix}openblas_{op}_num_threads"
                                                       f"{suffix}"), ctypes.c_void_p).value
                             for op in ("set", "get"))
            except AttributeError:
                continue
    return None, None


def gemms(numpy=True):
    """(sgemm, dgemm, ilp64, "numpy" or "scipy"): NumPy's GEMMs if ``numpy`` and found, else
    SciPy's."""
    found = numpy_gemms() if numpy else None
    if found is not None:
        return found + (True, "numpy")
    return capsule_address("sgemm"), capsule_address("dgemm"), False, "scipy"
