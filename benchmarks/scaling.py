"""Threads 1, 2, 4 ... up to the machine's cores: fastbp's compiled backends beside their peers.

    python benchmarks/scaling.py [--threads 1,2,4] [--groups C,V] [--json FILE]
                                 [--time-limit SECONDS] [--per-core]

(``make bench-scaling``: every group, threads 1, 2, 4 ... up to the cores; ``make
bench-percore``: one thread and all of them, in minutes.)

Each thread count runs in a fresh process pinned to that many cores (``sched_setaffinity``
before any library loads, so BLAS, OpenMP, Numba, PyTorch and XLA all size their pools to it),
with ``fastbp.set_num_threads(t)`` and ``torch.set_num_threads(t)``. Every row is first checked
against the NumPy reference (``conftest.assert_matches_reference``), then timed: the median of
repeated calls (at least MIN_CALLS, for about BUDGET_S). Each process also measures the GEMM
rate of its cores: a 1024^3 product per dtype, the best of NumPy's BLAS and PyTorch. Prints one
table per group -- each row's time at every thread count, its speed-up (time at 1 thread /
time at t), for the linear groups its efficiency (the three products' 6 B d n flops / the time
/ that GEMM rate: 1.0 is the core's GEMM rate) and each fastbp backend's ratio to the fastest
peer at t -- and the host: CPU model, family / model and micro-architecture, vector ISA,
whether 512-bit FMAs run full width, bf16 support, cores and the DGEMM rate, then the date,
the commit and every library's version. ``--json`` keeps all of it, rewritten after each
thread count. One thread and the most run first, then the counts between; with
``--time-limit`` a count cut short keeps the groups it finished and the rest are left out (a
host lent for a few minutes still returns the columns that matter most).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUDGET_S, MIN_CALLS = 0.4, 3
FASTBP = ("c", "numba")          # the compiled backends, where available (_compiled)
# (group, kind, preset or shape, dtype): linear_head softmax_nll at the presets (few classes in
# both dtypes, as the targets ask), the heads on scores, the 2-layer net, a training epoch
GROUPS = [(f"{s} {dt}", "linear", s, dt) for s in ("T", "D") for dt in ("float64",)] + [
    (f"{s} {dt}", "linear", s, dt) for s in ("C", "C1k", "K", "M")
    for dt in ("float32", "float64")] + [
    ("V float32", "linear", "V", "float32"), ("P float32", "filtered", "P", "float32"),
    ("heads 256x1000 float64", "heads", (256, 1000), "float64"),
    ("net 3072-100-10 float64", "net", None, "float64"),
    ("train epoch digits float32", "train", None, "float32")]
TORCH_COMPILE = ("V float32", "C float32")     # its compilation costs tens of seconds per shape


def _compiled():
    import fastbp
    return tuple(be for be in FASTBP if be in fastbp.available_backends())


def _timed(call):
    call()
    times, start = [], time.perf_counter()
    while len(times) < MIN_CALLS or time.perf_counter() - start < BUDGET_S:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _linear_rows(group, preset, dtype, filtered):
    import fastbp
    from fastbp import peers
    from conftest import linear_data
    X, W, b, y = linear_data(preset, "softmax_nll", dtype)
    opts = {"filter_eps": "auto"} if filtered else {}
    want = fastbp.linear_head(X, W, b, y, backend="numpy")
    want = (want.loss, want.dW, want.db, want.dX)
    rows = {"numpy": (lambda: fastbp.linear_head(X, W, b, y, backend="numpy"), want)}
    for be in _compiled():
        rows[be] = (lambda be=be: fastbp.linear_head(X, W, b, y, backend=be, **opts), want)
    if filtered:           # filter_eps changes dW and dX by up to ~1e-4 (docs/math.md)
        return rows, 1e-3
    names = ["torch eager", "jax jit"] + (["torch.compile"] if group in TORCH_COMPILE else [])
    for peer in names:
        if peers.available(peer):
            run = peers.linear_head(peer, "softmax_nll", X, W, b, y)
            rows[peer] = (run, want, run.result)
    return rows, None


def _heads_rows(shape, dtype):
    import numpy as np

    import fastbp
    rng = np.random.default_rng(0)
    S = rng.standard_normal(shape).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    want = fastbp.softmax_nll(S, y, backend="numpy")
    rows = {be: (lambda be=be: fastbp.softmax_nll(S, y, backend=be), want)
            for be in ("numpy",) + _compiled()}
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return rows, None
    St, yt = torch.from_numpy(S.copy()).requires_grad_(), torch.from_numpy(y)

    def torch_eager():
        St.grad = None
        loss = F.cross_entropy(St, yt)
        loss.backward()
        return float(loss), St.grad.numpy()
    rows["torch eager"] = (torch_eager, want)
    return rows, None


def _net_rows(dtype):
    import fastbp
    from test_bench_mlp import net
    X, params, y = net(dtype)
    want = fastbp.mlp_loss_grad(X, params, y, activation="sigmoid", backend="numpy")
    return {be: (lambda be=be: fastbp.mlp_loss_grad(X, params, y, activation="sigmoid",
                                                     backend=be), want)
            for be in ("numpy",) + _compiled()}, None


def _train_rows(dtype):
    """One epoch of `fastbp train`'s defaults on the digits (the loss after it is compared)."""
    from fastbp.train import load_dataset, train
    data = load_dataset("digits", dtype=dtype, seed=0)

    def epoch(be):
        return train(backend=be, epochs=1, data=data, dtype=dtype)[1].losses[-1]
    want = epoch("numpy")
    return {be: (lambda be=be: epoch(be), want) for be in ("numpy",) + _compiled()}, 1e-3


def gemm_rates():
    """{dtype: flops per second} of a 1024^3 product on this process's cores: the best of
    NumPy's BLAS and PyTorch (the rate a peer could reach on a large product)."""
    import numpy as np
    out = {}
    for dtype in ("float32", "float64"):
        A = np.random.default_rng(0).standard_normal((1024, 1024)).astype(dtype)
        calls = [lambda: A @ A]
        try:
            import torch
            At = torch.from_numpy(A)
            calls.append(lambda: At @ At)
        except ImportError:
            pass
        best = min(min(_once(call) for _ in range(7)) for call in calls if call() is not None)
        out[dtype] = 2 * 1024 ** 3 / best
    return out


def child(threads, names):
    """One process at ``threads`` cores: {group: {row: median seconds}}, each group also
    printed as a JSON line as soon as it is measured."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    sys.path.insert(0, HERE)
    import fastbp
    from conftest import assert_matches_reference
    fastbp.set_num_threads(threads)
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass
    out = {}
    print(json.dumps({"_gemm": gemm_rates()}), flush=True)
    for group, kind, what, dtype in GROUPS:
        if names and group.split()[0] not in names:
            continue
        if kind in ("linear", "filtered"):
            rows, rtol = _linear_rows(group, what, dtype, kind == "filtered")
        elif kind == "heads":
            rows, rtol = _heads_rows(what, dtype)
        elif kind == "net":
            rows, rtol = _net_rows(dtype)
        else:
            rows, rtol = _train_rows(dtype)
        out[group] = {}
        for name, (call, want, *result) in rows.items():
            got = (result[0] if result else call)()
            if rtol is None:
                assert_matches_reference(tuple(got) if isinstance(got, tuple) else got, want,
                                         dtype)
            else:
                _close(got, want, rtol)
            out[group][name] = _timed(call)
            print(f"  {threads:3d} threads  {group:28s} {name:18s} "
                  f"{1e6 * out[group][name]:12,.1f} us", file=sys.stderr, flush=True)
        print(json.dumps({group: out[group]}), flush=True)     # a line per group
    return out


def _close(got, want, rtol):
    import numpy as np
    if hasattr(want, "loss"):
        got, want = (got.loss, got.dW, got.db, got.dX), (want.loss, want.dW, want.db, want.dX)
    for g, w in zip(np.atleast_1d(got) if np.isscalar(got) else got,
                    np.atleast_1d(want) if np.isscalar(want) else want):
        w = np.asarray(w, np.float64)
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol,
                                   atol=rtol * float(np.abs(w).max(initial=0.0)))


# (vendor, family, model range) -> micro-architecture, whether its 512-bit FMAs run full width
_UARCH = [("AuthenticAMD", 25, range(0, 16), "Zen 3", None),
          ("AuthenticAMD", 25, range(16, 32), "Zen 4", False),
          ("AuthenticAMD", 25, range(96, 128), "Zen 4", False),
          ("AuthenticAMD", 26, range(0, 256), "Zen 5", True),
          ("GenuineIntel", 6, range(143, 144), "Sapphire Rapids", True),
          ("GenuineIntel", 6, range(207, 208), "Emerald Rapids", True),
          ("GenuineIntel", 6, range(173, 174), "Granite Rapids", True),
          ("GenuineIntel", 6, range(106, 107), "Ice Lake", True),
          ("GenuineIntel", 6, range(85, 86), "Skylake / Cascade Lake", True)]


def uarch(vendor, family, model):
    """(micro-architecture name, 512-bit FMAs full width: True / False / None) by CPUID."""
    for v, fam, models, name, full in _UARCH:
        if v == vendor and fam == family and model in models:
            return name, full
    return "unknown", None


def provenance():
    """When, at which commit, with which library versions a run measured (RESULTS.md names
    them under each section)."""
    import datetime
    from importlib import metadata
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    versions = {}
    for dist in ("fastbp", "numpy", "numba", "scipy", "torch", "jax", "jaxlib", "dask",
                 "dask-ml", "scikit-learn"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    from fastbp.backends import tuning     # (a `fastbp tune` cache, if any, applies)
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit or "unknown", "python": platform.python_version(),
            "versions": versions, "thresholds": tuning.SOURCE["source"]}


def provenance_line(p):
    return (f"Run {p['date']} at commit {p['commit']}; python {p['python']}, "
            + ", ".join(f"{k} {v}" for k, v in p["versions"].items())
            + f"; thresholds: {p.get('thresholds', 'shipped defaults')}")


def host():
    """What a row's ratios depend on: the CPU, its micro-architecture and vector ISA, the
    cores, BLAS's DGEMM rate."""
    import numpy as np
    info = {"machine": platform.machine(), "cores": len(os.sched_getaffinity(0))}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines()
                      if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("flags", "").split())
        info.update(cpu=fields.get("model name"), family=fields.get("cpu family"),
                    model=fields.get("model"),
                    vector_bits=512 if "avx512f" in flags else 256 if "avx2" in flags else 128,
                    isa="AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags
                    else "SSE", bf16=[f for f in ("avx512_bf16", "amx_bf16") if f in flags])
        info["uarch"], info["fma512_full"] = uarch(fields.get("vendor_id"),
                                                   int(fields.get("cpu family", -1)),
                                                   int(fields.get("model", -1)))
    except OSError:
        info["cpu"] = platform.processor()
    A = np.random.default_rng(0).standard_normal((2048, 2048))
    A @ A
    seconds = min(_once(lambda: A @ A) for _ in range(5))
    info["dgemm_gflops"] = round(2 * 2048 ** 3 / seconds / 1e9, 1)
    return info


def _once(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def host_line(h):
    if "isa" not in h:          # (a run from before the micro-architecture was recorded)
        return (f"{h.get('cpu')} (family {h.get('family')}, model {h.get('model')}), "
                f"{h.get('vector_bits')}-bit vectors, {h['cores']} cores, DGEMM "
                f"{h['dgemm_gflops']} GFLOP/s on all of them")
    fma = {True: "512-bit FMAs full width", False: "512-bit FMAs on 256-bit pipes"}.get(
        h.get("fma512_full"), "") if h["isa"] == "AVX-512" else ""
    return (f"{h.get('cpu')} (family {h.get('family')}, model {h.get('model')}: "
            f"{h.get('uarch')}), {h['isa']}{', ' + fma if fma else ''}, bf16: "
            f"{', '.join(h.get('bf16') or []) or 'no'}, {h['cores']} cores, DGEMM "
            f"{h['dgemm_gflops']} GFLOP/s on all of them")


def _flops(group):
    """The three products' flops of a linear group (6 B d n), else None."""
    from fastbp.presets import SHAPES
    shape = SHAPES.get(group.split()[0])
    if shape is None or group.split()[0] in ("T", "D", "P"):
        return None
    B, d, n, _ = shape
    return 6 * B * d * n


def report(result):
    lines = [f"Host: {host_line(result['host'])}"]
    if "provenance" in result:
        lines += ["", provenance_line(result["provenance"])]
    lines += ["", "Each cell: the median in us at t threads (the speed-up from 1 thread); in "
              "the linear groups \"eff\" is the efficiency, 6 B d n flops / time / the GEMM "
              "rate of a 1024^3 product of the dtype measured in the same process (best of "
              "NumPy's BLAS and PyTorch; the rates are under the tables); for fastbp's rows "
              "also its ratio to the fastest peer at t (NumPy's reference included).", ""]
    counts = result["threads"]
    for group in result["groups"]:
        per = {t: result["times"].get(str(t), {}).get(group, {}) for t in counts}
        flops, dtype = _flops(group), group.split()[-1]
        rate = {t: result["times"].get(str(t), {}).get("_gemm", {}).get(dtype) for t in counts}
        names = list(dict.fromkeys(name for t in counts for name in per[t]))
        lines += [f"#### {group}", ""]
        lines.append("| row | " + " | ".join(f"t={t}" for t in counts) + " |")
        lines.append("|---|" + "---|" * len(counts))
        for name in names:
            cells = []
            for t in counts:
                s = per[t].get(name)
                if s is None:
                    cells.append("")
                    continue
                base = per[counts[0]].get(name)
                cell = f"{1e6 * s:,.0f}" + (f" ({base / s:.1f}x)" if base else "")
                if flops and rate[t]:
                    cell += f", eff {flops / s / rate[t]:.2f}"
                peers = [v for k, v in per[t].items() if k not in FASTBP]
                if name in FASTBP and peers:
                    cell += f", {min(peers) / s:.2f}x"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    rates = [(t, result["times"].get(str(t), {}).get("_gemm")) for t in counts]
    if any(r for _, r in rates):
        lines += ["GEMM rate per thread count (GFLOP/s, 1024^3, best of NumPy's BLAS and "
                  "PyTorch): " + "; ".join(
                      f"t={t}: sgemm {r['float32'] / 1e9:.0f}, dgemm {r['float64'] / 1e9:.0f}"
                      for t, r in rates if r), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = len(os.sched_getaffinity(0))
    default = sorted({min(2 ** k, cores) for k in range(cores.bit_length() + 1)})
    parser.add_argument("--threads", default=",".join(map(str, default)))
    parser.add_argument("--groups", default="", help="e.g. C,V (the first word of a group)")
    parser.add_argument("--json", help="write the host, the times and the table here (after "
                        "each thread count, so a run cut short keeps what it measured)")
    parser.add_argument("--time-limit", type=float, help="seconds for the whole run: 1 thread "
                        "and the most run first, a thread count cut short keeps its groups")
    parser.add_argument("--per-core", action="store_true", help="threads 1 and all the cores "
                        "only (make bench-percore)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [g for g in args.groups.split(",") if g]
    if args.child:
        child(args.child, names)
        return
    start = time.perf_counter()
    counts = sorted({1, cores} if args.per_core else {int(t) for t in args.threads.split(",")})
    order = [counts[0], counts[-1]] + counts[1:-1] if len(counts) > 1 else counts
    result = {"host": host(), "provenance": provenance(), "threads": counts, "times": {}}
    for t in order:
        left = None if args.time_limit is None else args.time_limit - (time.perf_counter() - start)
        if left is not None and left < 5:
            break
        command = [sys.executable, __file__, "--child", str(t), "--groups", args.groups]
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=left)
            stdout, stderr = out.stdout, out.stderr
            out.check_returncode()
        except subprocess.TimeoutExpired as cut:
            stdout, stderr = _text(cut.stdout), _text(cut.stderr)
            stderr += f"{t} threads: cut at the time limit\n"
        sys.stderr.write(stderr)
        result["times"][str(t)] = {k: v for line in stdout.splitlines() if line.strip()
                                   for k, v in json.loads(line).items()}
        _finish(result, args.json)
    print(result["table"])


def _text(b):
    return b.decode() if isinstance(b, bytes) else (b or "")


def _finish(result, path):
    """The table of what was measured so far, and the JSON file."""
    result["groups"] = list(dict.fromkeys(g for t in result["times"].values() for g in t
                                          if not g.startswith("_")))
    result["table"] = report(result)
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
