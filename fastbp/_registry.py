"""The one description of every head, activation, optimizer and reduction: codes, targets,
options, their defaults and checks.

Everything else derives from here: ``fastbp.HEADS`` and ``fastbp.ACTIVATIONS``, the option
checks of ``_checks.py``, the codes of the compiled backends (checked against csrc/fastbp.h's
enums when the C backend loads), the fields of the C ``fbp_head`` struct and of Numba's head
pack, the models' initialisation, and the test cases. Adding a head: docs/design.md, "Adding a
head".
"""
import math
import numbers
from collections import namedtuple
from types import MappingProxyType
from typing import Callable, NamedTuple, Optional

import numpy as np


# ---------------------------------------------------------------------------- option checks
def real(name, value, lo=-np.inf, hi=np.inf):
    if type(value) is float and lo <= value <= hi:      # the common case, fast
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (lo <= value <= hi):   # also rejects NaN
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def integer(name, value, lo=None):
    if type(value) is int and (lo is None or value >= lo):     # the common case, fast
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


def _finite(name, value):
    value = real(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _positive(name, value):
    value = _finite(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _nonnegative(name, value):
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _focal_alpha(name, value):
    value = _finite(name, value)
    if value > 1:
        raise ValueError(f"{name} must be <= 1 (a negative alpha turns weighting off), got {value}")
    return value


def _softcap(name, value):
    return None if value is None else _positive(name, value)


def _softmax_rule(target, opts):
    if opts["z_loss"] and (opts["weight"] is not None or target.ndim == 2):
        raise ValueError("z_loss cannot be combined with class weights or probability targets "
                         "(docs/math.md, 'The language-model options of softmax_nll': no agreed "
                         "definition)")


def _power(name, value):
    if isinstance(value, bool) or value not in (1, 2):
        raise ValueError(f"{name} must be 1 or 2, got {value!r}")
    return int(value)


class Option(NamedTuple):
    """A head option: its default and how it is checked. ``kind`` "row" / "class": an optional
    float vector of one weight per row / per class (checked by _checks); "int" / "float": a
    scalar, checked by ``check(name, value)``, that travels in the head struct's field of the
    same name."""
    default: object
    kind: str
    check: Optional[Callable] = None


SAMPLE_WEIGHT = Option(None, "row")
CLASS_WEIGHT = Option(None, "class")


class HeadSpec(NamedTuple):
    code: int               # FBP_<cname> in csrc/fastbp.h
    cname: str
    target: str             # "labels", "labels|probs" (labels or probability rows), "pm1", "float"
    options: dict
    doc: str                # the public function's docstring (math: docs/math.md)
    rows_code: Optional[int] = None     # labels|probs: the code for probability rows
    rule: Optional[Callable] = None     # rule(target, options): options that exclude each other
    scores_name: str = "S"              # the public function's argument names
    target_name: str = "Z"
    predicts: str = "labels"            # MLP.predict: "labels" (argmax), "sign" or "scores"


# The order is fastbp.HEADS's; codes are the C enum's (softmax_nll has two: labels, rows).
SPECS = {
    "softmax_nll": HeadSpec(0, "SOFTMAX", "labels|probs", dict(
        weight=CLASS_WEIGHT, sample_weight=SAMPLE_WEIGHT,
        ignore_index=Option(-100, "int", integer),
        label_smoothing=Option(0.0, "float", lambda k, v: real(k, v, 0.0, 1.0)),
        z_loss=Option(0.0, "float", _nonnegative), softcap=Option(None, "float", _softcap)),
        """Softmax + negative log-likelihood on logits ``S`` (B, n): ``(loss, dS)``.

        ``target`` is labels (B,) or class probabilities (B, n). Same loss and gradient as
        ``torch.nn.functional.cross_entropy`` for every ``weight`` / ``ignore_index`` /
        ``label_smoothing`` / ``reduction``; ``sample_weight`` (B,) multiplies each row's loss
        and its weight in the "mean" denominator. ``softcap`` c: the scores pass through
        ``c tanh(s / c)`` first; ``z_loss`` z adds ``z lse^2`` per row (docs/math.md, "The
        language-model options of softmax_nll").""",
        rows_code=1, target_name="target", rule=_softmax_rule),
    "multiclass_hinge": HeadSpec(2, "MHINGE", "labels", dict(
        margin=Option(1.0, "float", _finite), p=Option(1, "int", _power),
        weight=CLASS_WEIGHT, sample_weight=SAMPLE_WEIGHT),
        "Multiclass SVM loss ``sum_{j != y} max(0, s_j - s_y + margin)^p`` (p = 1 or 2).",
        target_name="y"),
    "binary_hinge": HeadSpec(3, "BHINGE", "pm1", dict(
        margin=Option(1.0, "float", _finite), sample_weight=SAMPLE_WEIGHT),
        "Binary SVM loss ``max(0, margin - y s)``; ``s`` (B,) or (B, 1), ``y`` in {-1, +1}.",
        scores_name="s", target_name="y", predicts="sign"),
    "sigmoid_bce": HeadSpec(4, "BCE", "float", dict(
        pos_weight=CLASS_WEIGHT, sample_weight=SAMPLE_WEIGHT),
        """Sigmoid + binary cross-entropy per output, summed over outputs (the notes'
        cross-entropy); ``pos_weight`` (n,) as in ``torch.nn.functional.
        binary_cross_entropy_with_logits``."""),
    "sigmoid_l2": HeadSpec(5, "SIGMOID_L2", "float", dict(sample_weight=SAMPLE_WEIGHT),
        "Sigmoid + squared error ``sum_j (z_j - sigma(s_j))^2`` (the notes' 1-layer L2 net)."),
    "l2": HeadSpec(6, "L2", "float", dict(sample_weight=SAMPLE_WEIGHT),
        "Squared error ``sum_j (z_j - s_j)^2`` per row.", predicts="scores"),
    "l1": HeadSpec(7, "L1", "float", dict(sample_weight=SAMPLE_WEIGHT),
        "Absolute error ``sum_j |z_j - s_j|`` per row; gradient ``sign(s - z)`` (0 where equal).",
        predicts="scores"),
    "nll": HeadSpec(8, "NLL", "labels", dict(sample_weight=SAMPLE_WEIGHT),
        """Log-likelihood loss ``-log p_y`` on probabilities ``P`` (the notes'); gradient
        ``-1/p_y``. P is not checked to be a distribution; ``p_y = 0`` gives an infinite loss,
        as ``-log 0``.""", scores_name="P", target_name="y"),
    "huber": HeadSpec(9, "HUBER", "float", dict(
        delta=Option(1.0, "float", _positive), sample_weight=SAMPLE_WEIGHT),
        """Huber loss per output, summed over outputs: ``r = s - z``, ``r^2 / 2`` where
        ``|r| <= delta``, else ``delta (|r| - delta / 2)``; gradient ``clip(r, -delta, delta)``
        (``torch.nn.functional.huber_loss`` elementwise).""", predicts="scores"),
    "sigmoid_focal": HeadSpec(10, "FOCAL", "float", dict(
        alpha=Option(0.25, "float", _focal_alpha), gamma=Option(2.0, "float", _nonnegative),
        sample_weight=SAMPLE_WEIGHT),
        """Sigmoid focal loss per output, summed over outputs (``torchvision.ops.
        sigmoid_focal_loss``'s term): ``alpha_t (1 - p_t)^gamma BCE(s, z)``; ``alpha < 0``
        turns the alpha weighting off; ``gamma >= 0``; targets in [0, 1]."""),
}

HEADS = tuple(SPECS)

# The C struct fbp_head (csrc/fastbp.h) field by field, as a NumPy record (pointers as
# addresses): the code, the target and weight arrays (NULL when absent), then one field per
# scalar option, named as the option, with the value a head that lacks it runs with. The C
# backend checks this layout against its own at import.
ARRAY_FIELDS = ("y", "Z", "sample_weight", "weight", "pos_weight")
SCALAR_FIELDS = {}
for _spec in SPECS.values():
    for _name, _opt in _spec.options.items():
        if _opt.kind in ("int", "float"):
            SCALAR_FIELDS.setdefault(_name, _opt)
HEAD_DTYPE = np.dtype(
    [("code", np.int64)] + [(f, np.uintp) for f in ARRAY_FIELDS]
    + [(f, np.int64 if o.kind == "int" else np.float64) for f, o in SCALAR_FIELDS.items()],
    align=True)
# A head without an option runs with its default (ignore_index's -100 can match no label of
# a head that lacks it: only labels-in-range reach the kernels there). A float option that is
# None (softcap: off) travels as 0.
SCALAR_DEFAULTS = {f: o.default for f, o in SCALAR_FIELDS.items()}


class ActivationSpec(NamedTuple):
    code: int                       # FBP_<cname> in csrc/fastbp.h
    cname: str
    param: Optional[tuple] = None   # alpha's (name in messages, default); None: takes none
    init: str = "xavier"            # MLP's initialisation: "he" (gain sqrt 2) or "xavier"


# The order is fastbp.ACTIVATIONS's; maxout's alpha is its number of pieces (an int).
ACTIVATION_SPECS = {
    "sigmoid": ActivationSpec(0, "SIGMOID"),
    "tanh": ActivationSpec(1, "TANH"),
    "relu": ActivationSpec(2, "RELU", init="he"),
    "leaky_relu": ActivationSpec(3, "LEAKY", ("slope", 0.01), "he"),
    "elu": ActivationSpec(4, "ELU", ("alpha", 1.0), "he"),
    "maxout": ActivationSpec(5, "MAXOUT", ("pieces", 2), "he"),
    "identity": ActivationSpec(6, "IDENTITY"),
}
ACTIVATIONS = tuple(ACTIVATION_SPECS)

# The optimizers a backend may run in its own compiled step (fastbp.SGD / fastbp.Adam's
# ``kind``): FBP_<NAME> in csrc/fastbp.h.
OPTIMIZER_CODES = {"sgd": 0, "adam": 1}

REDUCTIONS = ("mean", "sum", "none")      # (csrc/fastbp.h's FBP_REDUCE_* in this order)

# ---------------------------------------------------------------------------- views
# Each head's keyword options and their defaults (``reduction`` is common to all), its target
# kind and the target's name.
HEAD_OPTIONS = {h: {k: o.default for k, o in spec.options.items()} for h, spec in SPECS.items()}
# The options a call with none given runs with: one shared read-only mapping per head (the fast
# path of linear_head passes it, so a backend may recognise it with `is` and skip unpacking).
DEFAULT_OPTIONS = {head: MappingProxyType(opts) for head, opts in HEAD_OPTIONS.items()}
TARGET_KIND = {h: spec.target for h, spec in SPECS.items()}
TARGET_NAME = {h: spec.target_name for h, spec in SPECS.items()}

# One head's arguments as the compiled kernels take them, the fields of fbp_head in order: the
# code, the arrays (absent ones are the caller's "empty"), then the scalar options.
HeadPack = namedtuple("HeadPack", ("code",) + ARRAY_FIELDS + tuple(SCALAR_FIELDS))
SCALARS_AT = 1 + len(ARRAY_FIELDS)      # the first scalar field: pack[SCALARS_AT:] are the scalars
