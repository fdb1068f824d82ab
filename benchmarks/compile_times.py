"""First-call (compile) time of each Numba kernel family, from a cold and from a warm cache.

    python benchmarks/compile_times.py [--json PATH]

Each measurement runs in a fresh interpreter with NUMBA_CACHE_DIR pointing at a new empty
folder (cold: everything compiles) and then again at the same folder (warm: loaded from disk).
"""
import json
import os
import subprocess
import sys
import tempfile

# One process: the first call of each family, in order, timed (float64 inputs).
PROBE = r"""
import json, time, numpy as np, fastbp
rng = np.random.default_rng(0)
X, W = rng.standard_normal((64, 8)), rng.standard_normal((5, 8))
b, y = np.zeros(5), rng.integers(0, 5, 64)
Xbig, Wbig = rng.standard_normal((64, 200)), rng.standard_normal((300, 200))    # n*d: BLAS
Xpar = rng.standard_normal((4096, 8))                                        # B*n*d: 2 threads
fams = {
    "heads (softmax_nll on scores)": lambda: fastbp.softmax_nll(X @ W.T, y, backend="numba"),
    "linear_head tiny (fast entry's C callbacks, both dtypes)": lambda: fastbp.linear_head(
        X, W, b, y, backend="numba"),
    "linear_head fused, 1 thread": lambda: fastbp.linear_head(     # chunk_rows: checked path
        X, W, b, y, chunk_rows=64, backend="numba"),
    "linear_head fused, threads": lambda: fastbp.linear_head(
        Xpar, W, b, rng.integers(0, 5, 4096), backend="numba"),
    "linear_head BLAS, one block": lambda: fastbp.linear_head(
        Xbig, Wbig, None, rng.integers(0, 300, 64), backend="numba"),
    "linear_act forward+backward": lambda: fastbp.linear_act_backward(
        X[:, :5], fastbp.linear_act_forward(X, W, b, "tanh", backend="numba")[1], backend="numba"),
    "mlp_loss_grad (2 layers)": lambda: fastbp.mlp_loss_grad(
        X, [(W, b), (W[:, :5], b)], y, activation="relu", backend="numba"),
    "MLP.step (one-call SGD step)": lambda: fastbp.MLP(
        [8, 6, 5], dtype="float64", backend="numba").step(X, y, optimizer=fastbp.SGD(momentum=0.9)),
}
out = {}
import fastbp.backends.numba  # the import itself is not a compile
for name, fn in fams.items():
    t0 = time.perf_counter(); fn(); out[name] = time.perf_counter() - t0
print(json.dumps(out))
"""


def measure():
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                                          capture_output=True, text=True).stdout)
                for _ in ("cold", "warm")]
    return {name: {"cold_s": runs[0][name], "warm_s": runs[1][name]} for name in runs[0]}


def main():
    result = measure()
    for name, r in result.items():
        print(f"{name:56s} cold {r['cold_s']:6.2f} s   warm {r['warm_s']:6.3f} s")
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
