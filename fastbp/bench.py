"""``fastbp bench``: linear_head at the shape presets over the available backends (and the
installed peers), one table -- the same columns as benchmarks/RESULTS.md, without pytest."""
import numpy as np

from . import _dispatch, peers, presets
from .compare import fmt_s, median_time
from .layers import linear_head

GRIDS = {"quick": ("T", "D", "C"), "full": ("T", "D", "C", "V", "P", "L")}
HEADS = ("softmax_nll", "multiclass_hinge", "sigmoid_l2")
LARGE = ("V", "P", "L")     # output layers of many classes: softmax_nll only
FILTERED = ("P",)           # a trained model's peaked softmax: the compiled backends with
#                             filter_eps="auto" too


def cases(preset):
    """The (shape, head) pairs a preset times."""
    return [(shape, head) for shape in GRIDS[preset]
            for head in (("softmax_nll",) if shape in LARGE else HEADS)]


def run(preset="quick", with_peers=False, progress=None):
    rows = []
    for shape, head in cases(preset):
        X, W, b, target = presets.linear_data(shape, head)
        repeats = 5 if shape in ("C",) + LARGE else 200
        timed = {be: (lambda be=be: linear_head(X, W, b, target, head, backend=be))
                 for be in _dispatch.available_backends()}
        if shape in FILTERED:
            timed.update({f"{be}, filter_eps auto": (
                lambda be=be: linear_head(X, W, b, target, head, backend=be, filter_eps="auto"))
                for be in _dispatch.available_backends() if be != "numpy"})
        dS = np.full((X.shape[0], W.shape[0]), 0.5, X.dtype)
        timed["bare BLAS"] = lambda: (X @ W.T, dS.T @ X, dS @ W)
        if with_peers:
            timed.update({p: peers.linear_head(p, head, X, W, b, target)
                          for p in peers.PEERS
                          if peers.available(p) and peers.supports(p, head)})
        row = {"shape": shape, "head": head,
               "seconds": {name: median_time(fn, repeats) for name, fn in timed.items()}}
        rows.append(row)
        if progress is not None:
            progress()
    return rows


def table(rows):
    head = ("shape", "head", "row", "median", "vs numpy", "vs bare BLAS", "vs best peer")
    lines = [head]
    for r in rows:
        sec = r["seconds"]
        peer_times = [t for name, t in sec.items() if name in peers.PEERS]
        for name, t in sorted(sec.items(), key=lambda kv: kv[1]):
            ours = name.split(",")[0] in _dispatch.available_backends()
            lines.append((r["shape"], r["head"], name, fmt_s(t), f"{sec['numpy'] / t:.2f}x",
                          f"{t / sec['bare BLAS']:.2f}x",
                          f"{min(peer_times) / t:.2f}x" if ours and peer_times else ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                     enumerate(zip(line, widths))) for line in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)
