"""What the compiled backends (numba, c) share in front of their kernels: the head and
activation codes, the head's arguments as one pack (the fields of csrc/fastbp.h's ``fbp_head``,
from ``fastbp._registry``), and the loss of the (total, omega) sums a kernel returns."""

import numpy as np

from .tuning import tiny_window
from .._registry import (ACTIVATION_SPECS, ARRAY_FIELDS, DEFAULT_OPTIONS, HEAD_DTYPE,
                         OPTIMIZER_CODES, SCALAR_DEFAULTS, SCALAR_FIELDS, SCALARS_AT, SPECS,
                         HeadPack)

# FBP_<cname> of csrc/fastbp.h's head enum, by C name; softmax_nll's probability rows have
# their own code
CODES = {spec.cname: spec.code for spec in SPECS.values()}
CODES.update({spec.cname + "_PROBS": spec.rows_code for spec in SPECS.values()
              if spec.rows_code is not None})
# FBP_<cname> of csrc/fastbp.h's activation enum, by name and by C name (maxout has its own
# kernels); the optimizers' FBP_SGD / FBP_ADAM
ACT_CODES = {name: spec.code for name, spec in ACTIVATION_SPECS.items()}
SIGMOID, TANH, RELU, LEAKY, ELU, MAXOUT, IDENTITY = (
    {spec.cname: spec.code for spec in ACTIVATION_SPECS.values()}[c]
    for c in ("SIGMOID", "TANH", "RELU", "LEAKY", "ELU", "MAXOUT", "IDENTITY"))
SGD, ADAM = OPTIMIZER_CODES["sgd"], OPTIMIZER_CODES["adam"]

__all__ = ["CODES", "ACT_CODES", "HeadPack", "SCALARS_AT", "head_code", "head_pack",
           "default_record", "reduced_loss", "fast_entry"]
_SCALAR_TYPES = tuple(int if o.kind == "int" else float for o in SCALAR_FIELDS.values())


def head_code(name, target):
    """The head's code for this target: softmax_nll's probability rows have their own."""
    spec = SPECS[name]
    return spec.rows_code if target.ndim == 2 and spec.rows_code is not None else spec.code


def _or0(value):
    return 0 if value is None else value


def head_pack(name, target, options, empty=None, labels_empty=None, rows_empty=None):
    """HeadPack for a call: absent arrays as ``empty`` (weights), ``labels_empty`` (y) and
    ``rows_empty`` (Z); scalar options a head lacks at their registry default."""
    y, Z = (None, target) if target.ndim == 2 else (target, None)
    get = options.get
    scalars = (kind(_or0(get(f, SCALAR_DEFAULTS[f])))
               for f, kind in zip(SCALAR_FIELDS, _SCALAR_TYPES))
    return HeadPack(head_code(name, target), labels_empty if y is None else y,
                    rows_empty if Z is None else Z,
                    *(empty if get(f) is None else get(f) for f in ARRAY_FIELDS[2:]), *scalars)


def default_record(name, ndim):
    """A fbp_head (HEAD_DTYPE record) with the head's defaults and NULL arrays, for a target of
    ``ndim`` dimensions: the template csrc/fastcall.c fills with a call's y or Z."""
    rec = np.zeros((), HEAD_DTYPE)
    pack = head_pack(name, np.empty((0,) * ndim), DEFAULT_OPTIONS[name], 0, 0, 0)
    for field, value in zip(HeadPack._fields, pack):
        rec[field] = 0 if field in ARRAY_FIELDS else value
    return rec


def reduced_loss(total, osum, reduction):
    """The Python float of a "sum" or "mean" loss (nan when every weight is 0, as torch)."""
    if reduction == "sum":
        return float(total)
    return float(total) / float(osum) if osum else float("nan")


def fast_entry(backend, kernels):
    """A compiled backend's ``fast_linear_head``: linear_head's common tiny call (default
    options; ``out`` a Grads or None) checked and run by csrc/fastcall.c on ``kernels()`` --
    the addresses of the backend's (float64, float32) kernels with the C signature of
    linear_fused_f64 -- on one block inside ``tuning.tiny_window(backend)``, where
    ``tuning.plan`` runs the fused rows on one block. The result returns (loss, dW, db,
    dX), or None when the call is not that one (nothing written; the caller takes the checked
    path). None without the _fastcall extension."""
    try:
        from . import _fastcall
    except ImportError:         # built without a C compiler: every call takes the checked path
        return None
    kinds = {"labels": _fastcall.KIND_LABELS, "float": _fastcall.KIND_FLOAT,
             "labels|probs": _fastcall.KIND_LABELS | _fastcall.KIND_PROBS}
    specs = {}
    for name, spec in SPECS.items():
        kind = kinds.get(spec.target)
        if kind is not None:    # (binary_hinge's +-1 labels take the checked path)
            templates = (default_record(name, 1), default_record(name, 2))   # kept alive here
            specs[name] = (kind, *(t.__array_interface__["data"][0] for t in templates),
                           templates)

    def fast_linear_head(X, W, b, target, head, need_dX, out):
        spec = specs.get(head) if head.__class__ is str else None
        return _fastcall.linear_head(X, W, b, target, spec, need_dX, out, *tiny_window(backend),
                                     kernels())

    return fast_linear_head
