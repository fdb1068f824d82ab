"""fastbp: fused, batched loss gradients and backprop kernels that never build a Jacobian.

The public names of ``docs/api.md``; nothing here compiles or loads a backend at import time.
"""
from . import config, naive
from ._checks import ACTIVATIONS, HEADS
from ._dispatch import (available_backends, get_backend, get_num_threads, set_backend,
                        set_num_threads, use_backend)
from .errors import BackendUnavailable, GradcheckError, JacobianTooLarge
from .gradcheck import gradcheck
from .heads import *  # noqa: F401,F403  (one function per name of HEADS)
from .info import info
from .layers import (Grads, linear_act_backward, linear_act_forward, linear_head, mlp_forward,
                     mlp_loss_grad)
from .model import MLP, SGD, Adam

__version__ = "0.1.0"

__all__ = [
    "HEADS", "ACTIVATIONS", "Grads", *HEADS, "linear_head", "linear_act_forward",
    "linear_act_backward", "mlp_forward", "mlp_loss_grad", "gradcheck", "GradcheckError",
    "JacobianTooLarge", "BackendUnavailable", "available_backends", "set_backend",
    "use_backend", "get_backend", "set_num_threads", "get_num_threads", "info", "naive",
    "config", "MLP", "SGD", "Adam",
]
