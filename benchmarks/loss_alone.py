"""linear_head's loss alone (each backend's ``linear_loss``: no gradient products) against the
fused forward+backward, at V, each compiled backend: medians of 7 calls, side by side.

    python benchmarks/loss_alone.py [SHAPE]
"""
import sys

import numpy as np

import fastbp
from fastbp import _checks, _dispatch
from fastbp.compare import median_time
from fastbp.presets import linear_data


def main(shape="V"):
    X, W, b, y = linear_data(shape)
    out = fastbp.Grads(None, np.empty_like(W), np.empty_like(b), np.empty_like(X))
    checked = _checks.check_linear_head(X, W, b, y, "softmax_nll", {"reduction": "sum"}, False,
                                        None, None)
    print("| backend | loss alone (ms) | fused forward+backward (ms) | fused / alone |")
    print("|---|---|---|---|")
    for backend in [b for b in ("c", "numba") if b in fastbp.available_backends()]:
        module = _dispatch.backend_module(backend)
        alone = lambda: module.linear_loss(*checked[:6], "mean", None)      # noqa: E731
        fused = lambda: fastbp.linear_head(X, W, b, y, out=out, backend=backend)  # noqa: E731
        assert np.isclose(alone(), fused().loss, rtol=1e-6)      # equal before timed
        ta, tf = median_time(alone, 7), median_time(fused, 7)
        print(f"| {backend} | {1e3 * ta:.0f} | {1e3 * tf:.0f} | {tf / ta:.2f}x |")


if __name__ == "__main__":
    main(*sys.argv[1:])
