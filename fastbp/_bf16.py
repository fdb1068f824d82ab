"""bfloat16 calls (docs/api.md, "bfloat16"): the one rule for which arrays are rounded to
bfloat16, what runs in float32 and which dtype each result comes back in.

A call is a bfloat16 call when one of its float arrays is ``ml_dtypes.bfloat16`` (the dtype
JAX uses). Then, as ``torch.autocast`` runs a linear layer:

- the products' operands (X, W, b of linear_head) are bfloat16 values: a float32 one is
  rounded to bfloat16 (to nearest even), a bfloat16 one is taken as it is; float64 does not mix
  with bfloat16 (a TypeError names it);
- the head's arrays (scores of a head call, probability targets, weights) are taken in float32
  as they are (bfloat16 widens exactly);
- everything then runs in float32: products accumulate in float32, the head works in float32,
  the loss sums in double as in any float32 call; so a gradient is rounded once, at the end,
  never between row blocks or threads;
- each gradient comes back in its argument's dtype (dW in W's: float32 master weights get a
  float32 dW), or in ``grad_dtype`` when given; the loss is a float (row losses: float32).

The float32 kernels run on float32 copies of the bfloat16 operands (widening is exact), except
the C fused rows, which widen X a block at a time themselves, and the C chunked path on a CPU
with AVX512-BF16, which multiplies bfloat16 pairs (csrc/dot16.h; layers._in_kernel); results
equal the float32 reference on the same bfloat16 values to float32 rounding, the latter's with
the score gradient rounded to bfloat16 for the backward products (tests/test_bf16.py).
"""
import functools

import numpy as np


def involved(*arrays):
    """Whether any of ``arrays`` (anything: lists, None, scalars) is a bfloat16 array. On every
    call of the API: the dtype's kind first ("V" for ml_dtypes' types; a C attribute), its name
    only then (a Python property, microseconds); ``import fastbp`` does not import ml_dtypes."""
    for a in arrays:
        dt = getattr(a, "dtype", None)
        if getattr(dt, "kind", None) == "V" and dt.name == "bfloat16":
            return True
    return False


@functools.lru_cache(maxsize=None)
def bf16():
    """ml_dtypes.bfloat16's NumPy dtype (imported at the first bfloat16 call)."""
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


_F32 = np.dtype(np.float32)


@functools.lru_cache(maxsize=None)
def _c():
    """The C backend's conversions (vectorized, on the threads) where it loads, else None:
    NumPy's (ml_dtypes') casts, several times slower."""
    from . import _dispatch
    from .errors import BackendUnavailable
    try:
        return _dispatch._load("c").bf16_convert
    except BackendUnavailable:
        return None


def convert(a, dtype, operand=False):
    """``a`` (bfloat16 or float32) as a new C-contiguous array of ``dtype`` (float32 or
    bfloat16); ``operand``: float32 in, float32 out holding its bfloat16 rounding."""
    convert_c = _c()
    if convert_c is None:
        with np.errstate(invalid="ignore"):          # (NaN propagates, as in every call)
            return a.astype(bf16()).astype(_F32) if operand else a.astype(dtype)
    a = np.ascontiguousarray(a)
    out = np.empty(a.shape, dtype)
    convert_c(out.view(np.uint16) if out.dtype == bf16() else out,
              a.view(np.uint16) if a.dtype == bf16() else a)
    return out


def grad_dtype(value):
    """``grad_dtype`` checked: None or one of bfloat16, float32, float64."""
    if value is None:
        return None
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if dt not in (bf16(), _F32, np.dtype(np.float64)):
        raise TypeError(f"grad_dtype must be None, ml_dtypes.bfloat16, np.float32 or "
                        f"np.float64, got {value!r}")
    return dt


def operand(name, a, partner):
    """A product operand of a bfloat16 call as float32 holding bfloat16 values, and its
    dtype (None for None). ``partner``: the argument that made the call bfloat16 (for the
    error)."""
    if a is None:
        return None, None
    a = checked_operand(name, a, partner)
    return convert(a, _F32, operand=a.dtype == _F32), a.dtype


def checked_operand(name, a, partner):
    """A product operand of a bfloat16 call as an array, its dtype checked (bfloat16 or
    float32), not converted."""
    a = a if isinstance(a, np.ndarray) else np.asarray(a)
    if a.dtype not in (bf16(), _F32):
        raise TypeError(f"{name} has dtype {a.dtype} but {partner} is bfloat16: a bfloat16 "
                        f"call's products take bfloat16 or float32 arrays (float32 is rounded "
                        f"to bfloat16, as torch.autocast does), not {a.dtype}")
    return a


def head_array(name, a, partner):
    """A head-side float array of a bfloat16 call in float32 (as it is); integer labels and
    non-arrays pass through."""
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fV":
        return a
    if a.dtype == bf16():
        return convert(a, _F32)
    if a.dtype == _F32:
        return a
    raise TypeError(f"{name} has dtype {a.dtype} but {partner} is bfloat16: the head of a "
                    f"bfloat16 call takes bfloat16 or float32 arrays, not {a.dtype}")


def linear_call(X, W, b, target, options):
    """A linear_head call's (X, W, b, target, options) ready for the float32 kernels if it is
    a bfloat16 call (as they are otherwise), and each gradient's default dtype by name."""
    arrays = {"X": X, "W": W, "b": b, "target": target, **options}
    partner = next((n for n, a in arrays.items() if involved(a)), None)
    if partner is None:
        return X, W, b, target, options, {}
    a, dtypes = operands({"X": X, "W": W, "b": b}, partner)
    options = {k: head_array(k, v, partner) for k, v in options.items()}
    return a["X"], a["W"], a["b"], head_array("target", target, partner), options, dtypes


def result(a, dtype, out=None, name="out"):
    """A float32 result ``a`` in ``dtype`` (rounded once), written into ``out`` (the argument
    ``name``) if given."""
    if a is None:
        return None
    if out is not None:
        if not isinstance(out, np.ndarray) or out.dtype != dtype:
            raise TypeError(f"{name} must have dtype {dtype} in this call, got "
                            f"{getattr(out, 'dtype', type(out).__name__)}")
        if out.shape != a.shape or not out.flags.writeable:
            raise ValueError(f"{name} must be a writeable array of shape {a.shape}, got "
                             f"shape {out.shape}{'' if out.flags.writeable else ', read-only'}")
        out[...] = a if a.dtype != _F32 or dtype != bf16() else convert(a, dtype)
        return out
    if a.dtype == dtype:
        return a
    return convert(a, dtype) if a.dtype == _F32 and dtype == bf16() else a.astype(dtype)


def operands(named, partner=None):
    """A bfloat16 call's product operands ``named`` ({name: array or None}) as float32 arrays
    of bfloat16 values, and their dtypes, both by name (operand); ``partner``: the bfloat16
    argument named in errors (default: the first of ``named``)."""
    partner = partner or next(k for k, a in named.items() if involved(a))
    pairs = {k: operand(k, a, partner) for k, a in named.items()}
    return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}

