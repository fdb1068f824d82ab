"""Each parallel kernel's serial share: the part of its work that runs on one thread while the
others wait, from `perf` samples (Linux, `perf` on the PATH).

    python benchmarks/serial_share.py [--threads 2] [--seconds 3] [--cases C1k,V] [--why 20]

Per case a fresh process warms the call up, then loops it while `perf record -e cpu-clock`
samples every thread. A sample is *parallel* when its call chain (unwound from DWARF: the C
kernels keep no frame pointers) is inside an OpenMP region (GCC's outlined ``._omp_fn.``, or
libgomp below it: an outlined body may tail-call the kernel's function) or
in BLAS (multi-threaded itself), or, for the Numba backend, when it was taken on one of the
threading layer's workers (``NUMBA_THREADING_LAYER=workqueue`` here: its main thread hands
every parallel loop to the workers and sleeps until they are done); *waiting* when a thread
spins for work or hands it over (libgomp, OpenBLAS's server loop, the kernel's scheduler: the
cost of a fork / join, not work that more threads would share) -- left out; *serial*
otherwise: in the kernel (its compiled code outside its regions) or in Python (the argument
checks, packing and allocations around it). A share is serial / (serial + parallel): the
work's fraction that would not shrink with more threads, whatever the thread count the samples
were taken at. ``--why N`` prints the N most frequent serial call chains.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

CASES = {   # name: (backend, call); the data are linear_data's presets
    "C float32 fused rows": ("c", "linear C float32"),
    "C1k float32 fused rows": ("c", "linear C1k float32"),
    "K float32 chunked": ("c", "linear K float32"),
    "V float32 chunked team": ("c", "linear V float32"),
    "heads 256x1000": ("c", "heads"),
    "numba C float32 fused rows": ("numba", "linear C float32"),
    "numba C1k float32 fused rows": ("numba", "linear C1k float32"),
    "numba K float32 chunked": ("numba", "linear K float32"),
    "numba V float32 chunked team": ("numba", "linear V float32"),
    "numba heads 256x1000": ("numba", "heads"),
}
# a thread waiting for work or handing it over: libgomp's own loops, OpenBLAS's server loop,
# the kernel's scheduler and futexes
WAITING = re.compile(r"libgomp|blas_thread_server|sched_yield|futex|schedule|switch|wake_up|"
                     r"spin_unlock|cpuidle")


def child(backend, what, threads, seconds):
    import numpy as np

    import fastbp
    from fastbp.presets import linear_data
    fastbp.set_num_threads(threads)
    if what == "heads":
        rng = np.random.default_rng(0)
        S, y = rng.standard_normal((256, 1000)), rng.integers(0, 1000, 256)

        def call():
            return fastbp.softmax_nll(S, y, backend=backend)
    else:
        _, shape, dtype = what.split()
        X, W, b, y = linear_data(shape, "softmax_nll", dtype)

        def call():
            return fastbp.linear_head(X, W, b, y, backend=backend)
    for _ in range(3):
        call()
    print("ready", flush=True)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        call()


def classify(script, main_tid, numba, why=None):
    """Counts of serial, parallel and waiting samples; ``why`` (a Counter): the serial
    samples' leaf and caller frames."""
    counts = {"kernel": 0, "glue": 0, "parallel": 0, "waiting": 0}
    for sample in script.split("\n\n"):
        lines = [ln.strip() for ln in sample.strip().splitlines()]
        if not lines:
            continue
        head = lines[0].split()
        tid = int(head[1].split("/")[-1]) if len(head) > 1 and head[1][0].isdigit() else 0
        frames = lines[1:]
        leaf = frames[0] if frames else ""
        if WAITING.search(leaf):
            counts["waiting"] += 1
        elif any("._omp_fn." in f or "libgomp" in f or "openblas" in f for f in frames) or (
                numba and tid != main_tid):
            counts["parallel"] += 1
        else:
            # the compiled kernel's own code (the C library, Numba's JIT code: perf-PID.map)
            # or the Python around it (argument checks, packing, NumPy's allocations)
            own = any("_fastbp_c" in f or "_fastcall" in f or "perf-" in f for f in frames)
            counts["kernel" if own else "glue"] += 1
            if why is not None:
                dso = re.findall(r"\(([^()]*)\)\s*$", leaf)
                why[(dso[0].rsplit("/", 1)[-1] if dso else "?") + ": "
                    + " <- ".join(f.split(None, 1)[-1].split(" (")[0] for f in frames[:3])] += 1
    return counts


def measure(name, backend, what, threads, seconds, top=0):
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    proc = subprocess.Popen([sys.executable, __file__, "--child", backend, what, str(threads),
                             str(seconds + 2)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1000",
                        "--call-graph", "dwarf,16384",
                        "-p", str(proc.pid), "-o", data, "--", "sleep", str(seconds)],
                       check=True, capture_output=True)
        script = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,ip,sym,dso"],
                                capture_output=True, text=True).stdout
    proc.wait()
    why = collections.Counter()
    c = classify(script, proc.pid, backend == "numba", why)
    work = c["kernel"] + c["glue"] + c["parallel"]
    print(f"| {name} | {c['parallel']} | {c['kernel']} | {c['glue']} | {c['waiting']} | "
          f"{100 * c['kernel'] / work:.1f}% | {100 * c['glue'] / work:.1f}% |", flush=True)
    for frames, count in why.most_common(top):
        print(f"    {count:6d}  {frames}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cases", default="",
                        help="the cases whose names contain any of these (comma-separated)")
    parser.add_argument("--why", type=int, default=0,
                        help="print the N most frequent serial call chains (to stderr)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backend, what, threads, seconds = args.child
        return child(backend, what, int(threads), float(seconds))
    keys = [k for k in args.cases.split(",") if k]
    print(f"{args.threads} threads, {args.seconds} s of samples per case\n")
    print("| kernel | parallel | serial in the kernel | serial in Python | waiting | "
          "kernel's serial share | Python's share |")
    print("|---|---|---|---|---|---|---|")
    for name, (backend, what) in CASES.items():
        if not keys or any(k in name for k in keys):
            measure(name, backend, what, args.threads, args.seconds, args.why)


if __name__ == "__main__":
    main()
