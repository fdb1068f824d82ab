"""One training step of an output layer through the framework adapters, each way in fresh
processes: time (median of the steps after a warm-up, which compiles; at C, D and T the median
over three processes run in turn with the other ways') and the peak RSS growth of one more step
over the warm process (fastbp.compare.rss_peak).

    python benchmarks/adapters.py [--json FILE]        # prints a Markdown table

At V (an LM output layer, 1024 x 512 x 32000 float32), C, D and T (fastbp.presets). PyTorch
ways: fastbp.torch.LinearHead, eager and under torch.compile(fullgraph=True); nn.Linear +
F.cross_entropy, eager and compiled; F.linear_cross_entropy. Each step is forward, backward and
SGD's optimizer.step() on the layer's weight and bias, with the input X requiring grad (dX is
computed, as under a network body). The "floor" row is the same step through an
autograd.Function that computes nothing (it hands back gradients made once): what PyTorch's
autograd and optimizer cost any adapter; the "kernel" row is fastbp.linear_head's call on the
NumPy arrays alone, so a fastbp.torch row minus both is the op boundary's cost. JAX ways: one
jitted value_and_grad of fastbp.jax.linear_head (on the XLA targets, and through the host
callback) and of the same loss in jax.numpy, the arrays on the device. "loss only" ways: the
loss without gradients (torch.no_grad(); a jitted loss). Every way's first step is checked
equal to fastbp's NumPy reference.
"""
import json
import os
import statistics
import subprocess
import sys
import time

STEPS = {"V": 4, "C": 100, "D": 300, "T": 300}
# fresh processes per way, in turn: a process can land in a slow state for its whole life on a
# shared host (a small step's median moves 2x between processes), so the row is the median of
# the processes' medians
ROUNDS = {"V": 1, "C": 3, "D": 3, "T": 3}
WAYS = ("fastbp.torch LinearHead", "fastbp.torch LinearHead compiled", "torch eager",
        "torch.compile", "torch linear_cross_entropy", "floor: torch empty autograd.Function",
        "kernel: fastbp.linear_head on NumPy",
        "fastbp.torch loss only", "torch loss only", "fastbp.jax", "fastbp.jax callback",
        "jax jit", "fastbp.jax loss only", "jax jit loss only")


def child(way, shape):
    import numpy as np

    import fastbp
    from fastbp.compare import rss_peak
    from fastbp.presets import linear_data
    X, W, b, y = linear_data(shape)
    if way.startswith("kernel"):
        def step():
            return fastbp.linear_head(X, W, b, y)

        def first():
            g = step()
            return g.loss, g.dW
    elif way.startswith(("fastbp.jax", "jax")):
        step, first = _jax_step(way, X, W, b, y)
    else:
        step, first = _torch_step(way, X, W, b, y)
    got_loss, got_dW = first()         # warm: compiles, and BLAS's buffers are resident
    times = []
    for _ in range(STEPS[shape]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    growth = rss_peak(step)            # one more step (the reference below runs after it)
    want = fastbp.linear_head(X, W, b, y, backend="numpy")
    tol = 1e-9 if X.dtype == np.float64 else 2e-4
    np.testing.assert_allclose(got_loss, want.loss, rtol=tol)
    if got_dW is not None:
        np.testing.assert_allclose(got_dW, want.dW, rtol=tol, atol=tol * np.abs(want.dW).max())
    return {"way": way, "shape": shape, "median_s": statistics.median(times),
            "peak_growth_mb": growth / 2**20}


def _torch_step(way, X, W, b, y):
    import torch
    import torch.nn.functional as F

    import fastbp
    import fastbp.torch as fbt
    torch.set_num_threads(fastbp.get_num_threads())
    n, d = W.shape
    Xt, yt = torch.from_numpy(X).requires_grad_(), torch.from_numpy(y)
    if way.startswith("fastbp.torch"):
        layer = fbt.LinearHead(d, n, dtype=Xt.dtype)
        loss_fn = layer
    elif way.startswith("floor"):
        layer = torch.nn.Linear(d, n, dtype=Xt.dtype)
        g = fastbp.linear_head(X, W, b, y)
        made = [torch.from_numpy(a) for a in (g.dX, g.dW, g.db)]

        class Nothing(torch.autograd.Function):
            @staticmethod
            def forward(ctx, X, W, b):
                return torch.tensor(g.loss, dtype=X.dtype)

            @staticmethod
            def backward(ctx, grad):
                return tuple(made)

        def loss_fn(X, y):
            return Nothing.apply(X, layer.weight, layer.bias)
    else:
        layer = torch.nn.Linear(d, n, dtype=Xt.dtype)
        if way == "torch linear_cross_entropy":
            def loss_fn(X, y):
                return F.linear_cross_entropy(X, layer.weight, y, linear_bias=layer.bias)
        else:
            def loss_fn(X, y):
                return F.cross_entropy(layer(X), y)
    if way.endswith("compiled") or way == "torch.compile":
        loss_fn = torch.compile(loss_fn, fullgraph=True)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W))
        layer.bias.copy_(torch.from_numpy(b))
    opt = torch.optim.SGD(layer.parameters(), lr=0.0)     # lr 0: every step the same work

    if way.endswith("loss only"):
        def step():
            with torch.no_grad():
                return loss_fn(Xt, yt)

        return step, lambda: (float(step()), None)

    def step():
        opt.zero_grad(set_to_none=True)
        Xt.grad = None
        loss = loss_fn(Xt, yt)
        loss.backward()
        opt.step()
        return loss

    def first():
        loss = step()
        return float(loss.detach()), layer.weight.grad.numpy().copy()

    return step, first


def _jax_step(way, X, W, b, y):
    import jax
    import jax.numpy as jnp
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    import fastbp.jax as fbj

    if way == "fastbp.jax callback":
        fbj.PATH = "callback"                 # the path without the C extension's targets
    if way.startswith("fastbp.jax"):
        def loss_fn(X, W, b):
            return fbj.linear_head(X, W, b, y)
    else:
        def loss_fn(X, W, b):
            S = X @ W.T + b
            return -jnp.mean(jax.nn.log_softmax(S)[jnp.arange(len(y)), y])
    X, W, b = (jnp.asarray(a) for a in (X, W, b))     # on the device, as a training loop's
    if way.endswith("loss only"):
        loss = jax.jit(loss_fn)

        def step():
            return loss(X, W, b).block_until_ready()

        return step, lambda: (float(step()), None)
    grad = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))

    def step():
        loss, grads = grad(X, W, b)
        jax.block_until_ready(grads)
        return loss, grads

    def first():
        loss, grads = step()
        return float(loss), np.asarray(grads[1])

    return step, first


def main():
    rows = []
    for shape in STEPS:
        runs = {way: [] for way in WAYS}
        for _ in range(ROUNDS[shape]):            # the ways in turn, round after round
            for way in WAYS:
                run = subprocess.run([sys.executable, __file__, "--child", way, shape],
                                     capture_output=True, text=True, env=dict(os.environ))
                runs[way].append({"way": way, "shape": shape,
                                  "error": run.stderr.strip()[-300:]} if run.returncode
                                 else json.loads(run.stdout))
        for way, got in runs.items():
            done = [r for r in got if "error" not in r]
            rows.append(got[-1] if not done else {
                "way": way, "shape": shape, "processes": len(done),
                "median_s": statistics.median(r["median_s"] for r in done),
                "peak_growth_mb": statistics.median(r["peak_growth_mb"] for r in done)})
    if "--json" in sys.argv:
        from scaling import provenance
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump({"provenance": provenance(), "rows": rows}, f, indent=1)
    print(table(rows))


def table(rows):
    """Each way against the fastest way of its framework that is not fastbp's, for the same
    work: a training step, or the loss alone ("loss only" ways). ``rows``: the --json file's
    {"provenance", "rows"} (its date, commit and versions head the table), or its rows."""
    out = []
    if isinstance(rows, dict):
        from scaling import provenance_line
        out, rows = [provenance_line(rows["provenance"]), ""], rows["rows"]
    out += ["| shape | way | step (median) | vs the fastest non-fastbp way of its framework "
            "| peak RSS growth |", "|---|---|---|---|---|"]

    def kind(way):
        return ("jax" if "jax" in way else "torch", way.endswith("loss only"))

    for shape in STEPS:
        mine = [r for r in rows if r["shape"] == shape]
        for r in mine:
            peers = [p["median_s"] for p in mine if "median_s" in p and kind(p["way"]) ==
                     kind(r["way"]) and not p["way"].startswith(("fastbp", "floor", "kernel"))]
            best = min(peers) if peers else None
            if "error" in r:
                out.append(f"| {shape} | {r['way']} | failed: {r['error'][-80:]} | | |")
                continue
            t = r["median_s"]
            ratio = f"{best / t:.2f}x faster" if best else ""
            out.append(f"| {shape} | {r['way']} | {_fmt(t)} | {ratio} | "
                       f"{r['peak_growth_mb']:.0f} MB |")
    return "\n".join(out)


def _fmt(s):
    return f"{s * 1e3:.1f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
    else:
        main()
