"""What fastbp.torch's op boundary costs a call, piece by piece, at T and D (medians of 7
repeats of 2,000 calls, one process; docs/performance.md "The framework adapters' step").

    python benchmarks/op_boundary.py

Rows: the kernel alone (fastbp's fused call on the NumPy arrays, as the operator makes it);
the operator's implementation (tensors in, the kernel, tensors out); the same operator through
PyTorch's dispatcher (torch.ops.fastbp.linear_head, what a compiled graph calls); the
adapter's forward and backward (fastbp.torch.linear_head(...).backward()); and the floor, an
autograd.Function that computes nothing (PyTorch's autograd alone).
"""
import statistics
import time

import torch

import fastbp
import fastbp.torch as fbt
from fastbp import _frameworks
from fastbp.presets import linear_data


def _median_us(fn, calls=2000, repeats=7):
    for _ in range(calls // 10):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times) * 1e6


def rows(shape):
    X, W, b, y = linear_data(shape)
    Xt, Wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (X, W, b))
    yt = torch.from_numpy(y)
    need = [True, True, True]
    args = (Xt, Wt, bt, yt, [None] * 3, "softmax_nll", "[]", None, "mean", need)
    made = fastbp.linear_head(X, W, b, y)
    grads = [torch.from_numpy(a) for a in (made.dX, made.dW, made.db)]

    class Nothing(torch.autograd.Function):
        @staticmethod
        def forward(ctx, X, W, b):
            return torch.tensor(made.loss, dtype=X.dtype)

        @staticmethod
        def backward(ctx, grad):
            return tuple(grads)

    def adapter():
        Xt.grad = Wt.grad = bt.grad = None
        fbt.linear_head(Xt, Wt, bt, yt).backward()

    def floor():
        Xt.grad = Wt.grad = bt.grad = None
        Nothing.apply(Xt, Wt, bt).backward()

    with torch.no_grad():
        got = {
            "kernel alone": _median_us(lambda: _frameworks.linear_forward(
                X, W, b, y, "softmax_nll", {}, "mean", need, None)),
            "operator's implementation": _median_us(lambda: fbt._linear_head_op(*args)),
            "operator through the dispatcher": _median_us(
                lambda: torch.ops.fastbp.linear_head(*args)),
        }
    got["adapter: forward + backward"] = _median_us(adapter)
    got["floor: empty autograd.Function, forward + backward"] = _median_us(floor)
    return got


def main():
    torch.set_num_threads(fastbp.get_num_threads())
    print("| shape | what | µs a call |\n|---|---|---|")
    for shape in ("T", "D"):
        for what, us in rows(shape).items():
            print(f"| {shape} | {what} | {us:.1f} |")


if __name__ == "__main__":
    main()
