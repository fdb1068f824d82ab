"""Every backend provides the kernel set of ``fastbp.backends.interface.Backend``, with its
signatures, and nothing reaches a head through a module global per head."""
import inspect

import fastbp
import pytest
from fastbp import _dispatch
from fastbp.backends import interface

from cases import BACKENDS


def _params(func):
    """(name, kind, default) of each parameter, ``self`` dropped."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()
            if p.name != "self"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_has_the_protocols_functions_and_signatures(backend):
    module = _dispatch.backend_module(backend)
    assert isinstance(module, interface.Backend)
    for name in interface.KERNELS:
        func = getattr(module, name)
        assert callable(func), f"{backend}.{name}"
        assert _params(func) == _params(getattr(interface.Backend, name)), f"{backend}.{name}"
    fast = module.fast_linear_head
    assert fast is None or [p[0] for p in _params(fast)] == [
        "X", "W", "b", "target", "head", "need_dX", "out"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_heads_are_reached_through_one_entry_not_injected_globals(backend):
    module = _dispatch.backend_module(backend)
    assert not [h for h in fastbp.HEADS if hasattr(module, h)], backend


def test_the_protocol_states_the_kernel_set():
    assert set(interface.KERNELS) == {
        "head", "linear_head", "linear_loss", "linear_act_forward", "linear_act_backward",
        "mlp_forward", "mlp_loss_grad", "mlp_step", "mlp_epoch"}


def test_a_backend_missing_a_kernel_or_with_another_signature_is_caught():
    """The check itself can fail: a module without mlp_epoch, or with a renamed argument."""
    import types
    ref = _dispatch.backend_module("numpy")
    missing = types.SimpleNamespace(**{k: getattr(ref, k) for k in interface.KERNELS
                                       if k != "mlp_epoch"}, fast_linear_head=None)
    assert not isinstance(missing, interface.Backend)

    def head(name, S, target, dS, reduction, options):
        pass
    assert _params(head) != _params(interface.Backend.head)
