"""What the compiled backends (numba, c) share in front of their kernels: the head and
activation codes (the same numbers as csrc/fastbp.h's enums), the flat head-argument pack, and
the loss of the (total, omega) sums a kernel returns."""
import numpy as np

from .._checks import ACTIVATIONS

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
