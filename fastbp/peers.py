"""The frameworks users would otherwise use, computing exactly fastbp's loss definitions, for the
benchmarks and ``fastbp bench --peers``. Optional: each is skipped when not installed.

``linear_head(peer, head, X, W, b, target)`` returns a function that runs one forward+backward
on tensors prepared once (what is timed) and returns ``(loss, dW, db, dX)`` as NumPy arrays.
"""
import importlib.util

PEERS = ("torch eager", "torch.compile")
HEADS = ("softmax_nll", "multiclass_hinge", "sigmoid_l2")


def available(peer):
    return importlib.util.find_spec("torch") is not None and peer in PEERS


def linear_head(peer, head, X, W, b, target):
    import torch
    import torch.nn.functional as F

    import fastbp
    torch.set_num_threads(fastbp.get_num_threads())
    Xt, Wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (X, W, b))
    tt = torch.from_numpy(target)
    n = W.shape[0]

    def loss_fn(X, W, b, t):      # fastbp's definitions, "mean" over the batch (math.md)
        S = F.linear(X, W, b)
        if head == "softmax_nll":
            return F.cross_entropy(S, t)
        if head == "multiclass_hinge":
            return n * F.multi_margin_loss(S, t)
        if head == "sigmoid_l2":
            return ((t - torch.sigmoid(S)) ** 2).sum(1).mean()
        raise ValueError(f"no {peer} counterpart for head {head!r}")

    fn = torch.compile(loss_fn) if peer == "torch.compile" else loss_fn

    def run():
        for a in (Xt, Wt, bt):
            a.grad = None
        loss = fn(Xt, Wt, bt, tt)
        loss.backward()
        return loss

    def result():
        loss = run()
        return (float(loss), Wt.grad.numpy(), bt.grad.numpy(), Xt.grad.numpy())

    run()                         # warm-up (and compilation, not timed)
    run.result = result
    return run
