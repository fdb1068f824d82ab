"""The compiled backends' tuning thresholds and ``plan``, the one place a path or a team is
chosen: which kernel a linear_head / linear_loss call runs, on how many blocks or threads.

Each rule says what it chooses and why in a line; the measurements behind every number, and how
to remeasure them (``make crossover``), are in docs/performance.md. Tests override these per
backend (``module.TUNING``) to run every path at small shapes. The constants C states too (the
FBP_OWN_* bits, the own products' tile, HEADS_PARALLEL_MIN) are csrc/fastbp.h's, compared at
import (c_kernels.shared_constants); C takes the team plan() sizes as an argument.
"""
import functools
import json
import os
import re
import warnings
from importlib import metadata
from typing import NamedTuple

import numpy as np

from .. import config


# The ISAs the C kernels are compiled for (csrc/common.h's target_clones), best first: the first
# one the CPU has runs (GCC's resolver reads the same CPUID bits as these flags).
ISAS = ("avx512f", "avx2", "default")
# the C fused rows' kernel sets (csrc/fused.h), by fbp_set_tile's index: one per ISA, then "wide",
# the AVX-512 set's tiles compiled for the baseline ISA (the tests run its loops on any x86-64)
TILES = (*ISAS, "wide")


class C:
    """c_kernels.linear_head's choice between the fused rows and chunked BLAS."""
    FUSED_ANY_N_WEIGHTS = 256     # n d <= this: tiny W, always fused (fixed cost beats BLAS's)
    FUSED_FEW_N = 12              # few classes: fused on one block when n <= this, at any d
    FUSED_FEW_MIN_D = 0           #   (each ISA's register tiles, csrc/fused.h, beat BLAS's
    FUSED_FEW_WEIGHTS = 1 << 62   #   skinny products there: docs/performance.md)
    FUSED_MAX_N = 12              # fused on all threads: n <= this and B n d >= FUSED_MIN_WORK
    FUSED_MIN_WORK = 1 << 20      #   (below, one block beats a region needing every core; the
    FUSED_MIN_WORK_F32 = 1 << 20  #   per-ISA kernel sets win from the same work in both dtypes)
    PARALLEL_MIN_WORK = 1 << 16   # B n d below this: one block (a fork/join costs more)
    BLOCKS_PER_THREAD = 4         # row blocks per thread (of 8 rows or more): load balance
    # the chunked path's products on fastbp's own kernels (csrc/products.h) once W has this
    # many weights: the scores (BLAS packs all of W again per block of rows), the backward
    # (never: BLAS packs only its small operands there, and is as fast)
    OWN_SCORES_MIN_WEIGHTS = 1 << 22
    OWN_BACKWARD_MIN_WEIGHTS = 1 << 62
    OWN_ROW_ALIGN = 64            # and W's rows whole 64-byte lines (d = 500 float32: every
    #                               vector load of a row would be split over two)
    OWN_KERNELS = 3               # own products it has: OWN_SCORES | OWN_BACKWARD
    OWN_ISAS = ("avx512f",)       # ISAs its own products' tile runs well on: it holds 24
    #                               64-byte accumulators, AVX-512's registers; AVX2 has 16 of half
    #                               the width, the tile spills (0.05x OpenBLAS on a Zen 3)
    OWN_WHOLE_TILES = True        # own scores' blocks in whole register tiles (own_chunk_rows)
    FUSED_MIN_ROWS = 0            # (no row floor on the parallel fused rows)
    # ISAs where the few-class windows above (FUSED_MAX_N, FUSED_FEW_*) run the fused rows:
    # every one, each on its own kernel set (csrc/fused.h: tiles sized to its registers)
    FUSED_ISAS = ISAS
    ONE_BLOCK = False             # (one thread, one block: the chunked path's team of one)
    # a bfloat16 call's chunked path (team by classes, d even, filter_eps too) on the bfloat16
    # products of csrc/dot16.h: "auto" where the CPU has AVX512-BF16 (vdpbf16ps: twice float32's
    # multiply rate), "emulate" their arithmetic on any CPU (the tests), "off" never (the
    # conversion path: float32 copies of X and W on the float32 kernels)
    BF16_DOT = "auto"
    LOSS_BY_ROWS = True           # the loss alone's team splits rows below 2 CHUNKED_MIN_CLASSES


class Numba:
    """The numba backend: linear_head's choice between the fused rows and BLAS; the heads'
    threads."""
    FUSED_ANY_N_WEIGHTS = 1024    # n d <= this: tiny W, always fused on one thread (BLAS's
    #                               packing costs more, most with caches cold after user code)
    FUSED_MAX_N = 12              # fused on all threads: n <= this, B >= FUSED_MIN_ROWS and
    FUSED_MIN_WORK = 1 << 20      #   B n d >= FUSED_MIN_WORK (float64) / _F32 (float32): as C's
    FUSED_MIN_WORK_F32 = 1 << 20  #   (below, the few-classes window runs them on one thread)
    FUSED_MIN_ROWS = 128
    FUSED_TINY_SCORES = 64        # one thread, B n <= this: the rows one at a time (their
    #                               blocks' setup costs more than such a call's arithmetic)
    PARALLEL_MIN_WORK = 1 << 16   # B n d below this: one thread
    BLOCKS_PER_THREAD = 1         # the fused rows' blocks per thread (of 8 rows or more), handed
    #                               out as threads free up; C's 4 cost 1.3x at C float32 here
    #                               (each block copies W: docs/performance.md, "In a loop")
    OWN_SCORES_MIN_WEIGHTS = 1 << 23  # the chunked path's scores by own_scores (numba/products.py:
    #                                   its dot tile beats BLAS's packing from there)
    OWN_BACKWARD_MIN_WEIGHTS = 1 << 62  # (no own backward kernels in Numba: never)
    OWN_ROW_ALIGN = 64                  # as C's
    OWN_KERNELS = 1                     # own_scores only (OWN_SCORES)
    OWN_ISAS = ("avx512f",)             # where it was measured to win (not yet on AVX2)
    OWN_WHOLE_TILES = False             # its tile is 4 rows of any length: the budget's rows
    ONE_BLOCK = True                    # one thread, the batch one block: one compiled call
    LOSS_BY_ROWS = False                # loss_step splits classes only
    FUSED_ISAS = ("avx512f", "avx2", "default")   # LLVM compiles its rows for the host's ISA
    FUSED_FEW_N = 12              # few classes: fused on one thread when n <= this, at any d
    FUSED_FEW_MIN_D = 0           #   (as C's: its rows beat its BLAS path on Zen 3 and Zen 5,
    #                               docs/performance.md; `fastbp tune` moves it per host)
    FUSED_FEW_WEIGHTS = 1 << 62


TUNING = {"c": C, "numba": Numba}


# softmax_nll with many classes: column blocks (two passes over the columns, four full-size
# products) once the score budget holds fewer than COLUMN_MIN_ROWS whole rows (and fewer than B)
COLUMN_MIN_ROWS = 64
PANEL_ROWS = 1024                 # rows per panel of column blocks (W is read three times each)
# the chunked path's team: one thread per CHUNKED_MIN_CLASSES classes at most, so each thread's
# one-thread products stay wide; below 2 x that many classes, the team splits the rows instead,
# one thread per CHUNKED_MIN_ROWS rows of a block at most (plan() sizes the team; C takes it)
CHUNKED_MIN_CLASSES = 128
CHUNKED_MIN_ROWS = 16
CHUNKED_MIN_WORK = 1 << 16        # B n d below this: one thread (a fork / join costs more)


OWN_SCORES, OWN_BACKWARD = 1, 2      # csrc/fastbp.h's FBP_OWN_* bits
OWN_TILE_BYTES = 256                 # a register tile's rows of scores: FBP_OWN_KV = 4 vectors of
#                                      64 bytes (csrc/fastbp.h), 64 float32 or 32 float64 rows
OWN_TILE_ROWS = 6                    # by FBP_OWN_RA rows of the other operand
HEADS_PARALLEL_MIN = 1 << 16         # heads on scores: B n below this, one thread (a fork /
#                                      join costs more; FBP_HEADS_PARALLEL_MIN)


def own_products(tuning, dtype, n, d, isa=None):
    """The FBP_OWN_* bits of the chunked path's products that run on fastbp's own kernels
    (csrc/products.h) rather than BLAS: none on an ISA their tile does not suit."""
    if (isa or host_isa()) not in tuning.OWN_ISAS or d * dtype.itemsize % tuning.OWN_ROW_ALIGN:
        return 0
    return ((OWN_SCORES if n * d >= tuning.OWN_SCORES_MIN_WEIGHTS else 0)
            | (OWN_BACKWARD if n * d >= tuning.OWN_BACKWARD_MIN_WEIGHTS else 0))


def own_chunk_rows(rows, itemsize):
    """Rows of a block of scores on the C backend's own products: whole register tiles
    (OWN_TILE_BYTES), which a partial one wastes (96 float32 rows compute 128), else whole
    vectors, else the rows as they are. (Numba's tile is 4 rows of any length: its blocks keep
    the budget's rows.)"""
    for unit in (OWN_TILE_BYTES // itemsize, 64 // itemsize):
        if rows >= unit:
            return rows - rows % unit
    return rows


def default_chunk_rows(n, itemsize):
    """Rows of scores that fit the score budget (fastbp.config.score_block_bytes)."""
    return max(1, config.score_block_bytes // (n * itemsize))


def score_blocks(head, B, n, itemsize, chunk_rows, options):
    """(rows, cols) of the score block linear_head holds: cols < n means column blocks (only
    softmax_nll without softcap / z_loss, whose rows need every score at once, and only without
    an explicit chunk_rows, which asks for row blocks)."""
    if chunk_rows:
        return chunk_rows, n
    rows = default_chunk_rows(n, itemsize)
    if (head != "softmax_nll" or rows >= min(B, COLUMN_MIN_ROWS) or options.get("softcap")
            or options.get("z_loss")):
        return rows, n
    panel = min(B, PANEL_ROWS)
    return panel, max(1, config.score_block_bytes // (panel * itemsize))


@functools.lru_cache(maxsize=None)
def _cpuinfo():
    """The first processor's fields of Linux's /proc/cpuinfo ({} where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


@functools.lru_cache(maxsize=None)
def host_isa():
    """The ISA whose kernels run on this CPU: the first of ISAS its flags name (Linux's
    /proc/cpuinfo; "default" where it cannot be read)."""
    flags = _cpuinfo().get("flags", "").split()
    return next(isa for isa in ISAS if isa == "default" or isa in flags)


def cpu_model():
    """The CPU model a tuning cache is kept for: vendor, family, model and name (every core of
    one model runs the same kernels at the same crossovers)."""
    info = _cpuinfo()
    return " ".join(info.get(k, "?") for k in ("vendor_id", "cpu family", "model", "model name"))


class Plan(NamedTuple):
    """What a linear_head / linear_loss call runs (plan()). path: "fused" (the fused rows on
    ``blocks`` fixed row blocks), "one_block" (Numba: the whole batch as one block of scores in
    one compiled call), "chunked" (per block of ``chunk`` rows on a ``team`` of threads, split
    by rows if ``by_rows`` else by classes; ``own``: FBP_OWN_* bits) or "columns" (softmax_nll
    in (chunk, cols) blocks); tile: the ISA whose kernels run (host_isa)."""
    path: str
    blocks: int = 0
    chunk: int = 0
    cols: int = 0
    own: int = 0
    team: int = 1
    by_rows: bool = False
    tile: str = "default"


def plan(backend, B, d, n, dtype, head="softmax_nll", options=None, chunk_rows=None,
         threads=1, fused_threads=None, loss=False, filter_eps=0.0):
    """The one place a compiled backend's linear_head (or, ``loss=True``, linear_loss) chooses
    its path and team, from the backend's TUNING: ``threads`` the backend's thread count,
    ``fused_threads`` the most the call may use (default ``threads``; 1 inside a BLAS-driven
    network, whose GEMMs keep BLAS's pool): the fused rows' blocks and the chunked team.
    c_kernels, the Numba package and fastbp.jax's XLA targets run what it returns; the tests
    read it to check each forced path is the one taken."""
    T, dtype = TUNING[backend], np.dtype(dtype)
    tile, work = host_isa(), B * n * d
    ft = threads if fused_threads is None else min(threads, fused_threads)
    few = tile in T.FUSED_ISAS            # the few-class windows run on this ISA
    if not loss:
        min_work = max(T.FUSED_MIN_WORK if dtype.itemsize == 8 else T.FUSED_MIN_WORK_F32,
                       T.PARALLEL_MIN_WORK)
        if n * d <= T.FUSED_ANY_N_WEIGHTS or (few and ft > 1 and n <= T.FUSED_MAX_N
                                              and B >= T.FUSED_MIN_ROWS and work >= min_work):
            blocks = (1 if work < T.PARALLEL_MIN_WORK or B < 2 * ft
                      else min(T.BLOCKS_PER_THREAD * ft, max(ft, B // 8)))
            return Plan("fused", blocks, tile=tile)
        if few and n <= T.FUSED_FEW_N and T.FUSED_FEW_MIN_D <= d and n * d <= T.FUSED_FEW_WEIGHTS:
            return Plan("fused", 1, tile=tile)
        chunk, cols = score_blocks(head, B, n, dtype.itemsize, chunk_rows, options or {})
    else:
        chunk, cols = chunk_rows or default_chunk_rows(n, dtype.itemsize), n
    if cols < n:
        return Plan("columns", chunk=min(chunk, max(B, 1)), cols=cols, tile=tile)
    if T.ONE_BLOCK and not loss and B and chunk >= B and (ft == 1 or work < CHUNKED_MIN_WORK):
        return Plan("one_block", chunk=B, cols=n, tile=tile)
    own = own_products(T, dtype, n, d, tile) & (OWN_SCORES if loss else T.OWN_KERNELS)
    if own & OWN_SCORES and not chunk_rows and T.OWN_WHOLE_TILES:
        chunk = own_chunk_rows(chunk, dtype.itemsize)
    chunk = min(chunk, max(B, 1))
    by_rows = n < 2 * CHUNKED_MIN_CLASSES and not filter_eps and (T.LOSS_BY_ROWS or not loss)
    team = 1 if work < CHUNKED_MIN_WORK else max(1, min(
        ft, chunk // CHUNKED_MIN_ROWS if by_rows else n // CHUNKED_MIN_CLASSES))
    return Plan("chunked", chunk=chunk, cols=n, own=own, team=team, by_rows=by_rows, tile=tile)


@functools.lru_cache(maxsize=None)
def host_bf16():
    """Whether the CPU has AVX512-BF16 (Linux's /proc/cpuinfo flags)."""
    return "avx512_bf16" in _cpuinfo().get("flags", "").split()


def bf16_dot(backend, p, d, built=True):
    """The bfloat16 product set a bfloat16 call on plan ``p`` runs (csrc/dot16.h: 1 vdpbf16ps,
    2 its arithmetic emulated), or 0 (the conversion path), by the backend's BF16_DOT;
    ``built``: whether the backend has the vdpbf16ps kernels."""
    mode = getattr(TUNING[backend], "BF16_DOT", "off")
    if mode == "off" or p.path != "chunked" or p.by_rows or d % 2:
        return 0
    return 2 if mode == "emulate" else int(built and host_bf16())


def tiny_window(backend):
    """csrc/fastcall.c's window, the backend's thresholds under which plan() runs a call's
    fused rows on one block: (FUSED_ANY_N_WEIGHTS, FUSED_FEW_N, FUSED_FEW_MIN_D,
    FUSED_FEW_WEIGHTS, PARALLEL_MIN_WORK), passed in on every call (tests/test_linear_head.py
    checks the window against plan())."""
    T = TUNING[backend]
    few_n = T.FUSED_FEW_N if host_isa() in T.FUSED_ISAS else 0
    return (T.FUSED_ANY_N_WEIGHTS, few_n, T.FUSED_FEW_MIN_D, T.FUSED_FEW_WEIGHTS,
            T.PARALLEL_MIN_WORK)


# ------------------------------------------------------------------ measured on the host
# The thresholds the CPU's features cannot decide: `fastbp tune` (fastbp/tune.py) measures them
# on the user's machine and caches them per CPU model; every later process applies that cache
# here at import (FASTBP_TUNING=defaults: the shipped values). docs/performance.md, "fastbp tune".
MEASURED = ("FUSED_FEW_N", "FUSED_MIN_WORK", "FUSED_MIN_WORK_F32", "OWN_ISAS")
CACHE_FORMAT = 1
_SHIPPED = {b: {k: getattr(T, k) for k in MEASURED} for b, T in TUNING.items()}
# where the MEASURED values in force came from (fastbp.info()["tuning"]["thresholds"])
SOURCE = {"source": "shipped defaults: fastbp/backends/tuning.py", "path": None, "measured": None}


def cache_path():
    """This CPU model's tuning cache: FASTBP_CACHE_DIR, else $XDG_CACHE_HOME/fastbp, else
    ~/.cache/fastbp; one file per CPU model (cpu_model)."""
    root = os.environ.get("FASTBP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "fastbp")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", cpu_model()).strip("-").lower()
    return os.path.join(root, f"tuning-{slug}.json")


def fastbp_version():
    """The installed fastbp's version (a cache measured with another is not applied)."""
    try:
        return metadata.version("fastbp")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_cache(data, version):
    """Why a cache's contents cannot be applied here, or None."""
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return f"not a format-{CACHE_FORMAT} fastbp tuning cache"
    if data.get("cpu") != cpu_model():
        return f"measured on another CPU ({data.get('cpu')!r})"
    if data.get("fastbp") != version:
        return f"measured with fastbp {data.get('fastbp')}, this is {version}"
    values = data.get("values")
    if not isinstance(values, dict) or set(values) - set(TUNING):
        return "its values are not {backend: {threshold: value}}"
    for backend, settings in values.items():
        for k, v in (settings.items() if isinstance(settings, dict) else [(None, None)]):
            ok = (isinstance(v, list) and set(v) <= set(ISAS) if k == "OWN_ISAS" else
                  k in MEASURED and isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            if not ok:
                return f"{backend}.{k} = {v!r} is not a threshold fastbp tune measures"
    return None


def reset_measured():
    """The shipped MEASURED values, in force from here on."""
    for b, T in TUNING.items():
        for k, v in _SHIPPED[b].items():
            setattr(T, k, v)
    SOURCE.update(source="shipped defaults: fastbp/backends/tuning.py", path=None, measured=None)


def apply_measured(data=None, path=None):
    """Put the shipped MEASURED values back, then ``data`` (a cache's contents, as
    fastbp/tune.py writes them) over them; ``data=None`` reads this CPU model's cache, if any
    and FASTBP_TUNING is not "defaults". A cache that cannot be applied warns and is ignored."""
    reset_measured()
    if data is None:
        setting = os.environ.get("FASTBP_TUNING", "cache")
        if setting not in ("cache", "defaults"):
            warnings.warn(f"FASTBP_TUNING must be 'cache' or 'defaults', got {setting!r}: "
                          "using the cache", RuntimeWarning, stacklevel=2)
        path = cache_path()
        if setting == "defaults" or not os.path.exists(path):
            return SOURCE
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            data = exc
    why = (f"unreadable: {data}" if isinstance(data, Exception) else
           _check_cache(data, fastbp_version()))
    if why:
        warnings.warn(f"fastbp: tuning cache {path} ignored ({why}); the shipped thresholds "
                      "hold: rerun `fastbp tune`", RuntimeWarning, stacklevel=2)
        return SOURCE
    for b, settings in data["values"].items():
        for k, v in settings.items():
            setattr(TUNING[b], k, tuple(v) if isinstance(v, list) else v)
    SOURCE.update(source=f"measured by `fastbp tune` on {data.get('date', '?')}", path=path,
                  measured=data["values"])
    return SOURCE


apply_measured()
