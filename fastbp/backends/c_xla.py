"""The C backend's side of fastbp.jax (the twin of csrc/xla_ffi.c): the XLA custom-call
targets' names and handlers, their attributes (the head, the reduction, the plan) and the order
of their operands. fastbp/jax.py holds only JAX's side (tracing, custom_vjp, vmap).

Nothing here imports JAX; the C backend is imported at the first call that needs it.
"""
import numpy as np

from .._registry import ARRAY_FIELDS, REDUCTIONS, SCALAR_FIELDS, SPECS
from . import tuning
from ._args import head_pack

# target name -> its code in csrc/fastbp.h
TARGETS = {"fastbp_linear_forward": "FBP_XLA_FORWARD", "fastbp_linear_loss": "FBP_XLA_LOSS",
           "fastbp_linear_rows": "FBP_XLA_ROWS", "fastbp_head": "FBP_XLA_HEAD"}
# the array options after the target, in csrc/xla_ffi.c's order (fastbp.h's FBP_ARR_* bits)
ARRAY_OPTIONS = ARRAY_FIELDS[2:]


def _c():
    from .. import _dispatch
    return _dispatch.backend_module("c")


def api_version():
    """(major, minor) of the XLA FFI API the handlers were written for."""
    c = _c()
    v = c.ffi.new("int[2]")
    c.lib.fbp_xla_api_version(v, v + 1)
    return v[0], v[1]


def handlers():
    """{target name: the address of its XLA_FFI_Handler}."""
    c = _c()
    return {name: int(c.ffi.cast("uintptr_t", c.lib.fbp_xla_handler(getattr(c.lib, code))))
            for name, code in TARGETS.items()}


def head_attrs(head, target, opts, reduction):
    """The attributes every target takes: fbp_head's code and scalars, the reduction
    (FBP_REDUCE_*) and how the handler checks the labels (1: class labels, 2: -1 / +1)."""
    pack = head_pack(head, target, opts)
    kind = SPECS[head].target
    labels = 0 if target.dtype.kind == "f" else 2 if kind == "pm1" else 1
    attrs = {f: (np.int64 if o.kind == "int" else np.float64)(getattr(pack, f))
             for f, o in SCALAR_FIELDS.items()}
    return dict(attrs, code=np.int64(pack.code), labels=np.int64(labels),
                check_ignore=np.int64("ignore_index" in SPECS[head].options),
                reduction=np.int64(REDUCTIONS.index(reduction)))


def need_bits(need):
    """The handlers' ``need``: bit i for gradient i of (dX, dW, db)."""
    return np.int64(sum(1 << i for i, n in enumerate(need) if n))


def array_operands(names, arrays):
    """The array options (``names``, their ``arrays``) in the handlers' order, and their
    ``arrays`` bits."""
    given = dict(zip(names, arrays))
    return ([given[k] for k in ARRAY_OPTIONS if k in given],
            np.int64(sum(1 << i for i, k in enumerate(ARRAY_OPTIONS) if k in given)))


def linear_attrs(call, has_b, reduction, bits):
    """The attributes of the linear targets for a checked call (_checks.LinearHeadCall of the
    traced shapes): the head's, the plan of linear_head (tuning.plan at the C backend's thread
    count when the program is traced) and, apart, linear_loss's plan."""
    (B, d), n, dtype = call.X.shape, call.W.shape[0], call.X.dtype
    c = _c()
    p = c.call_plan(dtype, B, d, n, call.head, call.options, call.chunk_rows,
                    filter_eps=call.filter_eps)
    lp = c.call_plan(dtype, B, d, n, call.head, call.options, call.chunk_rows, loss=True)
    common = dict(head_attrs(call.head, call.target, call.options, reduction),
                  **_plan_attrs(p), filter_eps=np.float64(call.filter_eps),
                  has_b=np.int64(has_b), arrays=bits)
    return common, _plan_attrs(lp, ("chunk", "own", "team", "by_rows"))


def _plan_attrs(p, fields=("blocks", "chunk", "cols", "own", "team", "by_rows")):
    assert isinstance(p, tuning.Plan)
    return {f: np.int64(getattr(p, f)) for f in fields}
