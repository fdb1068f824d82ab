"""What the compiled backends (numba, c) share in front of their kernels: the head and
activation codes (the same numbers as csrc/fastbp.h's enums), the flat head-argument pack, and
the loss of the (total, omega) sums a kernel returns."""
import numpy as np

from .._checks import ACTIVATIONS, DEFAULT_OPTIONS, TARGET_KIND

# softmax_nll has two codes: label targets and probability rows
SOFTMAX, SOFTMAX_PROBS, MHINGE, BHINGE, BCE, SIGMOID_L2, L2, L1, NLL = range(9)
HEAD_CODES = {"softmax_nll": SOFTMAX, "multiclass_hinge": MHINGE, "binary_hinge": BHINGE,
              "sigmoid_bce": BCE, "sigmoid_l2": SIGMOID_L2, "l2": L2, "l1": L1, "nll": NLL}
# in fastbp.ACTIVATIONS order (maxout has its own kernels)
SIGMOID, TANH, RELU, LEAKY, ELU, MAXOUT, IDENTITY = range(7)
ACT_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
assert ACT_CODES["maxout"] == MAXOUT and ACT_CODES["identity"] == IDENTITY

NEVER = int(np.iinfo(np.int64).min)       # an ignore_index no validated label can equal


def head_args(name, target, options):
    """(code, labels, targets, sample_weight, weight, pos_weight, ignore_index,
    label_smoothing, margin, p): absent arrays are None, absent scalars their neutral value."""
    code = HEAD_CODES[name]
    if target.ndim == 2:
        y, Z = None, target
        code = SOFTMAX_PROBS if code == SOFTMAX else code
    else:
        y, Z = target, None
    get = options.get
    return (code, y, Z, get("sample_weight"), get("weight"), get("pos_weight"),
            get("ignore_index", NEVER), get("label_smoothing", 0.0), get("margin", 1.0),
            get("p", 1))


def reduced_loss(total, osum, reduction):
    """The Python float of a "sum" or "mean" loss (nan when every weight is 0, as torch)."""
    if reduction == "sum":
        return float(total)
    return float(total) / float(osum) if osum else float("nan")


def fast_entry(backend, kernels):
    """A compiled backend's ``fast_linear_head``: linear_head's common tiny call (default
    options; ``out`` a Grads or None) checked and run by csrc/fastcall.c on ``kernels()`` --
    the addresses of the backend's (float64, float32) kernels with the C signature of
    linear_fused_f64 -- on one block when ``backend``'s thresholds say the fused path runs one
    (n d <= FUSED_ANY_N_WEIGHTS, or n <= FUSED_FEW_N, d >= FUSED_FEW_MIN_D and
    n d <= FUSED_FEW_WEIGHTS; and B n d < PARALLEL_MIN_WORK). The result returns (loss, dW, db,
    dX), or
    None when the call is not that one (nothing written; the caller takes the checked path).
    None without the _fastcall extension."""
    try:
        from . import _fastcall
    except ImportError:         # built without a C compiler: every call takes the checked path
        return None
    kinds = {"labels": 1, "labels|probs": 3, "float": 4}     # fastcall.c's KIND_* bits
    specs = {}
    for name, options in DEFAULT_OPTIONS.items():
        kind = kinds.get(TARGET_KIND.get(name, "float"))
        if kind is not None:    # (binary_hinge's +-1 labels take the checked path)
            code1, _, _, _, _, _, *scalars = head_args(name, np.empty(0), options)
            specs[name] = (kind, code1, head_args(name, np.empty((0, 0)), options)[0],
                           *scalars)

    def fast_linear_head(X, W, b, target, head, need_dX, out):
        spec = specs.get(head) if head.__class__ is str else None
        return _fastcall.linear_head(X, W, b, target, spec, need_dX, out,
                                     backend.FUSED_ANY_N_WEIGHTS, backend.FUSED_FEW_N,
                                     backend.FUSED_FEW_MIN_D, backend.FUSED_FEW_WEIGHTS,
                                     backend.PARALLEL_MIN_WORK, kernels())

    return fast_linear_head
