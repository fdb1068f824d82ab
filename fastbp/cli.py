"""The ``fastbp`` command line (docs/api.md section 7). Errors: one line on stderr, exit code 2."""
import argparse
import json
import os
import sys
import time

from . import _dispatch
from . import compare as _compare
from .errors import human_bytes


class _Parser(argparse.ArgumentParser):
    """Help that shows every option's default; argparse's own errors: one line, exit 2."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kw)

    def error(self, message):
        self.exit(2, f"fastbp: error: {message}\n")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _info(args):
    print(json.dumps(__import__("fastbp").info(), indent=2))


def _precompile(args):
    from .precompile import precompile
    start = time.perf_counter()
    precompile(args.jobs)
    print(f"precompile: done in {time.perf_counter() - start:.1f} s")


def _tune(args):
    from . import tune
    from .backends import tuning
    path = tuning.cache_path()
    if args.reset:
        existed = os.path.exists(path)
        if existed:
            os.remove(path)
        tuning.reset_measured()
        print(f"tune: {'removed ' + path if existed else 'no cache at ' + path}; the shipped "
              "thresholds hold")
        return
    if args.show:
        print(json.dumps({**tuning.SOURCE, "cache": path, "in_force": {
            b: {k: getattr(T, k) for k in tuning.MEASURED} for b, T in tuning.TUNING.items()}},
            indent=2))
        return
    backends = args.backends.split(",")
    compiled = [b for b in _dispatch._REGISTRY if b != "numpy"]
    if not backends or set(backends) - set(compiled):
        raise ValueError(f"--backends must name some of {', '.join(compiled)}, "
                         f"got {args.backends!r}")
    for b in backends:
        _dispatch.backend_module(b)          # (unavailable: BackendUnavailable says why)
    save = not (args.quick or args.no_save)
    with _bar(total=tune.steps(backends, _dispatch.get_num_threads(),
                               tune.SHAPES["quick" if args.quick else "full"]),
              desc="measuring") as bar:
        data = tune.run(backends, quick=args.quick, save=save, progress=bar.update)
    print(tune.table(data))
    print(f"\ntune: {data['seconds']} s on {data['cpu']} ({data['isa']}, {data['threads']} "
          f"threads); {'cached in ' + path if save else 'not saved'}")


def _bar(**kw):
    from tqdm import tqdm
    return tqdm(file=sys.stderr, leave=False, dynamic_ncols=True, disable=None, **kw)  # no TTY: off


def _run_compare(args):
    sizes, _ = _compare.PRESETS[args.preset]
    n_cases = len(_compare.cases(1, "float64", __import__("numpy").random.default_rng(0)))
    with _bar(total=len(sizes) * n_cases + 1, desc="measuring") as bar:
        rows = _compare.run(args.preset, args.dtype, progress=bar.update)
    print(_compare.table(rows))
    notes = _compare.notes_case(args.dtype)
    print(f"\nThe notes' case, 100 vectors x 4096 features through one elementwise layer: the "
          f"naive Jacobian alone is {human_bytes(notes)} ({_compare.naive_dtype(args.dtype)});"
          f" fused, it is one elementwise product.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "notes_case_naive_bytes": notes}, f, indent=2)
    if args.plot:
        _compare.plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return rows


def _run_bench(args):
    from . import bench
    with _bar(total=len(bench.cases(args.preset)), desc="timing") as bar:
        rows = bench.run(args.preset, args.peers, progress=bar.update)
    print(bench.table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _run_train(args):
    from .train import plot_history, train

    with _bar(total=args.epochs, desc="training", unit="epoch") as bar:
        def on_epoch(epoch, loss, acc):
            bar.update()
            bar.write(f"epoch {epoch:3d}/{args.epochs}  train loss {loss:.4f}  "
                      f"test accuracy {100 * acc:.2f}%", file=sys.stdout)

        _, hist = train(dataset=args.dataset, hidden=args.hidden, activation=args.activation,
                        head=args.head, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, optimizer=args.optimizer, backend=args.backend,
                        seed=args.seed, on_epoch=on_epoch)
    print(f"final test accuracy {100 * hist.test_accuracy:.2f}% on {hist.n_test} digits; wall "
          f"time {hist.seconds:.2f} s, median {1e3 * hist.seconds_per_epoch:.2f} ms per epoch "
          f"(epoch 1: {1e3 * hist.epoch_seconds[0]:.0f} ms, with any first-call compilation); "
          f"backend {_dispatch.get_backend() if args.backend is None else args.backend}")
    if args.plot:
        plot_history(hist, args.plot)
        print(f"plot: {args.plot}")
    return hist


def _demo(args):
    os.makedirs(args.out, exist_ok=True)
    print("fastbp demo 1/2: naive explicit-Jacobian backprop vs fused kernels\n")
    cargs = argparse.Namespace(preset="quick", dtype="float64", json=None,
                               plot=os.path.join(args.out, "compare.png"))
    rows = _run_compare(cargs)
    print("\nfastbp demo 2/2: a 2-layer net on the digits data set\n")
    targs = build_parser().parse_args(["train", "--plot", os.path.join(args.out, "train.png")])
    hist = _run_train(targs)
    print("\nsummary")
    for case in dict.fromkeys(r["case"] for r in rows):
        measured = [r for r in rows if r["case"] == case and r["naive_s"] is not None]
        r = measured[-1] if measured else [r for r in rows if r["case"] == case][-1]
        be, f = min(r["fused"].items(), key=lambda kv: kv[1]["s"])
        if measured:
            mem = _compare.memory_ratio(r["naive_peak_bytes"], f["peak_bytes"], "{:.0f}x less")
            print(f"  {case}, B={r['B']}: fused ({be}) {r['naive_s'] / f['s']:.0f}x faster, "
                  f"{human_bytes(f['peak_bytes'])} ({mem} memory than naive)")
        else:
            print(f"  {case}, B={r['B']}: naive refused ({human_bytes(r['naive_predicted_bytes'])}"
                  f" of Jacobians); fused ({be}) {_compare.fmt_s(f['s'])}, "
                  f"{human_bytes(f['peak_bytes'])}")
    print(f"  digits: test accuracy {100 * hist.test_accuracy:.2f}%, median "
          f"{1e3 * hist.seconds_per_epoch:.2f} ms per epoch")
    print(f"  plots: {cargs.plot}, {targs.plot}")


def build_parser():
    from .train import DATASETS, OPTIMIZERS, TRAIN_HEADS
    from ._checks import ACTIVATIONS
    from . import __version__
    parser = _Parser(prog="fastbp", description="Fused loss gradients without Jacobians.")
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("info", help="versions, backends, threads, BLAS").set_defaults(fn=_info)
    p = sub.add_parser("compare", help="naive Jacobians vs fused: time and peak memory")
    p.add_argument("--preset", choices=sorted(_compare.PRESETS), default="quick",
                   help="the batch sizes measured")
    p.add_argument("--dtype", choices=("float32", "float64", "bfloat16"), default="float64",
                   help="the arrays' dtype (bfloat16: the fused calls on bfloat16 arrays, the "
                        "naive path on their values in float32)")
    p.add_argument("--json", metavar="PATH", help="write the measurements as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG: time and memory vs size")
    p.set_defaults(fn=_run_compare)
    p = sub.add_parser("bench", help="linear_head: backends vs NumPy, bare BLAS and peers")
    p.add_argument("--preset", choices=("quick", "full"), default="quick",
                   help="quick: shapes T, D, C; full: and V (1024 x 512 x 32000), P (V's shape, "
                        "a trained model's peaked softmax, also with filter_eps='auto') and L "
                        "(256 x 256 x 65536)")
    p.add_argument("--peers", action="store_true", help="also time PyTorch when installed")
    p.add_argument("--json", metavar="PATH", help="write the medians as JSON")
    p.set_defaults(fn=_run_bench)
    p = sub.add_parser("train", help="train a 2-layer net on real data")
    p.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="a data set scikit-learn bundles (no download)")
    p.add_argument("--hidden", type=_positive(int), default=64, help="hidden units")
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="the hidden layer's activation")
    p.add_argument("--head", choices=tuple(TRAIN_HEADS), default="softmax_nll",
                   help="the loss")
    p.add_argument("--epochs", type=_positive(int), default=50, help="passes over the data")
    p.add_argument("--batch-size", type=_positive(int), default=64, help="rows per step")
    p.add_argument("--lr", type=_positive(float), default=0.1, help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="sgd: momentum 0.9; adam: torch's defaults")
    p.add_argument("--backend", choices=("auto",) + tuple(_dispatch._REGISTRY), default=None,
                   help="None: fastbp's default (FASTBP_BACKEND, else auto)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of loss and accuracy")
    p.add_argument("--seed", type=int, default=0, help="the split's and the weights' seed")
    p.set_defaults(fn=_run_train)
    p = sub.add_parser("precompile", help="compile the Numba backend's kernels into its disk "
                                          "cache, in parallel processes")
    p.add_argument("--jobs", type=_positive(int), default=None,
                   help="processes (default: the cores)")
    p.set_defaults(fn=_precompile)
    p = sub.add_parser("tune", help="measure the crossovers this CPU's features cannot decide and "
                                    "cache them for every later process")
    p.add_argument("--backends", default="c,numba", help="the compiled backends to tune")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, one round: checks that every step runs (saves nothing)")
    p.add_argument("--no-save", action="store_true", help="measure and print only")
    p.add_argument("--show", action="store_true",
                   help="print the values in force and where they came from; measure nothing")
    p.add_argument("--reset", action="store_true", help="remove this CPU model's cache")
    p.set_defaults(fn=_tune)
    p = sub.add_parser("demo", help="what `make demo` runs: compare, then train")
    p.add_argument("--out", default="fastbp-demo", help="folder for the plots")
    p.set_defaults(fn=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except Exception as exc:   # noqa: BLE001 -- the CLI's promise: one line, no traceback
        from .train import TrainingDiverged
        print(f"fastbp {args.command}: error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, TrainingDiverged) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
