"""The cffi build script of the C backend (API mode, compiled by ``pip install`` through
setup.py's ``cffi_modules``; never at import).

The extension is optional: without a C compiler the install still succeeds and ``"c"`` is absent
from ``fastbp.available_backends()``. Flags: ``-O3 -fopenmp`` and no ``-march=native`` (the hot
loops carry their own AVX2 / AVX-512 clones, picked at load time: csrc/common.h). Extra flags
for both compiling and linking come from ``FASTBP_CFLAGS`` at build time, e.g.
``FASTBP_CFLAGS=-march=native`` or the sanitizers of ``make test-asan``.
"""
import os
import pathlib
import shlex

from cffi import FFI

CSRC = "csrc"                       # relative to the project root, where setup.py runs
SOURCES = ["runtime.c", "heads.c", "linear.c", "mlp.c", "xla_ffi.c"]
# fastbp.h is written so that cffi parses it as is (prototypes, enums, integer #defines)
HEADER = pathlib.Path(__file__).resolve().parents[2] / CSRC / "fastbp.h"

extra = shlex.split(os.environ.get("FASTBP_CFLAGS", ""))
# Every C file's flags (setup.py compiles csrc/fastcall.c with these too).
# -fno-trapping-math / -fno-math-errno: FP exception flags and errno are never read; they let the
# NaN-faithful selects and sqrt of the hot loops vectorize (results are unchanged).
# -ffp-contract=fast: -std=c99 would otherwise forbid fusing a * b + c into one FMA, and the
# fused rows of linear.c are FMA-bound (docs/performance.md); an FMA rounds once instead of
# twice, so results move by an ulp's order, the same bits run to run.
CFLAGS = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=fast", *extra]
LDFLAGS = extra
ffibuilder = FFI()
ffibuilder.cdef(HEADER.read_text())
ffibuilder.set_source(
    "fastbp.backends._fastbp_c",
    '#include "fastbp.h"',
    sources=[f"{CSRC}/{name}" for name in SOURCES],
    include_dirs=[CSRC],
    extra_compile_args=[*CFLAGS, "-fopenmp", "-std=c99"],     # (OpenMP: the kernels' threads)
    extra_link_args=["-fopenmp", *LDFLAGS],
    optional=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
