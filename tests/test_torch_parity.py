"""PyTorch as an oracle (docs/math.md, "Relations to PyTorch"). PyTorch is an optional peer (the
``peers`` extra): without it this module is skipped; the same semantics are pinned by the
by-hand tests in test_heads.py, which always run."""
import numpy as np
import pytest

import fastbp
from cases import assert_close, case_id, head_cases, make_head_inputs

torch = pytest.importorskip("torch")
F = torch.nn.functional

# softmax_nll must equal cross_entropy for every option but sample_weight (torch has none), with
# softcap and z_loss written in torch ops.
SOFTMAX = [c for c in head_cases() if c[0] == "softmax_nll" and c[1]["sample_weight"] is None]


def _t(a):
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", SOFTMAX, ids=case_id)
def test_softmax_nll_is_torch_cross_entropy(case, reduction, backend, dtype, rng):
    _, spec = case
    S, target, opts = make_head_inputs("softmax_nll", spec, 8, 5, dtype, rng)
    S_t = _t(S).requires_grad_()
    cap, z = opts.get("softcap"), opts.get("z_loss", 0.0)
    Sc = S_t if cap is None else cap * torch.tanh(S_t / cap)     # Gemma 2's soft-capping
    ce = dict(weight=_t(opts.get("weight")), ignore_index=opts.get("ignore_index", -100),
              label_smoothing=opts.get("label_smoothing", 0.0))
    if z:       # PaLM's z-loss: + z lse^2 on each kept row, "mean" over the kept rows
        keep = (_t(target) != ce["ignore_index"]).to(S_t.dtype)
        rows = (F.cross_entropy(Sc, _t(target), reduction="none", **ce)
                + z * torch.logsumexp(Sc, 1) ** 2 * keep)
        loss_t = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / keep.sum()}[reduction]
    else:
        loss_t = F.cross_entropy(Sc, _t(target), reduction=reduction, **ce)
    loss_t.sum().backward()
    loss, dS = fastbp.softmax_nll(S, target, reduction=reduction, backend=backend, **opts)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (1e-5, 1e-6)
    np.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=rtol)
    np.testing.assert_allclose(dS, S_t.grad.numpy(), rtol=rtol, atol=atol)


def test_softmax_nll_all_ignored_matches_torch():
    S = np.zeros((3, 4))
    y = np.full(3, -100)
    S_t = _t(S).requires_grad_()
    loss_t = F.cross_entropy(S_t, _t(y))
    loss_t.backward()
    loss, dS = fastbp.softmax_nll(S, y)
    assert np.isnan(loss) and np.isnan(loss_t.item())
    np.testing.assert_array_equal(dS, S_t.grad.numpy())


def _rows_oracle(head, S, target, opts):
    """Per-sample losses from torch (docs/math.md's relations)."""
    S_t, n = _t(S), S.shape[1]
    if head == "multiclass_hinge":
        return n * F.multi_margin_loss(S_t, _t(target), p=opts["p"], margin=opts["margin"],
                                       weight=_t(opts.get("weight")), reduction="none")
    if head == "sigmoid_bce":
        return F.binary_cross_entropy_with_logits(S_t, _t(target), reduction="none",
                                                  pos_weight=_t(opts.get("pos_weight"))).sum(1)
    if head == "l2":
        return F.mse_loss(S_t, _t(target), reduction="none").sum(1)
    return F.l1_loss(S_t, _t(target), reduction="none").sum(1)


ROWS = [c for c in head_cases() if c[0] in ("multiclass_hinge", "sigmoid_bce", "l2", "l1")
        and c[1].get("sample_weight") is None and c[1].get("weight") is None]


@pytest.mark.parametrize("case", ROWS, ids=case_id)
def test_other_heads_match_torch_per_sample(case, rng):
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 6, 4, np.float64, rng)
    loss, _ = getattr(fastbp, head)(S, target, reduction="none", **opts)
    assert_close(loss, _rows_oracle(head, S, target, dict(opts, p=opts.get("p", 1),
                                                          margin=opts.get("margin", 1.0)))
                 .numpy(), np.float64)


def _focal_torch(S_t, Z_t, alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss's elementwise term, in torch ops."""
    p = torch.sigmoid(S_t)
    ce = F.binary_cross_entropy_with_logits(S_t, Z_t, reduction="none")
    p_t = p * Z_t + (1 - p) * (1 - Z_t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * Z_t + (1 - alpha) * (1 - Z_t)) * loss
    return loss


NEW = [c for c in head_cases() if c[0] in ("huber", "sigmoid_focal")]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", NEW, ids=case_id)
def test_huber_and_focal_match_torch_autograd(case, reduction, backend, dtype, rng):
    """Row loss = the sum over outputs of F.huber_loss / the focal term; "mean" divides by the
    total sample weight; loss and gradient from torch's autograd."""
    head, spec = case
    S, target, opts = make_head_inputs(head, spec, 8, 5, dtype, rng, scale=3.0)
    S_t, Z_t = _t(S).requires_grad_(), _t(target)
    if head == "huber":
        rows = F.huber_loss(S_t, Z_t, delta=opts.get("delta", 1.0), reduction="none").sum(1)
    else:
        rows = _focal_torch(S_t, Z_t, opts.get("alpha", 0.25), opts.get("gamma", 2.0)).sum(1)
    sw = opts.get("sample_weight")
    w = torch.ones(len(S), dtype=S_t.dtype) if sw is None else _t(sw)
    loss_t = {"none": w * rows, "sum": (w * rows).sum(), "mean": (w * rows).sum() / w.sum()}
    loss_t = loss_t[reduction]
    loss_t.sum().backward()
    loss, dS = getattr(fastbp, head)(S, target, reduction=reduction, backend=backend, **opts)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-6)
    np.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=rtol)
    np.testing.assert_allclose(dS, S_t.grad.numpy(), rtol=rtol, atol=atol)
