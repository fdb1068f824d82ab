"""The ``fastbp`` command line (api.md section 7). Errors: one line on stderr, exit code 2."""
import argparse
import json
import sys

from . import compare as _compare


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # argparse's own errors: one line, exit 2
        self.exit(2, f"fastbp: error: {message}\n")


def _info(args):
    print(json.dumps(__import__("fastbp").info(), indent=2))


def _run_compare(args):
    from tqdm import tqdm
    sizes, _ = _compare.PRESETS[args.preset]
    n_cases = len(_compare.cases(1, "float64", __import__("numpy").random.default_rng(0)))
    with tqdm(total=len(sizes) * n_cases, desc="measuring", file=sys.stderr, leave=False) as bar:
        rows = _compare.run(args.preset, args.dtype, progress=bar.update)
    print(_compare.table(rows))
    notes = _compare.notes_case(args.dtype)
    from .errors import human_bytes
    print(f"\nThe notes' case, 100 vectors x 4096 features through one elementwise layer: the "
          f"naive Jacobian alone is {human_bytes(notes)} ({args.dtype}); fused, it is one "
          f"elementwise product.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "notes_case_naive_bytes": notes}, f, indent=2)
    return rows


def _demo(args):
    args.preset, args.dtype, args.json = "quick", "float64", None
    print("fastbp demo: naive explicit-Jacobian backprop vs fused kernels\n")
    _run_compare(args)


def build_parser():
    parser = _Parser(prog="fastbp", description="Fused loss gradients without Jacobians.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("info", help="versions, backends, threads, BLAS").set_defaults(fn=_info)
    p = sub.add_parser("compare", help="naive Jacobians vs fused: time and peak memory")
    p.add_argument("--preset", choices=sorted(_compare.PRESETS), default="quick")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--json", metavar="PATH", help="write the measurements as JSON")
    p.set_defaults(fn=_run_compare)
    sub.add_parser("demo", help="what `make demo` runs").set_defaults(fn=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"fastbp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
