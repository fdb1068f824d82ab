"""Shared test data: every head's option combinations, built from the registries.

``head_cases()`` lists ``(head, spec)`` pairs covering every option of every head (docs/api.md
s. 1); ``make_head_inputs`` turns one into concrete arrays. Tests and benchmarks iterate over
these, so no test file lists heads or options again.
"""
import contextlib
import itertools
import os

import numpy as np
import pytest

import fastbp
from fastbp._checks import HEAD_OPTIONS
from fastbp.backends import tuning
from fastbp.backends.tuning import score_blocks

# The values each option takes in the tests ("on" options are built per shape below).
_AXES = {
    "weight": (None, "on"),
    "sample_weight": (None, "on"),
    "pos_weight": (None, "on"),
    "ignore_index": (-100, 1),
    "label_smoothing": (0.0, 0.2),
    "margin": (1.0, 0.5),
    "p": (1, 2),
    "delta": (1.0, 0.3),
    "alpha": (0.25, -1.0),
    "gamma": (2.0, 0.5, 0.0),
    "z_loss": (0.0, 0.1),
    "softcap": (None, 2.5),
}
# Target kinds per head (softmax_nll takes labels or probability rows; binary_hinge s as (B,)
# or (B, 1)).
_TARGETS = {"softmax_nll": ("labels", "probs"), "binary_hinge": ("pm1", "pm1_col")}


def target_kinds(head):
    kind = fastbp._checks.TARGET_KIND.get(head, "float")
    return _TARGETS.get(head, (kind,))


def covering_pairs(axes):
    """Rows (tuples, one value per axis) in which every pair of values of every two axes
    appears: a covering array of strength 2, built greedily and deterministically. It starts
    with the all-first (defaults) and all-last rows; with two axes or fewer it is their full
    product. Options interact in pairs in the heads' formulas (a class weight and smoothing,
    a sample weight and ignore_index in the mean's denominator ...); a full product of k
    on/off options adds 2^k rows and no path that the pairs miss."""
    if len(axes) <= 2:
        return list(itertools.product(*axes))
    uncovered = {(i, a, j, b) for i, j in itertools.combinations(range(len(axes)), 2)
                 for a in axes[i] for b in axes[j]}
    rows = []

    def add(row):
        rows.append(row)
        uncovered.difference_update((i, row[i], j, row[j])
                                    for i, j in itertools.combinations(range(len(axes)), 2))

    add(tuple(v[0] for v in axes))
    add(tuple(v[-1] for v in axes))
    while uncovered:
        i, a, j, b = min(uncovered, key=repr)          # (deterministic)
        row = {i: a, j: b}
        for k in range(len(axes)):
            if k not in row:
                row[k] = max(axes[k], key=lambda v: sum(
                    (min(k, m), v if k < m else row[m], max(k, m), row[m] if k < m else v)
                    in uncovered for m in row))
        add(tuple(row[k] for k in range(len(axes))))
    return rows


def rotated(cases, full, turn):
    """(case, f, t) for every case and every value f of ``full``, t taken from ``turn`` in
    turn: every (case, f), (case, t) and (f, t) pair appears (len(cases), len(full) >=
    len(turn)), where the full product would repeat each (case, f) once per t."""
    return [(c, f, turn[(i + j) % len(turn)]) for i, c in enumerate(cases)
            for j, f in enumerate(full)]


def rotated_ids(rows):
    return ["-".join([case_id(c), *map(str, rest)]) for c, *rest in rows]


_LLM = ("z_loss", "softcap")


def head_cases():
    """(head, spec) pairs with spec = {"target": kind, option: value-or-"on"}: per head and
    target kind, every pair of option values (covering_pairs), and softmax_nll's softcap and
    z_loss with the other options all off or all on."""
    out = []
    for head in fastbp.HEADS:
        names = list(HEAD_OPTIONS[head])
        for kind in target_kinds(head):
            plain = [o for o in names if o not in _LLM
                     and not (kind == "probs" and o == "ignore_index")]
            specs = [dict(zip(plain, values)) for values in covering_pairs(
                [_AXES[o] for o in plain])]
            llm = [o for o in names if o in _LLM]
            for values in itertools.product(*(_AXES[o] for o in llm)):
                on = dict(zip(llm, values))
                if any(on[o] != _AXES[o][0] for o in llm):
                    every = {o: _AXES[o][-1] for o in plain}
                    if on.get("z_loss"):            # (z_loss never with class weights)
                        every.pop("weight", None)
                    specs += [{**{o: _AXES[o][0] for o in plain}, **on}, {**every, **on}]
            for spec in specs:
                spec = {o: spec.get(o, _AXES[o][0]) for o in names} | {"target": kind}
                if _llm_case_skipped(spec):
                    continue
                if spec not in [s for h, s in out if h == head]:
                    out.append((head, spec))
    return out


def _llm_case_skipped(spec):
    """softcap and z_loss: with the other options all off or all on, not in every combination;
    z_loss never with class weights or probability rows (a ValueError, tested in
    test_errors)."""
    z, cap = spec.get("z_loss", 0.0) != 0.0, spec.get("softcap") is not None
    if not (z or cap):
        return False
    if z and (spec.get("weight") is not None or spec["target"] == "probs"):
        return True
    others = [k for k in ("weight", "sample_weight", "ignore_index", "label_smoothing")
              if not (z and k == "weight") and not (spec["target"] == "probs"
                                                    and k == "ignore_index")]
    on = [k for k in others if spec.get(k) not in (None, -100, 0.0)]
    return 0 < len(on) < len(others)


def case_id(case):
    head, spec = case
    on = [k if v == "on" else f"{k}={v}" for k, v in spec.items()
          if k != "target" and v not in (None, HEAD_OPTIONS[head].get(k))]
    return "-".join([head, spec["target"]] + on)


def make_target(head, kind, B, n, dtype, rng):
    if kind == "labels":
        return rng.integers(0, n, B)
    if kind == "probs":
        P = rng.random((B, n)) + 0.1
        return (P / P.sum(axis=1, keepdims=True)).astype(dtype)
    if kind.startswith("pm1"):
        return rng.choice([-1, 1], B)
    if head in ("sigmoid_bce", "sigmoid_l2", "sigmoid_focal"):
        return rng.random((B, n)).astype(dtype)
    return rng.standard_normal((B, n)).astype(dtype)


def make_options(head, spec, B, n, dtype, rng):
    opts = {}
    for k, v in spec.items():
        if k == "target" or v is None:
            continue
        if v == "on":
            v = (rng.random(B if k == "sample_weight" else n) + 0.5).astype(dtype)
        opts[k] = v
    return opts


def make_head_inputs(head, spec, B, n, dtype, rng, scale=1.0):
    """(S, target, options) for one case; ``S`` is (B,) for binary_hinge's "pm1" kind."""
    n = 1 if head == "binary_hinge" else n
    S = (scale * rng.standard_normal((B, n))).astype(dtype)
    if head == "nll":                      # probabilities, away from 0
        S = rng.random((B, n)).astype(dtype) + np.asarray(0.05, dtype)
        S /= S.sum(axis=1, keepdims=True)
    if spec["target"] == "pm1":
        S = S[:, 0].copy()
    target = make_target(head, spec["target"], B, n, dtype, rng)
    return S, target, make_options(head, spec, B, n, dtype, rng)


def assert_close(actual, expected, dtype, what="", scale=None):
    """float64: 1e-10 relative; float32: 1e-4 relative (of the float64 reference), and within
    that share of ``scale`` (default: the largest |expected|; a sum that cancels to rounding
    passes the sum of its terms' sizes)."""
    rtol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-4
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if scale is None:
        scale = np.max(np.abs(expected), initial=0.0)
    scale = max(float(np.max(scale)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_linear_grads_close(g, loss, dS, X, W, dtype):
    """linear_head's Grads against the float64 loss and dS of the head on X W^T + b. A product
    is held to the magnitude of its terms (|dS| |W| for dX ...): in float32 its rounding is
    relative to them, and a sum of nearly cancelling terms is off by more than 1e-4 of itself."""
    rtol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-4
    if np.isnan(loss):
        assert np.isnan(g.loss)
    else:
        assert_close(g.loss, loss, dtype)
    A = np.abs(dS)
    for got, want, terms in ((g.dW, dS.T @ X, A.T @ np.abs(X)), (g.db, dS.sum(0), A.sum(0)),
                             (g.dX, dS @ W, A @ np.abs(W))):
        if got is not None:
            np.testing.assert_allclose(got, want, rtol=rtol,
                                       atol=rtol * max(float(terms.max(initial=0.0)), 1e-30))


def cast_floats(dtype, *arrays, options=None):
    """The same inputs with every float array in ``dtype`` (labels untouched)."""
    def cast(v):
        return v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
    out = [cast(a) for a in arrays]
    if options is not None:
        out.append({k: cast(v) for k, v in options.items()})
    return out


def tiny_linear_jobs(count, seed):
    """``count`` tiny linear_head calls' (X, W, b, y), float64 and float32 in turn."""
    rng = np.random.default_rng(seed)
    jobs = []
    for k in range(count):
        dt = np.float32 if k % 2 else np.float64
        X, W, b = (rng.standard_normal(s).astype(dt) for s in ((5 + k, 4), (3, 4), (3,)))
        jobs.append((X, W, b, rng.integers(0, 3, 5 + k)))
    return jobs


# ---------------------------------------------------------------- backend variants
# The compiled backends' linear_head has several code paths chosen by shape (the thresholds of
# fastbp/backends/tuning.py, a module's TUNING); the tests force each one on small problems by
# moving them. FASTBP_TEST_BACKENDS=c,... keeps only those backends
# (besides the reference): `make test-asan` runs the C backend's tests alone.
def column_blocks(rows=3, cols=None):
    """A score_blocks giving softmax_nll column blocks wherever they can run: panels of
    ``rows`` rows, ``cols`` columns (default n // 2: several panels, blocks, partial ones)."""
    def blocks(head, B, n, itemsize, chunk_rows, options):
        c = n // 2 if cols is None else cols
        if (head != "softmax_nll" or chunk_rows or not 1 <= c < n or options.get("softcap")
                or options.get("z_loss")):
            return score_blocks(head, B, n, itemsize, chunk_rows, options)
        return rows, c
    return blocks


_PATH_SETTINGS = {
    "chunked": {"FUSED_MAX_N": 0, "FUSED_ANY_N_WEIGHTS": 0, "FUSED_FEW_N": 0},  # (one block
    "columns": {"FUSED_MAX_N": 0, "FUSED_ANY_N_WEIGHTS": 0, "FUSED_FEW_N": 0,    # too, if B fits)
                "score_blocks": column_blocks()},
    "parallel": {"PARALLEL_MIN_WORK": 0, "FUSED_ANY_N_WEIGHTS": 1 << 60},
    "serial": {"PARALLEL_MIN_WORK": 1 << 60, "FUSED_ANY_N_WEIGHTS": 1 << 60},
    # the chunked path on fastbp's own products at every shape: all three (the C backend's
    # only), or the scores alone (the backward by BLAS)
    "own": {"FUSED_MAX_N": 0, "FUSED_ANY_N_WEIGHTS": 0, "FUSED_FEW_N": 0,
            "OWN_SCORES_MIN_WEIGHTS": 0, "OWN_BACKWARD_MIN_WEIGHTS": 0, "OWN_ROW_ALIGN": 1,
            "OWN_ISAS": tuning.ISAS},                  # (correct on every ISA, fast on some)
    "ownscores": {"FUSED_MAX_N": 0, "FUSED_ANY_N_WEIGHTS": 0, "FUSED_FEW_N": 0,
                  "OWN_SCORES_MIN_WEIGHTS": 0, "OWN_BACKWARD_MIN_WEIGHTS": 1 << 62,
                  "OWN_ROW_ALIGN": 1, "ONE_BLOCK": False,    # (Numba's one block: BLAS's)
                  "OWN_ISAS": tuning.ISAS},
}
_ONLY = [b for b in os.environ.get("FASTBP_TEST_BACKENDS", "").split(",") if b]
BACKENDS = [b for b in fastbp.available_backends() if not _ONLY or b in _ONLY]
VARIANTS = BACKENDS + [f"{b}:{path}" for b in BACKENDS if b in ("numba", "c")
                       for path in ("chunked", "columns", "parallel")] + [
    f"c:{path}" for b in BACKENDS if b == "c" for path in ("own", "ownscores")] + [
    "numba:ownscores" for b in BACKENDS if b == "numba"]


@contextlib.contextmanager
def variant(name):
    """``with variant("c:chunked") as backend:`` -- the backend name, with that path forced."""
    backend, _, path = name.partition(":")
    if not path:
        yield backend
        return
    module = fastbp._dispatch.backend_module(backend)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _PATH_SETTINGS[path].items():
            mp.setattr(tuning if k == "score_blocks" else module.TUNING, k, v)
        yield backend
