"""Only the compiled extensions (all metadata lives in pyproject.toml): the C backend's cffi
module, and _fastcall, its CPython entry for tiny linear_head calls (csrc/fastcall.c). Both are
optional: without a C compiler the install still succeeds, without them."""
import os
import shlex

import numpy
from setuptools import Extension, setup

extra = shlex.split(os.environ.get("FASTBP_CFLAGS", ""))   # as _cbuild.py's (make test-asan)
setup(
    cffi_modules=["fastbp/backends/_cbuild.py:ffibuilder"],
    ext_modules=[Extension("fastbp.backends._fastcall", ["csrc/fastcall.c"],
                           include_dirs=["csrc", numpy.get_include()],
                           extra_compile_args=["-O2", *extra], extra_link_args=extra,
                           optional=True)],
)
