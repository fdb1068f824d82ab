"""Backend registry, the default backend, and the one thread knob.

A backend is a module under ``fastbp.backends`` exposing the same kernel functions (the
protocol ``backends/interface.py`` states the set and their signatures). The compiled backends
are imported on first use, never at ``import fastbp`` (the plain-NumPy reference too), so a slow
or broken backend costs nothing until it is asked for.
"""
import contextlib
import contextvars
import importlib
import os

from .errors import BackendUnavailable

# name -> module; order of preference for "auto" (fastest first). New backends add a line here.
_REGISTRY = {
    "numpy": "fastbp.backends.reference",
    "numba": "fastbp.backends.numba",
    "c": "fastbp.backends.c_kernels",
}
# "c" first: the faster compiled backend in most of RESULTS.md's groups (its "Which backend
# auto picks" table shows each group, the few where numba measured faster included)
_PREFERENCE = ("c", "numba", "numpy")

_modules = {}       # name -> loaded module
_why_not = {}       # name -> reason it could not load
# the set_backend setting and where it came from (named in errors)
_default = {"name": os.environ.get("FASTBP_BACKEND", "auto"), "source": "FASTBP_BACKEND"}
_override = contextvars.ContextVar("fastbp_backend", default=None)   # use_backend, per context


def _load(name):
    if name in _modules:
        return _modules[name]
    if name not in _why_not:
        try:
            module = importlib.import_module(_REGISTRY[name])
        except Exception as exc:  # a backend that cannot load is only absent, never fatal
            _why_not[name] = f"{type(exc).__name__}: {exc}"
        else:
            _modules[name] = module
            _apply_threads(module)
            return module
    raise BackendUnavailable(f"backend {name!r} is unavailable on this machine: {_why_not[name]}")


_available = [None, ()]   # (registry size, preference order) it was computed for, the names


def available_backends():
    """Names of the backends that load here, fastest first (``"numpy"`` is always present)."""
    key = (len(_REGISTRY), _PREFERENCE)     # every registered backend has been tried by then
    if _available[0] == key:
        return _available[1]
    names = []
    for name in sorted(_REGISTRY, key=_PREFERENCE.index):
        try:
            _load(name)
        except BackendUnavailable:
            continue
        names.append(name)
    _available[:] = key, tuple(names)
    return _available[1]


def unavailable_backends():
    """``{name: reason}`` for registered backends that failed to load."""
    available_backends()
    return dict(_why_not)


def _resolve(name, source="backend"):
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a backend name (str), got {type(name).__name__}")
    if name == "auto":
        return available_backends()[0]
    if name not in _REGISTRY:
        choices = ", ".join(repr(n) for n in ("auto",) + tuple(_REGISTRY))
        raise ValueError(f"{source} must be one of {choices}, got {name!r}")
    _load(name)
    return name


def _requested():
    """(name, where it came from) of the default backend, before "auto" is resolved."""
    override = _override.get()
    if override is not None:
        return override, "backend"
    return _default["name"], _default["source"]


def get_backend():
    """The backend a call with ``backend=None`` uses, resolved (``"auto"`` -> the fastest)."""
    return _resolve(*_requested())


def set_backend(name):
    """Set the default backend for every thread: a name of ``available_backends()`` or "auto"."""
    _resolve(name)
    _default.update(name=name, source="backend")


@contextlib.contextmanager
def use_backend(name):
    """``with fastbp.use_backend("numpy"): ...`` -- the default inside the block (this context
    only)."""
    _resolve(name)
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)


def backend_module(name=None):
    """The module that runs a call: ``name`` (validated) or the current default."""
    if name.__class__ is str and name in _modules:      # a loaded backend's name: done
        return _modules[name]
    return _modules[get_backend() if name is None else _resolve(name)]


# ---------------------------------------------------------------------------- threads
def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_threads = [None]   # None until set_num_threads: leave every pool at its own default


def _apply_threads(module=None):
    if _threads[0] is None:
        return
    import threadpoolctl
    # Without a `with`, the limit stays in force (for the BLAS libraries loaded so far; a backend
    # that loads later re-applies it through _load).
    threadpoolctl.threadpool_limits(limits=_threads[0], user_api="blas")
    for mod in ([module] if module is not None else _modules.values()):
        hook = getattr(mod, "set_num_threads", None)
        if hook is not None:
            hook(_threads[0])


def set_num_threads(n):
    """One knob for every thread pool fastbp uses: BLAS, Numba and OpenMP."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    _threads[0] = n
    _apply_threads()


def get_num_threads():
    return _cpu_count() if _threads[0] is None else _threads[0]
