"""The exceptions fastbp raises besides ValueError / TypeError."""


def human_bytes(nbytes):
    """Decimal units with three significant digits: 1342177280000 -> '1.34 TB'."""
    value = float(nbytes)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 999.5 or unit == "PB":
            break
        value /= 1000.0
    if unit == "B":
        return f"{int(value)} B"
    return f"{value:.3g} {unit}"


class JacobianTooLarge(MemoryError):
    """The naive path was asked to build a Jacobian larger than its memory limit."""

    def __init__(self, what, needed_bytes, limit_bytes):
        self.needed_bytes = int(needed_bytes)
        self.limit_bytes = int(limit_bytes)
        super().__init__(
            f"{what} needs {human_bytes(needed_bytes)} of dense Jacobians, above the limit of "
            f"{human_bytes(limit_bytes)} (max_bytes); the fused path computes the same gradient "
            f"without them")


def missing_extra(what, module, extra):
    """The message of an ImportError for an optional dependency: what needs it and the extra
    that installs it (``pip install 'fastbp[plot]'``)."""
    return (f"{what} needs {module}, which is not installed: pip install 'fastbp[{extra}]' "
            f"(or pip install {module})")


def require(module, extra, what):
    """``import module``, or an ImportError naming the extra that installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(missing_extra(what, module.split(".")[0], extra)) from exc


class BackendUnavailable(RuntimeError):
    """A backend that exists but cannot be loaded on this machine."""


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with central finite differences."""
