"""The compile options of every kernel of this package, and the on-disk cache they share.

Numba keys a cached function on its own source file only, but these kernels compile in values
from other files: each other's code (a caller embeds its callees), ``tuning.py``'s thresholds,
``_registry.py``'s head codes, ``config.FASTMATH``. So the cache of this package lives in a
directory named by a hash of every fastbp source file the package imports, directly or not
(``SOURCES``): an edit to any of them starts a new, empty cache, never a stale one.
"""
import ast
import hashlib
import os
import shutil

import numba as nb
from numba.core import caching

from ... import config

OPTS = dict(cache=True, fastmath=set(config.FASTMATH), error_model="numpy", nogil=True)
jit = nb.njit(**OPTS)
pjit = nb.njit(parallel=True, **OPTS)
inline = nb.njit(inline="always", **OPTS)     # inlined into the caller (no call, no pack copy)

HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(HERE))          # the fastbp package
_PACKAGE = "fastbp"


def _imports(path, module):
    """The fastbp modules a source file imports (relative or absolute), as dotted names."""
    found = set()
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[:len(module.split(".")) - node.level
                                          + path.endswith("__init__.py")]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if node.module:     # (a parent package's __init__ is run, not compiled in)
                found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)   # `from . import x`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n for n in found if n == _PACKAGE or n.startswith(_PACKAGE + ".")}


def _source_of(module):
    """The file of a fastbp module, or None (a name imported from a module, not a module)."""
    rel = os.path.join(*module.split(".")[1:]) if "." in module else ""
    for path in (os.path.join(_ROOT, rel, "__init__.py"), os.path.join(_ROOT, rel + ".py")):
        if os.path.isfile(path):
            return path
    return None


def sources():
    """Every fastbp source file this package compiles from: its own modules and, transitively,
    the fastbp modules they import (sorted paths)."""
    todo = [f"{_PACKAGE}.backends.numba.{os.path.splitext(f)[0]}" if f != "__init__.py"
            else f"{_PACKAGE}.backends.numba" for f in os.listdir(HERE) if f.endswith(".py")]
    seen, files = set(), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _source_of(module)
        if path is not None:
            files.add(path)
            todo.extend(_imports(path, module))
    return sorted(files)


def _hash():
    digest = hashlib.sha256()
    for path in sources():
        digest.update(os.path.relpath(path, _ROOT).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:20]


SOURCES_HASH = _hash()


def _cache_roots():
    """Where the cache may go, in order: NUMBA_CACHE_DIR, the package's __pycache__, the
    user's cache directory."""
    if nb.config.CACHE_DIR:
        yield nb.config.CACHE_DIR, False
    yield os.path.join(HERE, "__pycache__"), True
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    yield os.path.join(base, "fastbp"), False


class SourcesLocator(caching._CacheLocator):
    """Numba's cache locator for this package's functions: ``<root>/numba-<SOURCES_HASH>``."""

    def __init__(self, py_func, py_file, root):
        self._py_file = py_file                 # (Numba's warnings name it)
        self._lineno = py_func.__code__.co_firstlineno
        self._path = os.path.join(root, f"numba-{SOURCES_HASH}")

    def get_cache_path(self):
        return self._path

    def get_source_stamp(self):
        return SOURCES_HASH

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != HERE:
            return None                 # not a kernel of this package: Numba's own locators
        for root, own in _cache_roots():
            self = cls(py_func, py_file, root)
            try:
                fresh = not os.path.isdir(self._path)
                self.ensure_cache_path()
            except OSError:
                continue
            if fresh and own:
                _prune(root, self._path)
            return self
        return None


def _prune(root, keep):
    """Drop the package's own caches of older sources (best effort: another process may be
    doing the same)."""
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith("numba-") and path != keep:
            shutil.rmtree(path, ignore_errors=True)


# Ahead of Numba's own locators, in the list every cache consults (CacheImpl since Numba 0.61,
# _CacheImpl before; tests/test_numba_cache.py checks the kernels really land there).
_IMPL = getattr(caching, "CacheImpl", None) or caching._CacheImpl
if SourcesLocator not in _IMPL._locator_classes:
    _IMPL._locator_classes.insert(0, SourcesLocator)
