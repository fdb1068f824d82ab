"""Only for cffi_modules (the C backend's extension); all metadata lives in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["fastbp/backends/_cbuild.py:ffibuilder"])
