"""``fastbp.info()``: what runs here -- versions, backends, threads, BLAS, CPU features."""
import importlib.util
import platform
import sys
from importlib import metadata

from . import _dispatch


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_features():
    try:
        from llvmlite import binding   # ships with numba, a dependency
        features = binding.get_host_cpu_features()
        wanted = ("sse4.2", "avx", "avx2", "fma", "avx512f", "neon", "sve")
        return {"name": binding.get_host_cpu_name(),
                "features": sorted(f for f in wanted if features.get(f))}
    except Exception as exc:   # informational only
        return {"error": f"{type(exc).__name__}: {exc}"}


def info():
    import threadpoolctl
    return {
        "fastbp": _version("fastbp"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {d: _version(d) for d in ("numpy", "numba", "scipy", "cffi", "threadpoolctl")},
        "backends": list(_dispatch.available_backends()),
        "unavailable": _dispatch.unavailable_backends(),
        "default_backend": _dispatch.get_backend(),
        "threads": _dispatch.get_num_threads(),
        "blas": [{k: lib.get(k) for k in ("internal_api", "version", "num_threads", "filepath")}
                 for lib in threadpoolctl.threadpool_info() if lib.get("user_api") == "blas"],
        # whose OpenBLAS each compiled backend's GEMMs run in ("numpy" or "scipy"), if loaded
        "c_blas": getattr(_dispatch._modules.get("c"), "BLAS", None),
        "numba_blas": getattr(_dispatch._modules.get("numba"), "BLAS", None),
        # whether the compiled entry of tiny linear_head calls (csrc/fastcall.c) was built
        "fastcall": importlib.util.find_spec("fastbp.backends._fastcall") is not None,
        "cpu": _cpu_features(),
        "tuning": _tuning(),
        "jax_path": _jax_path(),
    }


def _tuning():
    """What tuning.plan decides with here, and where it came from: the ISA whose kernels run
    (read from the CPU's flags), the C fused rows' kernel set (csrc/fused.h: the ISA's own
    unless c_kernels.set_tile chose another), per compiled backend whether its few-class fused
    windows (FUSED_ISAS) and its own products (OWN_ISAS) run on that ISA, and the thresholds
    `fastbp tune` measures (tuning.MEASURED): their values in force and where they came from
    (the shipped defaults of backends/tuning.py, or this CPU model's cache)."""
    from .backends import tuning
    isa = tuning.host_isa()
    c = _dispatch._modules.get("c")
    return {"isa": isa, "isa_source": "/proc/cpuinfo flags (GCC's resolver reads the same)",
            "fused_tile": c.tile() if c else isa,
            "fused_windows": {b: isa in t.FUSED_ISAS for b, t in tuning.TUNING.items()},
            "own_products": {b: isa in t.OWN_ISAS for b, t in tuning.TUNING.items()},
            "thresholds": {**tuning.SOURCE, "in_force": {
                b: {k: getattr(t, k) for k in tuning.MEASURED} for b, t in tuning.TUNING.items()}},
            "score_block_bytes": __import__("fastbp").config.score_block_bytes}


def _jax_path():
    """How fastbp.jax calls the kernels once imported: {"path": "xla_ffi" (the C kernels as
    XLA custom-call targets) or "callback" (jax.pure_callback), "why": the reason for the
    callback, else None}; None while fastbp.jax is not imported (info() imports no framework)."""
    module = sys.modules.get("fastbp.jax")
    return None if module is None else {"path": module.PATH, "why": module.PATH_REASON}
