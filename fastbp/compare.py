"""Naive explicit Jacobians against the fused kernels: time and peak memory, side by side.

Every figure is measured in this run: time is the median of a few calls (``time.perf_counter``),
peak memory is ``tracemalloc``'s peak during one more call (it sees NumPy's and Numba's array
allocations), plus, for the C backend, the scratch its kernels held at most (counted exactly by
the kernels' allocator: tracemalloc does not see C's heap). Where the naive path refuses a size
(``JacobianTooLarge``), the table shows its predicted bytes (``naive.jacobian_bytes``) instead,
marked ``>``. A ratio is only printed where both sides measured a positive size.
"""
import ctypes
import statistics
import time
import tracemalloc

import numpy as np

from . import _bf16, _dispatch, layers, naive
from . import _math
from .errors import JacobianTooLarge, human_bytes

PRESETS = {
    # name: (batch sizes, repeats)
    "quick": ((8, 32, 128, 256), 3),
    "full": ((8, 32, 128, 512, 2048), 5),
}


def median_time(fn, repeats):
    """Median seconds of ``repeats`` calls, after one warm-up call (compilation excluded)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _measure(fn, repeats, backend="numpy"):
    """(median seconds, peak bytes): tracemalloc's peak, plus the C kernels' scratch peak."""
    seconds = median_time(fn, repeats)
    scratch = _dispatch.backend_module(backend).scratch_bytes if backend == "c" else None
    tracemalloc.start()
    try:
        if scratch is not None:
            scratch(reset=True)
        fn()
        peak = tracemalloc.get_traced_memory()[1] + (scratch() if scratch is not None else 0)
    finally:
        tracemalloc.stop()
    return seconds, peak


def _hwm_kib():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])


def rss_peak(fn):
    """Bytes the process's peak resident set grows by during ``fn()`` (C allocations included):
    freed heap memory is first returned to the system (malloc_trim) and the peak reset to the
    current size (/proc/self/clear_refs, Linux >= 4.0). None where that is not available."""
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        if trim is not None:
            trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _hwm_kib()
    except OSError:
        return None
    fn()
    return 1024 * (_hwm_kib() - before)


def naive_dtype(name):
    """The naive path's dtype in a run of ``name``: float32 for bfloat16 (NumPy's products)."""
    return np.dtype(np.float32) if str(name) == "bfloat16" else np.dtype(name)


def dtype_of(name):
    """A case dtype by name: float32, float64 or bfloat16 (ml_dtypes')."""
    return _bf16.bf16() if str(name) == "bfloat16" else np.dtype(name)


def cases(B, dtype, rng, feats=64):
    """The notes' cases at batch size B: name -> (naive fn, {backend: fused fn}, predicted bytes)
    (``feats``: the width of the elementwise layer). bfloat16: the fused calls on bfloat16
    arrays, the naive path (NumPy's products) on the same values in float32."""
    d, h, n = 32, 16, 10
    low = str(dtype) == "bfloat16"
    dtype = np.dtype(np.float32) if low else dtype
    X = rng.standard_normal((B, d)).astype(dtype)
    y = rng.integers(0, n, B)
    Z = rng.random((B, n)).astype(dtype)
    W1, b1 = (0.3 * rng.standard_normal((h, d))).astype(dtype), np.zeros(h, dtype)
    W2, b2 = (0.3 * rng.standard_normal((n, h))).astype(dtype), np.zeros(n, dtype)
    W, b = (0.3 * rng.standard_normal((n, d))).astype(dtype), np.zeros(n, dtype)
    S = rng.standard_normal((B, feats)).astype(dtype)
    dA = rng.standard_normal((B, feats)).astype(dtype)
    if low:       # the arrays' bfloat16 values: the fused calls' (lo) and, in float32, naive's
        lo = {k: v.astype(_bf16.bf16()) for k, v in
              dict(X=X, Z=Z, W1=W1, b1=b1, W2=W2, b2=b2, W=W, b=b).items()}
        X, Z, W1, b1, W2, b2, W, b = (lo[k].astype(np.float32) for k in lo)
        S, dA = (a.astype(_bf16.bf16()).astype(np.float32) for a in (S, dA))
    else:
        lo = dict(X=X, Z=Z, W1=W1, b1=b1, W2=W2, b2=b2, W=W, b=b)
    params = [(W1, b1), (W2, b2)]
    low_params = [(lo["W1"], lo["b1"]), (lo["W2"], lo["b2"])]
    backends = _dispatch.available_backends()

    def fused_elementwise():    # the collapsed product the naive Jacobian computes: dA * f'(s)
        return dA * _math.activation_grad("sigmoid", _math.sigmoid(S), None)

    def one_layer(head, target):
        low_target = lo["Z"] if target is Z else target
        return (lambda: naive.linear_head(X, W, b, target, head),
                {be: (lambda be=be: layers.linear_head(lo["X"], lo["W"], lo["b"], low_target,
                                                       head, backend=be))
                 for be in backends},
                naive.jacobian_bytes("linear_head", B=B, d=d, n=n, dtype=dtype, head=head))

    return {
        f"elementwise sigmoid ({feats} features)": (
            lambda: naive.elementwise_backward("sigmoid", dA, S),
            {"numpy": fused_elementwise},
            naive.jacobian_bytes("elementwise", B=B, n=feats, dtype=dtype)),
        f"1-layer sigmoid-L2 ({d}->{n})": one_layer("sigmoid_l2", Z),
        f"1-layer softmax ({d}->{n})": one_layer("softmax_nll", y),
        f"1-layer huber ({d}->{n})": one_layer("huber", Z),
        f"1-layer sigmoid-focal ({d}->{n})": one_layer("sigmoid_focal", Z),
        f"2-layer sigmoid+softmax ({d}->{h}->{n})": (
            lambda: naive.mlp_loss_grad(X, params, y, activation="sigmoid"),
            {be: (lambda be=be: layers.mlp_loss_grad(lo["X"], low_params, y,
                                                     activation="sigmoid", backend=be))
             for be in backends},
            naive.jacobian_bytes("mlp", B=B, d=d, n=n, h=h, dtype=dtype)),
    }


def _row(name, B, dtype, naive_fn, fused, predicted, repeats):
    row = {"case": name, "B": B, "dtype": dtype, "naive_predicted_bytes": predicted}
    try:
        row["naive_s"], row["naive_peak_bytes"] = _measure(naive_fn, repeats)
    except JacobianTooLarge:
        row["naive_s"] = row["naive_peak_bytes"] = None
    row["fused"] = {be: dict(zip(("s", "peak_bytes"), _measure(fn, repeats, be)))
                    for be, fn in fused.items()}
    return row


def _all_cases(sizes, dtype):
    """(name, B, (naive fn, {backend: fused fn}, predicted bytes)) in run()'s order: every case
    at every size, then the notes' own elementwise case (100 vectors of 4096 features)."""
    rng = np.random.default_rng(0)
    for B in sizes:
        for name, args in cases(B, dtype_of(dtype), rng).items():
            yield name, B, args
    name, args = next(iter(cases(100, dtype_of(dtype), rng, feats=4096).items()))
    yield name, 100, args


def run(preset="quick", dtype="float64", progress=None):
    """Measure every case at every size, then the notes' own elementwise case (100 vectors of
    4096 features: the naive path refuses it, the fused path is measured); a list of rows."""
    sizes, repeats = PRESETS[preset]
    rows = []
    for name, B, args in _all_cases(sizes, dtype):
        rows.append(_row(name, B, dtype, *args, repeats))
        if progress is not None:
            progress()
    return rows


def notes_case(dtype="float64"):
    """The notes' minibatch: 100 vectors of 4096 features through an elementwise layer."""
    return naive.jacobian_bytes("elementwise", B=100, n=4096, dtype=naive_dtype(dtype))


def fmt_s(t):
    if t is None:
        return "-"
    for unit, f in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if t >= f or unit == "us":
            return f"{t / f:.3g} {unit}"


def memory_ratio(naive_bytes, fused_bytes, fmt="{:.3g}"):
    """naive / fused, or "-" where either measured nothing: 0 bytes has no ratio."""
    if not naive_bytes or not fused_bytes:
        return "-"
    return fmt.format(naive_bytes / fused_bytes)


def table(rows):
    """An aligned text table: naive vs the fastest fused backend, per case and size."""
    head = ("case", "B", "naive time", "naive peak", "fused time", "fused peak", "backend",
            "time x", "memory x")
    lines = [head]
    for r in rows:
        be, f = min(r["fused"].items(), key=lambda kv: kv[1]["s"])
        if r["naive_s"] is None:
            naive_mem = ">" + human_bytes(r["naive_predicted_bytes"])
            speed = mem = "-"
        else:
            naive_mem = human_bytes(r["naive_peak_bytes"])
            speed = f"{r['naive_s'] / f['s']:.3g}"
            mem = memory_ratio(r["naive_peak_bytes"], f["peak_bytes"])
        lines.append((r["case"], str(r["B"]), fmt_s(r["naive_s"]), naive_mem, fmt_s(f["s"]),
                      human_bytes(f["peak_bytes"]), be, speed, mem))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                     for i, (c, w) in enumerate(zip(line, widths))) for line in lines]
    out.insert(1, "-" * len(out[0]))
    out.append("peak memory: tracemalloc's peak during one call (NumPy's and Numba's arrays), "
               "plus the C kernels' scratch, counted exactly by their allocator")
    return "\n".join(out)


def plot(rows, path):
    """Two log-log panels, time and peak memory against batch size: per case (colour) the
    naive path measured (solid), its predicted bytes (dashed) and each fused backend (dotted)."""
    from .errors import require
    matplotlib = require("matplotlib", "plot", "a plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    cases_ = list(dict.fromkeys(r["case"] for r in rows))
    backends = list(dict.fromkeys(be for r in rows for be in r["fused"]))
    markers = dict(zip(backends, "s^Dvp"))
    colors = dict(zip(cases_, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 5))
    for case in cases_:
        rs = [r for r in rows if r["case"] == case]
        c = colors[case]
        measured = [r for r in rs if r["naive_s"] is not None]
        ax_t.plot([r["B"] for r in measured], [r["naive_s"] for r in measured], "o-", color=c)
        ax_m.plot([r["B"] for r in measured], [r["naive_peak_bytes"] for r in measured], "o-",
                  color=c)
        ax_m.plot([r["B"] for r in rs], [r["naive_predicted_bytes"] for r in rs], "x--",
                  color=c)
        for be in backends:
            pts = [(r["B"], r["fused"][be]) for r in rs if be in r["fused"]]
            ax_t.plot([b for b, _ in pts], [f["s"] for _, f in pts], ":", marker=markers[be],
                      color=c)
            pts = [(b, f) for b, f in pts if f["peak_bytes"] > 0]    # 0 B: no point on a log axis
            ax_m.plot([b for b, _ in pts], [f["peak_bytes"] for _, f in pts], ":",
                      marker=markers[be], color=c)
    ax_t.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="time per call (s)",
             title="time: naive Jacobians vs fused")
    ax_m.set(xscale="log", yscale="log", xlabel="batch size B",
             ylabel="peak memory (bytes; tracemalloc + C scratch)", title="peak memory")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.25)
    style = [Line2D([], [], color="k", marker="o", label="naive, measured"),
             Line2D([], [], color="k", ls="--", marker="x", label="naive, predicted bytes")]
    style += [Line2D([], [], color="k", ls=":", marker=markers[be], label=f"fused ({be})")
              for be in backends]
    ax_t.legend(handles=style, loc="upper left", fontsize=8)
    ax_m.legend(handles=[Line2D([], [], color=colors[c], lw=3, label=c) for c in cases_],
                loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
