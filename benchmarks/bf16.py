"""bfloat16 calls (docs/api.md, "bfloat16") beside float32 and the peers' mixed precision.

    python benchmarks/bf16.py                          # accuracy at C, V; timings at C, K, V
    python benchmarks/bf16.py --accuracy-only --groups C
    python benchmarks/bf16.py --timing-groups C,K --rounds 5 --json bf16.json

Accuracy: the relative error (Frobenius norm of the difference over the reference's) of the
loss, dW and dX against the float64 call on the same float32 data, for fastbp's float32 call,
fastbp's bfloat16 call as autocast makes it (X in bfloat16, W and b float32 master weights: the
products on their bfloat16 values, dW float32, dX bfloat16) and PyTorch's nn.Linear +
F.cross_entropy under ``torch.autocast("cpu", torch.bfloat16)`` on the same tensors.

Timings (linear + softmax_nll forward and backward, all cores): fastbp float32 and bfloat16
(every array bfloat16) on each compiled backend, the C backend's bfloat16 also with its
bfloat16 products off (the conversion path a CPU without AVX512-BF16 runs) (P: V's shape with
a trained model's peaked softmax and ``filter_eps="auto"``; its peers' rows are V's, which
compute it the same way),
torch eager and torch.compile under autocast, fastbp.torch's linear_head under autocast (float32
tensors: what a PyTorch training loop passes), JAX jit on bfloat16 arrays, and the three bare
products in bfloat16 and float32 (PyTorch's);
each way's loss checked against fastbp's float32 one (to bfloat16's precision) before it is
timed; every way timed in turn within each round, the median over the rounds.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scaling import host, host_line, provenance, provenance_line  # noqa: E402

import fastbp  # noqa: E402
from fastbp.presets import SHAPES, linear_data  # noqa: E402


def _problem(group, seed=0):
    if group == "P":             # V's shape, a trained model's peaked softmax (fastbp.presets)
        return linear_data("P")
    B, d, n, _ = SHAPES[group]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, d)).astype(np.float32)
    W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32)
    return X, W, b, rng.integers(0, n, B)


def _bf16(a):
    import ml_dtypes
    return a.astype(ml_dtypes.bfloat16)


def _rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def _torch_autocast(X, W, b, y):
    """(loss, dW, db, dX) of autocast's nn.Linear + F.cross_entropy, as float64 arrays."""
    import torch
    import torch.nn.functional as F
    Xt, Wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (X, W, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(F.linear(Xt, Wt, bt), torch.from_numpy(y))
    loss.backward()
    return (float(loss.detach()), *(t.grad.double().numpy() for t in (Wt, bt, Xt)))


def accuracy(group, backend):
    X, W, b, y = _problem(group)
    ref = fastbp.linear_head(*(a.astype(np.float64) for a in (X, W, b)), y, backend=backend)
    ways = {"fastbp float32": fastbp.linear_head(X, W, b, y, backend=backend),
            "fastbp bfloat16 (X bf16, W f32)": fastbp.linear_head(_bf16(X), W, b, y,
                                                                   backend=backend)}
    if backend == "c":
        ways["fastbp bfloat16, conversion path"] = _conversion_path(
            fastbp.linear_head, _bf16(X), W, b, y, backend=backend)
    try:
        ways["torch autocast bf16"] = _torch_autocast(X, W, b, y)
    except ImportError:
        pass
    rows = []
    for name, g in ways.items():
        loss, dW, db, dX = g if isinstance(g, tuple) else (g.loss, g.dW, g.db, g.dX)
        rows.append({"group": group, "way": name, "loss": _rel(loss, ref.loss),
                     "dW": _rel(dW, ref.dW), "dX": _rel(np.asarray(dX, np.float32), ref.dX)})
    return rows


def _conversion_path(fn, *args, **kw):
    """``fn(*args, **kw)`` with the C backend's bfloat16 products off (tuning.C.BF16_DOT)."""
    from fastbp.backends import tuning
    before, tuning.C.BF16_DOT = tuning.C.BF16_DOT, "off"
    try:
        return fn(*args, **kw)
    finally:
        tuning.C.BF16_DOT = before


def _ways(group, backends):
    """{name: a function running one forward + backward} for the timings."""
    import torch
    import torch.nn.functional as F
    X, W, b, y = _problem(group)
    Xb, Wb, bb = _bf16(X), _bf16(W), _bf16(b)
    opts = {"filter_eps": "auto"} if group == "P" else {}
    ways = {}
    for be in backends:
        ways[f"fastbp {be} float32"] = lambda be=be: fastbp.linear_head(
            X, W, b, y, backend=be, **opts).loss
        ways[f"fastbp {be} bfloat16"] = lambda be=be: fastbp.linear_head(
            Xb, Wb, bb, y, backend=be, **opts).loss
    if "c" in backends:          # the conversion path forced (a CPU without AVX512-BF16)
        ways["fastbp c bfloat16, conversion path"] = lambda: _conversion_path(
            fastbp.linear_head, Xb, Wb, bb, y, backend="c", **opts).loss
    if group == "P":             # (the peers compute P as V: dense, the same products)
        return ways
    Xt, Wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (X, W, b))
    yt = torch.from_numpy(y)

    def torch_step(fn):
        def run():
            for t in (Xt, Wt, bt):
                t.grad = None
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = fn(Xt, Wt, bt, yt)
            loss.backward()
            return float(loss.detach())
        return run

    def eager(X, W, b, y):
        return F.cross_entropy(F.linear(X, W, b), y)

    ways["torch eager autocast bf16"] = torch_step(eager)
    ways["torch.compile autocast bf16"] = torch_step(torch.compile(eager))
    if "c" in backends:          # the PyTorch door: float32 master weights under autocast
        import fastbp.torch as fbt
        ways["fastbp.torch c autocast bf16"] = torch_step(
            lambda X, W, b, y: fbt.linear_head(X, W, b, y, backend="c"))
    try:
        import jax
        import jax.numpy as jnp
        rows = jnp.arange(len(X))

        def loss_fn(W, b, X, t):
            S = jnp.dot(X, W.T, preferred_element_type=jnp.float32) + b
            return -jnp.mean(jax.nn.log_softmax(S)[rows, t])

        f = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))
        args = (jnp.asarray(W, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16),
                jnp.asarray(X, jnp.bfloat16), jnp.asarray(y))
        ways["jax jit bf16 arrays"] = lambda: float(jax.block_until_ready(f(*args))[0])
    except ImportError:
        pass
    G = torch.from_numpy(np.full((len(X), len(W)), 1e-3, np.float32))
    for dt, name in ((torch.bfloat16, "bfloat16"), (torch.float32, "float32")):
        A, M, Gd = (t.detach().to(dt) for t in (Xt, Wt, G))

        def bare(A=A, M=M, Gd=Gd):
            A @ M.T, Gd @ M, Gd.T @ A
            return None
        ways[f"bare products {name} (torch)"] = bare
    return ways


def timings(group, backends, rounds):
    ways = _ways(group, backends)
    want = ways[f"fastbp {backends[0]} float32"]()
    first = {}
    for name, run in ways.items():
        t0 = time.perf_counter()
        got = run()                              # (the first call: compiles, traces)
        first[name] = time.perf_counter() - t0
        if got is not None and abs(got - want) > 2e-2 * abs(want):
            raise AssertionError(f"{group}: {name}'s loss {got} is not fastbp's {want}")
    times = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return [{"group": group, "way": name, "median_s": float(np.median(t)),
             "first_call_s": first[name]} for name, t in times.items()]


def table(run):
    """The run's host, provenance and two tables as Markdown (report.py puts it in RESULTS.md's
    bfloat16 section)."""
    lines = [f"Host: {host_line(run['host'])}; {run.get('threads', '?')} threads. "
             f"{provenance_line(run['provenance'])}"]
    if run["accuracy"]:
        lines += ["", "| group | way | loss rel. error | dW rel. error | dX rel. error |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['group']} | {r['way']} | {r['loss']:.1e} | {r['dW']:.1e} | "
                  f"{r['dX']:.1e} |" for r in run["accuracy"]]
    if run["timings"]:
        lines += ["", "| group | way | median | first call |", "|---|---|---|---|"]
        lines += [f"| {r['group']} | {r['way']} | {r['median_s'] * 1e3:,.2f} ms | "
                  f"{r['first_call_s']:.2f} s |" for r in run["timings"]]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--groups", default="C,V", help="accuracy groups")
    ap.add_argument("--timing-groups", default="C,K,V")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--accuracy-only", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    backends = [be for be in ("c", "numba") if be in fastbp.available_backends()]
    run = {"host": host(), "provenance": provenance(), "threads": fastbp.get_num_threads(),
           "accuracy": [r for group in args.groups.split(",")
                        for r in accuracy(group, backends[0])],
           "timings": [] if args.accuracy_only else [
               r for group in args.timing_groups.split(",")
               for r in timings(group, backends, args.rounds)]}
    print(table(run))
    if args.json:
        Path(args.json).write_text(json.dumps(run, indent=1))


if __name__ == "__main__":
    main()
