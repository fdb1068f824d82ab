"""Turn a pytest-benchmark JSON (and compile_times.py's JSON) into benchmarks/RESULTS.md.

    python benchmarks/report.py RUN.json COMPILE.json [ADAPTERS.json [DASK.json]] \
        > benchmarks/RESULTS.md

`make bench` runs the suites and this script. Every figure comes from those two files: medians
per row, ratios within a group (rows of a group were measured in the same run).
"""
import json
import os
import platform
import re
import sys

import scaling

PAGE = 4096         # RSS grows in pages: a smaller growth is below what it can resolve


def _us(seconds):
    return f"{seconds * 1e6:,.1f}"


_NAMES = {"test_train_sklearn": "scikit-learn MLPClassifier",
          "test_train_torch_eager": "PyTorch eager"}


def _row_name(bench):
    params = bench.get("params") or {}
    if "part" in params:
        part = params["part"]
        return "bare BLAS, SciPy's" + ("" if part == 1 else f", row blocks of B/{part}")
    if "peer" in params:
        return params["peer"]
    if "impl" in params:
        return params["impl"]
    if "variant" in params:
        return f"{params['backend']}, {params['variant']}"
    if "backend" in params:
        when = params.get("when", "back to back")
        return params["backend"] + ("" if when == "back to back" else f", {when}")
    return "bare BLAS" if "bare_blas" in bench["name"] else _NAMES.get(bench["name"],
                                                                        bench["name"])


def _is_fastbp(name):
    return name.split(",")[0] in ("numpy", "numba", "c")


def groups(run):
    out = {}
    for bench in run["benchmarks"]:
        out.setdefault(bench["group"], {})[_row_name(bench)] = bench
    return out


def table(group, rows):
    ref = rows.get("numpy")
    bare = rows.get("bare BLAS")
    has_mem = any("peak_extra_bytes" in r.get("extra_info", {}) for r in rows.values())
    has_acc = any("test_accuracy" in r.get("extra_info", {}) for r in rows.values())
    peers = [r["stats"]["median"] for name, r in rows.items()
             if not _is_fastbp(name) and not name.startswith("bare BLAS")]
    head = ["row", "median (us)", "IQR (us)", "vs numpy reference"]
    if peers:
        head.append("vs best peer")
    if bare:
        head.append("vs bare BLAS")
    if has_mem:
        head.append("peak extra memory (of B x n scores)")
    if has_acc:
        head.append("test accuracy")
    lines = [f"### {group}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["stats"]["median"]):
        st = r["stats"]
        cells = [name, _us(st["median"]), _us(st["iqr"])]
        cells.append(f"{ref['stats']['median'] / st['median']:.2f}x faster" if ref else "")
        if peers:
            cells.append(f"{min(peers) / st['median']:.2f}x faster" if _is_fastbp(name) else "")
        if bare:
            cells.append(f"{st['median'] / bare['stats']['median']:.2f}x the time")
        if has_mem:
            extra = r.get("extra_info", {})
            if "peak_extra_bytes" in extra:
                rss = extra.get("peak_extra_method") == "ru_maxrss"
                if rss and extra["peak_extra_bytes"] < PAGE:   # RSS grows by whole pages
                    cells.append("< 4 kB ru_maxrss")
                else:
                    cells.append(f"{extra['peak_extra_bytes'] / 1e6:.2f} MB "
                                 f"({extra['peak_extra_bytes'] / extra['score_bytes']:.3f})"
                                 f"{' ru_maxrss' if rss else ''}")
            else:
                cells.append("")
        if has_acc:
            cells.append(f"{100 * r['extra_info']['test_accuracy']:.2f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _median(gs, prefix, row):
    """(median, bench) of ``row`` in the first group named ``prefix`` and a space, then more
    (a shape's name never matches a longer one's: C is not C1k)."""
    for name, rows in gs.items():
        if name.startswith(prefix + " ") and row in rows:
            return rows[row]["stats"]["median"], rows[row]
    return None, None


def _group_named(gs, head, shape, dtype):
    from fastbp.presets import SHAPES
    B, d, n, _ = SHAPES[shape]
    name = f"linear_head {head} {shape} (B={B}, d={d}, n={n}, {dtype})"
    return name, gs.get(name, {})


def _peers(rows):
    """(fastest peer's name, median) of a group, or (None, None)."""
    times = {name: r["stats"]["median"] for name, r in rows.items()
             if not _is_fastbp(name) and not name.startswith("bare BLAS")}
    if not times:
        return None, None
    best = min(times, key=times.get)
    return best, times[best]


def _gemm_rate(gs, dtype):
    """BLAS's flops per second on the 1024^3 product of ``dtype`` (the machine's rate on a large
    square GEMM), or None."""
    prefix = "dgemm" if dtype == "float64" else "sgemm"
    peak = next((r["bare BLAS"] for g, r in gs.items() if g.startswith(prefix)), None)
    return peak["extra_info"]["flops"] / peak["stats"]["median"] if peak else None


def _column_bound(shape):
    """Least time of softmax column blocks, in bare BLAS's: they compute X W^T whole, then again
    for every block of scores not kept; at most dW's n d, dX's B d and 1/8 of the B n scores can
    be kept (each block's products at the full products' rate: a lower bound)."""
    from fastbp.presets import SHAPES
    B, d, n, _ = SHAPES[shape]
    return 1 + max(0.0, 1 - d / B - d / n - 1 / 8) / 3


FEW_SHAPES = ("C", "C1k", "M", "K")      # few classes, wide inputs: issue 14's targets


def _few_groups(gs):
    """(head, shape, dtype, rows) of every linear_head group of the run at a FEW_SHAPES shape."""
    for group in sorted(gs):
        m = re.fullmatch(r"linear_head (\w+) (\w+) \(.*, (float\d+)\)", group)
        if m and m[2] in FEW_SHAPES:
            yield m[1], m[2], m[3], gs[group]


def _products(gs, shape, dtype):
    """{product: (own's, OpenBLAS's flops per second)} of the products groups of shape, dtype."""
    out = {}
    for group, rows in gs.items():
        m = re.match(rf"products {shape} {dtype} (.+) \(", group)
        if m and "own" in rows and "OpenBLAS" in rows:
            out[m[1]] = tuple(rows[r]["extra_info"]["flops"] / rows[r]["stats"]["median"]
                              for r in ("own", "OpenBLAS"))
    return out


def products_table(gs):
    """fastbp's own products against OpenBLAS's, each alone (benchmarks/test_bench_products.py)."""
    lines = ["| shape | dtype | product | own GFLOP/s | OpenBLAS GFLOP/s | own / OpenBLAS |",
             "|---|---|---|---|---|---|"]
    for shape in ("V", "K", "L"):
        for dtype in ("float32", "float64"):
            for product, (own, blas) in _products(gs, shape, dtype).items():
                lines.append(f"| {shape} | {dtype} | {product} | {own / 1e9:.1f} | "
                             f"{blas / 1e9:.1f} | {own / blas:.2f}x |")
    return lines


def targets(gs, compile_times):
    """The open issues' targets, checked against this run (met / not met), then the earlier
    issues' targets still held, then tracked numbers of retired targets."""
    out = []

    def check(label, ok, detail):
        out.append(f"| {label} | {detail} | {'met' if ok else '**not met**'} |")

    def track(label, detail):
        out.append(f"| {label} | {detail} | tracked |")

    # Few classes, wide inputs: c >= 1.5x the fastest peer (or 1.1x the flops' time at the
    # GEMM rate, where that is the smaller demand) and >= 2x numpy; numba >= 1.2x the fastest
    for head, shape, dtype, rows in _few_groups(gs):
        peer, pt = _peers(rows)
        if peer is None or "c" not in rows:
            continue
        rate = _gemm_rate(gs, dtype)
        flops = rows["c"]["extra_info"].get("flops")
        floor = flops / rate if rate and flops else None
        want = pt / 1.5
        bound = f"; flops at the GEMM rate: {_us(floor)} us" if floor else ""
        if floor and want < 1.1 * floor:
            want = 1.1 * floor
            bound += ", so the goal is 1.1x that"
        ref = rows.get("numpy", {}).get("stats", {}).get("median")
        for backend, factor in (("c", 1.5), ("numba", 1.2)):
            if backend not in rows:
                continue
            t = rows[backend]["stats"]["median"]
            goal = want if backend == "c" else max(pt / factor, want)
            vs_np = f", {ref / t:.2f}x numpy" if ref else ""
            ok = t <= goal and (backend != "c" or not ref or ref / t >= 2)
            check(f"{backend}: {shape} {head} {dtype} >= {factor}x fastest peer"
                  + (" and >= 2x numpy" if backend == "c" else ""), ok,
                  f"{pt / t:.2f}x {peer}{vs_np} ({_us(t)} us; goal {_us(goal)} us{bound})")
    worst = []
    for group, rows in sorted(gs.items()):
        if "c" in rows and "numba" in rows:
            worst.append((rows["numba"]["stats"]["median"] / rows["c"]["stats"]["median"], group))
    if worst:
        over = [f"{g.split(' (')[0]} {r:.2f}" for r, g in sorted(worst, reverse=True) if r > 1.5]
        check("numba <= 1.5x c in every group", not over,
              f"worst {max(worst)[0]:.2f}x ({max(worst)[1].split(' (')[0]})"
              + (f"; over 1.5x: {', '.join(over)}" if over else ""))

    # The large-vocabulary layer: fastbp's own products, each alone >= 0.9x OpenBLAS's rate
    for product, (own, blas) in sorted(_products(gs, "V", "float32").items()):
        check(f"own product {product} alone at V float32 >= 0.9x OpenBLAS", own >= 0.9 * blas,
              f"{own / blas:.2f}x ({own / 1e9:.0f} against {blas / 1e9:.0f} GFLOP/s)")
    # V at the default budget: c >= 1.15x the fastest peer and <= 1.10x the bare products,
    # numba >= 1.0x and <= 1.25x, both within 1/16 of the scores
    _, vrows = _group_named(gs, "softmax_nll", "V", "float32")
    peer, pt = _peers(vrows)
    bare = vrows.get("bare BLAS")
    for backend, factor, over in (("c", 1.15, 1.10), ("numba", 1.0, 1.25)):
        r = vrows.get(backend)
        if r is None or peer is None or bare is None:
            continue
        t, extra = r["stats"]["median"], r["extra_info"]
        mem = extra.get("peak_extra_bytes", 0) / extra.get("score_bytes", 1)
        ratio = t / bare["stats"]["median"]
        check(f"{backend}: V, default budget: >= {factor}x the fastest peer, <= {over}x bare "
              "BLAS, within 1/16 of the scores", pt / t >= factor and ratio <= over
              and mem <= 1 / 16, f"{pt / t:.2f}x {peer} ({_us(t)} us), {ratio:.2f}x bare BLAS, "
              f"peak extra memory {mem:.3f} of the scores "
              f"({extra.get('peak_extra_method', 'tracemalloc')})")
    for backend in ("c", "numba"):
        for variant in ("score budget 1/16", "score budget 1/4"):
            r = vrows.get(f"{backend}, {variant}")
            if r is not None and peer is not None:
                t = r["stats"]["median"]
                track(f"{backend}: V, {variant} of the scores", f"{pt / t:.2f}x {peer} "
                      f"({_us(t)} us)")
    _, prows = _group_named(gs, "softmax_nll", "P", "float32")
    bare = prows.get("bare BLAS")
    for backend in ("c", "numba"):
        r = prows.get(f"{backend}, filter_eps auto")
        if r is None or bare is None:
            continue
        t, extra = r["stats"]["median"], r["extra_info"]
        ratio = t / bare["stats"]["median"]
        errors = max(extra.get("relative_error_dW", 1.0), extra.get("relative_error_dX", 1.0))
        skipped = extra.get("skipped_tiles")
        check(f"{backend}: P, filter_eps auto <= 0.5x bare BLAS, dW and dX within 1e-4",
              ratio <= 0.5 and errors <= 1e-4,
              f"{ratio:.2f}x ({_us(t)} us), relative errors dW {extra['relative_error_dW']:.1e}"
              f", dX {extra['relative_error_dX']:.1e}"
              + (f", {100 * skipped:.1f}% of (row block, class) tiles skipped"
                 if skipped is not None else ""))

    # The earlier issues' targets still held (T and D: no regression)
    for backend in ("numba", "c"):
        ref_t, _ = _median(gs, "linear_head softmax_nll T", "numpy")
        t, _ = _median(gs, "linear_head softmax_nll T", backend)
        if t is None:
            continue
        check(f"{backend}: T softmax_nll >= 10x numpy, call <= 5 us",
              ref_t / t >= 10 and t <= 5e-6, f"{ref_t / t:.2f}x, {t * 1e6:.2f} us")
        for head in ("softmax_nll", "multiclass_hinge", "sigmoid_l2"):
            ref, _ = _median(gs, f"linear_head {head} D", "numpy")
            mine, _ = _median(gs, f"linear_head {head} D", backend)
            bare, _ = _median(gs, "linear_head softmax_nll D", "bare BLAS")
            check(f"{backend}: D {head} >= 2x numpy", ref / mine >= 2,
                  f"{ref / mine:.2f}x (numpy / bare BLAS: {ref / bare:.2f}x)")
    rows = next((r for g, r in gs.items() if g.startswith("train digits")), {})
    for backend in ("numba", "c"):
        if backend not in rows:
            continue
        mine = rows[backend]["stats"]["median"]
        for peer in _NAMES.values():
            if peer in rows:
                ratio = rows[peer]["stats"]["median"] / mine
                check(f"{backend}: digits training >= 5x faster than {peer}", ratio >= 5,
                      f"{ratio:.2f}x")
        acc = rows[backend]["extra_info"]["test_accuracy"]
        check(f"{backend}: digits test accuracy >= 97% (defaults, 50 epochs)", acc >= 0.97,
              f"{100 * acc:.2f}%")
    if compile_times:
        worst_s = max(r["warm_s"] for r in compile_times.values())
        check("numba: first call per kernel family from a warm cache <= 1 s", worst_s <= 1.0,
              f"worst {worst_s:.3f} s")

    # Retired targets (unreachable with OpenBLAS's products), kept as tracked numbers
    rate = _gemm_rate(gs, "float64")
    for backend in ("numba", "c"):
        bare, _ = _median(gs, "linear_head softmax_nll V", "bare BLAS")
        mine, row = _median(gs, "linear_head softmax_nll V", backend)
        if mine is None:
            continue
        whole, _ = _median(gs, "linear_head softmax_nll V", "bare BLAS, SciPy's")
        floors = []
        for part in (8, 4):
            t, _ = _median(gs, "linear_head softmax_nll V",
                           f"bare BLAS, SciPy's, row blocks of B/{part}")
            if t and whole:
                floors.append(f"row blocks of B/{part}: {t / whole:.2f}x")
        extra = row["extra_info"]
        frac = extra.get("peak_extra_bytes", 0) / extra.get("score_bytes", 1)
        track(f"{backend}: V time / bare BLAS (was: <= 1.10x within 1/8 of the scores)",
              f"{mine / bare:.2f}x at {frac:.3f} of the scores "
              f"({'; '.join(floors + [''])}column blocks at best {_column_bound('V'):.2f}x)")
        ref, _ = _median(gs, "mlp_loss_grad", "numpy")
        mine, _ = _median(gs, "mlp_loss_grad", backend)
        bare, prods = _median(gs, "mlp_loss_grad", "bare BLAS")
        floor = f" (numpy / its two products: {ref / bare:.2f}x" if bare else ""
        if bare and rate:
            best = prods["extra_info"]["flops"] / rate      # the products' time at that rate
            floor += (f"; / their flops at BLAS's {rate / 1e9:.0f} GFLOPS on 1024^3: "
                      f"{ref / best:.2f}x")
        track(f"{backend}: 2-layer 3072-100-10 mlp_loss_grad vs numpy (was: >= 1.5x)",
              f"{ref / mine:.2f}x{floor + ')' if floor else ''}")
    return ["| target | measured | |", "|---|---|---|"] + out


def auto_choices(gs):
    """Per group with both compiled backends: the measured faster one and what "auto" runs
    (the first of fastbp._dispatch._PREFERENCE that is available)."""
    from fastbp import _dispatch
    auto = next(b for b in _dispatch._PREFERENCE if b in ("c", "numba"))
    lines = ["| group | c (us) | numba (us) | measured faster | \"auto\" runs |",
             "|---|---|---|---|---|"]
    for group, rows in sorted(gs.items()):
        if "c" not in rows or "numba" not in rows:
            continue
        c, nb = rows["c"]["stats"]["median"], rows["numba"]["stats"]["median"]
        faster = "c" if c < nb else "numba"
        lines.append(f"| {group} | {_us(c)} | {_us(nb)} | {faster} "
                     f"({max(c, nb) / min(c, nb):.2f}x) "
                     f"| {auto}{'' if auto == faster else ' (**not the faster**)'} |")
    return lines


def in_a_loop(gs):
    """Per "in a loop" group and backend: the median back to back, right after a NumPy product,
    their ratio, and the time relative to the NumPy reference in each setting."""
    after = ", after a NumPy product"
    lines = ["| group | backend | back to back (us) | after a NumPy product (us) | after / back to "
             "back | vs numpy, back to back | vs numpy, after |", "|---|---|---|---|---|---|---|"]
    for group, rows in sorted(gs.items()):
        if not group.startswith("in a loop"):
            continue
        ref, ref_after = rows.get("numpy"), rows.get("numpy" + after)
        for backend in ("c", "numba", "numpy"):
            if backend not in rows or backend + after not in rows:
                continue
            t, ta = rows[backend]["stats"]["median"], rows[backend + after]["stats"]["median"]
            vs = (f"{ref['stats']['median'] / t:.2f}x faster" if ref else "",
                  f"{ref_after['stats']['median'] / ta:.2f}x faster" if ref_after else "")
            lines.append(f"| {group[len('in a loop: '):]} | {backend} | {_us(t)} | {_us(ta)} | "
                         f"{ta / t:.2f}x | {vs[0]} | {vs[1]} |")
    return lines


THREADS_HEADING = "## Threads: 1, 2, 4 ... up to the cores"


def threads_section(path):
    """RESULTS.md's Threads section from a scaling.py JSON file (its host line, date, commit
    and versions come with its table)."""
    return [THREADS_HEADING, "",
            "`make bench-scaling` (`benchmarks/scaling.py`: each thread count in a process pinned "
            "to that many cores; every row checked against the NumPy reference first; its "
            "docstring says what each cell is; `make bench-percore`: 1 thread and all of "
            "them):", "", json.load(open(path))["table"]]


BF16_HEADING = "## bfloat16"


def bf16_section(paths):
    """RESULTS.md's bfloat16 section from benchmarks/bf16.py JSON files (comma-separated, each
    under its own host and provenance line; ``PATH#V,K``: that run's rows of those groups)."""
    import bf16
    lines = [BF16_HEADING, "",
             "`python benchmarks/bf16.py --json PATH` (its docstring says what each row is; "
             "accuracy against the float64 call on the same float32 data):"]
    for spec in paths.split(","):
        path, _, groups = spec.partition("#")
        run = json.load(open(path))
        if groups:
            keep = set(groups.split("+"))
            run = {**run, **{k: [r for r in run[k] if r["group"] in keep]
                             for k in ("accuracy", "timings")}}
        lines += ["", bf16.table(run)]
    return lines


def splice(results, heading, section):
    """``results`` (RESULTS.md's lines) with the section under ``heading`` replaced by
    ``section``'s lines (a run on a host where the whole `make bench` was not rerun), placed
    before "All groups" if it had none."""
    section = "\n".join(section).split("\n")
    heads = [i for i, line in enumerate(results) if line.startswith("## ")]
    if heading in results:
        i = results.index(heading)
        j = next((h for h in heads if h > i), len(results))
    else:
        i = j = results.index("## All groups")
    return results[:i] + section + [""] + results[j:]


def splice_threads(results, path):
    return splice(results, THREADS_HEADING, threads_section(path))


def main():
    if sys.argv[1] in ("--threads", "--bf16"):    # report.py --threads last-scaling.json R.md
        results = open(sys.argv[3]).read().splitlines()
        heading, section = ((THREADS_HEADING, threads_section) if sys.argv[1] == "--threads"
                            else (BF16_HEADING, bf16_section))
        print("\n".join(splice(results, heading, section(sys.argv[2]))))
        return
    run = json.load(open(sys.argv[1]))
    compile_times = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else None
    info = run["machine_info"]
    gs = groups(run)
    lines = [
        "# Benchmark results",
        "",
        "Produced by `make bench` (pytest-benchmark suites in `benchmarks/`, then "
        "`benchmarks/compile_times.py` and `benchmarks/report.py`). Medians; every ratio "
        "compares rows of one group, measured side by side in the same run, through the "
        "public API, after a warm-up call (compile time excluded, reported below). "
        "`make bench` unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for its own command "
        "(this workplace sets them for old OpenBLAS builds; they slow a current one).",
        "",
        f"- machine: {scaling.host_line(run['fastbp']['host'])}, {info['system']} "
        f"{info['release']}" if "host" in run["fastbp"] else
        f"- machine: {info.get('cpu', {}).get('brand_raw', platform.processor())}, "
        f"{info.get('cpu', {}).get('count', '?')} logical cores, {info['system']} "
        f"{info['release']}",
        f"- python {info['python_version']}; " + ", ".join(
            f"{k} {v}" for k, v in run["fastbp"]["versions"].items()),
        f"- threads: {run['fastbp']['threads']}; BLAS: " + "; ".join(
            f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['num_threads']} "
            f"threads)" for b in run["fastbp"]["blas"])
        + (f"; the C backend's GEMMs in {run['fastbp']['c_blas']}'s"
           if run["fastbp"].get("c_blas") else "")
        + ("; tiny linear_head calls through csrc/fastcall.c"
           if run["fastbp"].get("fastcall") else ""),
        f"- run at {run['datetime']}" + (
            f"; {scaling.provenance_line(run['fastbp']['provenance'])}"
            if "provenance" in run["fastbp"] else ""),
        "",
        "## Targets",
        "",
        "The open issues' targets first (few classes on wide inputs; the large-vocabulary "
        "layer), then the earlier issues' targets still held, then retired targets as tracked "
        "numbers.",
        "",
        *targets(gs, compile_times),
        "",
        "\"Fastest peer\": the fastest of PyTorch eager, torch.compile, PyTorch's "
        "linear_cross_entropy (both paths) and JAX jit in the group. Where 1.5x the fastest "
        "peer would ask for less time than the group's flops (three products) take at the "
        "rate of a 1024^3 product of its dtype (the dgemm / sgemm groups), the goal is 1.1x "
        "that time instead. Tracked rows: numpy's time over the bare products it cannot skip "
        "(bare BLAS rows) is the most any backend could gain by running them as fast as "
        "NumPy's BLAS; V's row blocks of B/8 (B/4) run the three products at best as fast as "
        "the row \"bare BLAS, SciPy's, row blocks of B/8\" over the same products whole; "
        "column blocks compute X W^T a second time for the scores they cannot keep "
        "(`_column_bound` in benchmarks/report.py).",
        "",
        "## fastbp's products vs OpenBLAS",
        "",
        "Each product alone on every thread, into a preallocated output, checked equal first "
        "(benchmarks/test_bench_products.py): fastbp's own kernels (csrc/products.h, W read "
        "where it lies) against NumPy's OpenBLAS at the V, K and L shapes (G: B x n).",
        "",
        *products_table(gs),
        "",
        "## In a loop: right after the user's own NumPy product",
        "",
        "Each call timed back to back, and right after a 256 x 512 @ 512 x 512 float32 NumPy "
        "product (benchmarks/test_bench_loop.py; only the fastbp call is timed):",
        "",
        *in_a_loop(gs),
        "",
        "## Which backend \"auto\" picks",
        "",
        "\"auto\" runs the first available backend of `fastbp/_dispatch.py`'s `_PREFERENCE` "
        "(c, numba, numpy). Per group, from this run:",
        "",
        *auto_choices(gs),
        "",
        "## Compile time (first call of each kernel family, float64)",
        "",
    ]
    if compile_times:
        lines += ["| family | cold cache | warm cache |", "|---|---|---|"]
        lines += [f"| {k} | {v['cold_s']:.2f} s | {v['warm_s']:.3f} s |"
                  for k, v in compile_times.items()]
        lines.append("")
        lines.append("A family's cold time includes whatever it is the first to compile.")
    compiled = [(group, name, r["extra_info"]["first_call_s"]) for group, rows in sorted(gs.items())
                for name, r in rows.items()
                if name in ("torch.compile", "jax jit") and "first_call_s" in r["extra_info"]]
    if compiled:
        lines += ["", "## Peers' compile time (first call, excluded from their medians)", "",
                  "torch.compile reuses a graph across shapes of one dtype (dynamic shapes): "
                  "the first group it ran (T, in the suite's order) shows the compilation, the "
                  "later ones only recompilations.", "", "| group | peer | first call |",
                  "|---|---|---|"]
        lines += [f"| {g} | {name} | {sec:.2f} s |" for g, name, sec in compiled]
    if len(sys.argv) > 3:
        import adapters
        lines += ["", "## A training step through the framework adapters", "",
                  "`benchmarks/adapters.py` (each way in a fresh process; its docstring says "
                  "what a step is):", "", adapters.table(json.load(open(sys.argv[3])))]
    if len(sys.argv) > 4:
        import dask_scaling
        lines += ["", "## Data beyond one machine: fastbp.dask against dask-ml", "",
                  "`make bench-dask` (`benchmarks/dask_scaling.py`; its docstring says what "
                  "each row is):", "", dask_scaling.table(json.load(open(sys.argv[4])))]
    threads = os.path.join(os.path.dirname(sys.argv[1]), "last-scaling.json")
    if os.path.exists(threads):
        lines += ["", *threads_section(threads)]
    lines += ["", "## All groups", ""]
    for group in sorted(g for g in gs if not g.startswith("products ")):   # (table above)
        lines += [table(group, gs[group]), ""]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
