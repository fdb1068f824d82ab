"""Only the compiled extensions (all metadata lives in pyproject.toml): the C backend's cffi
module, and _fastcall, its CPython entry for tiny linear_head calls (csrc/fastcall.c). Both are
optional: without a C compiler the install still succeeds, without them."""
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# the compiler flags, stated once in the cffi build script (loaded by path, as cffi_modules is)
_spec = importlib.util.spec_from_file_location("_cbuild", "fastbp/backends/_cbuild.py")
_cbuild = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cbuild)


class ParallelBuildExt(build_ext):
    """An extension's C files compiled at once, one per core, the largest first (linear.c is
    most of the C backend's build: serially the install took ~50 s longer on 2 cores)."""

    def build_extension(self, ext):
        compile_one = self.compiler.compile

        def compile_all(sources, **kw):
            order = sorted(sources, key=lambda s: -os.path.getsize(s) if os.path.exists(s) else 0)
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                objects = dict(zip(order, pool.map(lambda s: compile_one([s], **kw)[0], order)))
            return [objects[s] for s in sources]

        self.compiler.compile = compile_all
        try:
            return super().build_extension(ext)
        finally:
            del self.compiler.compile


setup(
    cmdclass={"build_ext": ParallelBuildExt},
    cffi_modules=["fastbp/backends/_cbuild.py:ffibuilder"],
    ext_modules=[Extension("fastbp.backends._fastcall", ["csrc/fastcall.c"],
                           include_dirs=["csrc", numpy.get_include()],
                           extra_compile_args=_cbuild.CFLAGS, extra_link_args=_cbuild.LDFLAGS,
                           optional=True)],
)
