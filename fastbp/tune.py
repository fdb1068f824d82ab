"""``fastbp tune``: measure on this machine the thresholds its CPU's features cannot decide
(``backends/tuning.py``'s MEASURED) and cache them per CPU model, where every later process
reads them at import (docs/performance.md, "fastbp tune").

Each threshold is a crossover between two of a compiled backend's paths, found by timing both
paths in turn within every round (a host that slows down slows both) at a ladder of shapes, the
median over the rounds: the few-class window (FUSED_FEW_N: the fused rows on one block against
the chunked BLAS path, one thread, both dtypes), the fused rows on every thread
(FUSED_MIN_WORK / _F32: against what the plan runs otherwise, all threads) and the chunked
path's scores on fastbp's own products (OWN_ISAS: against BLAS's, many classes, all threads).
Where a window ends is the split of the ladder with the least total time relative to the
faster path at each shape (``split``): a near tie, which noise can tip, moves it little.
"""
import datetime
import json
import os
import time

import numpy as np

from . import _dispatch
from .backends import tuning

# (ladders, B, d, n) of the full run and of --quick (a check that every step runs, in seconds)
SHAPES = {
    "full": {"few_n": (4, 8, 12, 16, 24, 32), "few_bd": (256, 1024),
             "work_rows": (16, 32, 64, 128, 256, 512, 1024), "work_dn": (784, 10),
             "own": (256, 512, 8192), "rounds": 7},
    "quick": {"few_n": (4, 8), "few_bd": (16, 64), "work_rows": (16, 64), "work_dn": (64, 10),
              "own": (16, 64, 256), "rounds": 1},
}
NEVER = 1 << 62


class _Settings:
    """``with _Settings(T, **values):`` -- a backend's TUNING with these values, then restored."""

    def __init__(self, T, **values):
        self.T, self.values, self.saved = T, values, {}

    def __enter__(self):
        for k, v in self.values.items():
            self.saved[k] = getattr(self.T, k)
            setattr(self.T, k, v)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            setattr(self.T, k, v)


def _problem(B, d, n, dtype, rng):
    X = rng.standard_normal((B, d)).astype(dtype)
    W = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
    b, y = np.zeros(n, dtype), rng.integers(0, n, B)
    out = [np.empty_like(W), np.empty_like(b), np.empty_like(X)]
    return X, W, b, y, out


def race(backend, problem, paths, rounds):
    """{path name: median seconds} of linear_head on ``problem`` under each of ``paths``
    ({name: TUNING values}), each timed in turn within every round after a warm-up call; the
    paths' results are checked equal first (a path that computes something else is a bug)."""
    from .layers import Grads, linear_head
    T = _dispatch.backend_module(backend).TUNING
    X, W, b, y, out = problem
    grads = Grads(None, *out)
    first = None
    for name, values in paths.items():
        with _Settings(T, **values):
            got = [np.copy(a) for a in linear_head(X, W, b, y, out=grads, backend=backend)]
        if first is None:
            first = got
        for a, want in zip(got, first):
            rtol = 1e-3 if X.dtype == np.float32 else 1e-9
            if not np.allclose(a, want, rtol=rtol, atol=rtol * np.abs(want).max()):
                raise AssertionError(f"fastbp tune: {backend} path {name!r} differs from "
                                     f"{next(iter(paths))!r} at {X.shape}, {W.shape}")
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, values in paths.items():
            with _Settings(T, **values):
                linear_head(X, W, b, y, out=grads, backend=backend)
                t0 = time.perf_counter()
                linear_head(X, W, b, y, out=grads, backend=backend)
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def split(times):
    """The k minimising the ladder's total relative time when path a runs its first k steps and
    path b the rest: ``times`` a list of (a's, b's) per step; each step counts its time over
    the faster path's, so a near tie costs little whichever way noise tips it (the first such
    k, the fewest steps on a, on a tie)."""
    cost = [sum(a / min(a, b) for a, b in times[:k]) + sum(b / min(a, b) for a, b in times[k:])
            for k in range(len(times) + 1)]
    return cost.index(min(cost))


def few_n(backend, shapes, rng, progress):
    """FUSED_FEW_N: the class count up to which the fused rows on one block beat the chunked
    path at one thread (split of the ladder of class counts, both dtypes counted alike)."""
    B, d = shapes["few_bd"]
    rows, steps = [], []
    for n in shapes["few_n"]:
        step = [0.0, 0.0]
        for dtype in ("float32", "float64"):
            t = race(backend, _problem(B, d, n, dtype, rng),
                     {"fused": {"FUSED_FEW_N": n, "FUSED_FEW_MIN_D": 0,
                                "FUSED_FEW_WEIGHTS": NEVER},
                      "chunked": {"FUSED_FEW_N": 0, "FUSED_ANY_N_WEIGHTS": 0}},
                     shapes["rounds"])
            rows.append({"backend": backend, "threshold": "FUSED_FEW_N", "B": B, "d": d,
                         "n": n, "dtype": dtype, "threads": 1, **t})
            step[0] += t["fused"] / t["chunked"]          # (each dtype counts the same)
            step[1] += 1.0
            progress()
        steps.append(step)
    k = split(steps)
    return (shapes["few_n"][k - 1] if k else 0), rows


def min_work(backend, dtype, threads, shapes, rng, progress):
    """FUSED_MIN_WORK (float64) / _F32: the work B n d from which the fused rows on all
    threads beat what the plan runs otherwise (split of the ladder of batch sizes)."""
    T = _dispatch.backend_module(backend).TUNING
    key = "FUSED_MIN_WORK_F32" if dtype == "float32" else "FUSED_MIN_WORK"
    d, n = shapes["work_dn"]
    ladder = [B for B in shapes["work_rows"] if B >= max(T.FUSED_MIN_ROWS, 2 * threads)]
    if not ladder:                       # (no shape of the ladder splits over these threads)
        return getattr(T, key), []
    rows, steps = [], []
    for B in ladder:
        t = race(backend, _problem(B, d, n, dtype, rng),
                 {"parallel": {key: 0, "FUSED_MAX_N": max(n, T.FUSED_MAX_N)},
                  "otherwise": {key: NEVER}}, shapes["rounds"])
        rows.append({"backend": backend, "threshold": key, "B": B, "d": d, "n": n, "dtype": dtype,
                     "threads": threads, **t})
        steps.append((t["otherwise"], t["parallel"]))
        progress()
    k = split(steps)
    return (max(ladder[k] * n * d, T.PARALLEL_MIN_WORK) if k < len(ladder) else NEVER), rows


def own_isas(backend, threads, shapes, rng, progress):
    """OWN_ISAS: this CPU's ISA if the chunked path's scores on fastbp's own products beat
    BLAS's at many classes (float32, all threads), else none."""
    B, d, n = shapes["own"]
    isa = tuning.host_isa()
    chunked = {"FUSED_MAX_N": 0, "FUSED_ANY_N_WEIGHTS": 0, "FUSED_FEW_N": 0, "ONE_BLOCK": False,
               "OWN_ROW_ALIGN": 1, "OWN_ISAS": (isa,)}
    t = race(backend, _problem(B, d, n, "float32", rng),
             {"own": {**chunked, "OWN_SCORES_MIN_WEIGHTS": 0},
              "blas": {**chunked, "OWN_SCORES_MIN_WEIGHTS": NEVER}}, shapes["rounds"])
    progress()
    row = {"backend": backend, "threshold": "OWN_ISAS", "B": B, "d": d, "n": n, "dtype": "float32",
           "threads": threads, **t}
    return ([isa] if t["own"] < t["blas"] else []), [row]


def steps(backends, threads, shapes):
    """How many timed steps run() takes (for a progress bar)."""
    per = 2 * len(shapes["few_n"]) + 1
    if threads > 1:
        per += 2 * len(shapes["work_rows"])
    return per * len(backends)


def run(backends=None, quick=False, save=True, progress=None):
    """Measure MEASURED on each compiled backend here, apply the values to this process and
    (``save``) write this CPU model's cache; returns the cache's contents."""
    from threadpoolctl import threadpool_limits
    shapes = SHAPES["quick" if quick else "full"]
    progress = progress or (lambda: None)
    names = [b for b in (backends or ("c", "numba")) if b in _dispatch.available_backends()]
    threads = _dispatch.get_num_threads()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    tuning.reset_measured()              # each measurement starts from the shipped values
    values, rows = {}, []
    for backend in names:
        module = _dispatch.backend_module(backend)
        v = values[backend] = {}
        try:
            with threadpool_limits(1):
                module.set_num_threads(1)
                v["FUSED_FEW_N"], r = few_n(backend, shapes, rng, progress)
                rows += r
        finally:
            module.set_num_threads(threads)
        with _Settings(module.TUNING, FUSED_FEW_N=v["FUSED_FEW_N"]):
            if threads > 1:
                for dtype in ("float32", "float64"):
                    key = "FUSED_MIN_WORK_F32" if dtype == "float32" else "FUSED_MIN_WORK"
                    v[key], r = min_work(backend, dtype, threads, shapes, rng, progress)
                    rows += r
            v["OWN_ISAS"], r = own_isas(backend, threads, shapes, rng, progress)
            rows += r
    data = {"format": tuning.CACHE_FORMAT, "fastbp": tuning.fastbp_version(),
            "cpu": tuning.cpu_model(), "isa": tuning.host_isa(), "threads": threads,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - start, 1), "quick": quick,
            "values": values, "timings": rows}
    path = tuning.cache_path() if save else None
    if save:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)            # (another process reads the old file or the new one)
    tuning.apply_measured(data, path)
    return data


def table(data):
    """The timings behind the values, then the values, as text."""
    head = ("backend", "threshold", "B", "d", "n", "dtype", "threads")
    lines = [f"{'backend':<7} {'threshold':<19} {'B':>5} {'d':>5} {'n':>5} {'dtype':>7} "
             f"{'thr':>3}  median us"]
    for r in data["timings"]:
        t = ", ".join(f"{k} {v * 1e6:,.0f}" for k, v in r.items() if k not in head)
        lines.append(f"{r['backend']:<7} {r['threshold']:<19} {r['B']:>5} {r['d']:>5} "
                     f"{r['n']:>5} {r['dtype']:>7} {r['threads']:>3}  {t}")
    lines.append("")
    for backend, v in data["values"].items():
        shown = ", ".join(f"{k}={'never' if x == NEVER else x}" for k, x in v.items())
        lines.append(f"{backend}: {shown}")
    return "\n".join(lines)
