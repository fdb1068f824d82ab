"""Public head functions (docs/api.md section 1), one per entry of the registry: check -> dispatch.

Each is generated from its ``fastbp._registry.SPECS`` entry with a real signature (the head's
options as keyword arguments with their defaults), as ``dataclasses`` generates methods: a new
head needs no code here.
"""
import numpy as np

from . import _bf16, _checks
from ._dispatch import backend_module
from ._registry import SPECS


def _run(name, S, target, reduction, out, backend, grad_dtype=None, **options):
    if grad_dtype is not None or _bf16.involved(S, target, *options.values()):
        return _in_dtype(name, S, target, reduction, out, backend, grad_dtype, options)
    S, target, opts, reduction, buf, shape = _checks.check_head(name, S, target, options,
                                                                reduction, out)
    dS = buf if buf is not None else np.empty(S.shape, S.dtype)
    loss = backend_module(backend).head(name, S, target, dS, reduction, opts)
    return loss, (out if out is not None else dS.reshape(shape))


def _in_dtype(name, S, target, reduction, out, backend, grad_dtype, options):
    """A bfloat16 call (docs/api.md, "bfloat16"): the head in float32 on the arrays' values,
    dS in ``grad_dtype`` or S's dtype, rounded once."""
    arrays = {"S": S, "target": target, **options}
    partner = next((k for k, a in arrays.items() if _bf16.involved(a)), None)
    want = _bf16.grad_dtype(grad_dtype) or np.asarray(S).dtype
    if partner:                 # (else a float32 / float64 call: dS converted at the end only)
        S, target = (_bf16.head_array(k, arrays[k], partner) for k in ("S", "target"))
        options = {k: _bf16.head_array(k, v, partner) for k, v in options.items()}
    loss, dS = _run(name, S, target, reduction, None, backend, **options)
    return loss, _bf16.result(dS, want, out, "out")


_TEMPLATE = '''
def {name}({S}, {T}, *, {options}reduction="mean", out=None, backend=None, grad_dtype=None):
    return _run("{name}", {S}, {T}, reduction, out, backend, grad_dtype, {passed})
'''


def _define(name, spec):
    options = "".join(f"{k}={o.default!r}, " for k, o in spec.options.items())
    passed = ", ".join(f"{k}={k}" for k in spec.options)
    namespace = {"_run": _run}
    exec(_TEMPLATE.format(name=name, S=spec.scores_name, T=spec.target_name, options=options,
                          passed=passed), namespace)
    func = namespace[name]
    func.__module__ = __name__
    func.__doc__ = spec.doc + "\n\n    Returns ``(loss, dS)``; formulas: docs/math.md.\n"
    return func


__all__ = list(SPECS)
for _name, _spec in SPECS.items():
    globals()[_name] = _define(_name, _spec)
