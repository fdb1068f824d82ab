"""The compiled backends' tuning thresholds, in one place: which path a call takes by shape.

Each rule says what it chooses and why in a line; the measurements behind every number, and how
to remeasure them (``make crossover``), are in docs/performance.md. Tests override these per
backend (``module.TUNING``) to run every path at small shapes.
"""
from .. import config


class C:
    """c_kernels.linear_head's choice between the fused rows and chunked BLAS."""
    FUSED_ANY_N_WEIGHTS = 256     # n d <= this: tiny W, always fused (fixed cost beats BLAS's)
    FUSED_FEW_N = 10              # few classes, one block fused when n <= this, d >= the next
    FUSED_FEW_MIN_D = 64          #   and n d <= FUSED_FEW_WEIGHTS: the fused rows beat BLAS's
    FUSED_FEW_WEIGHTS = 5120      #   packing there, lose beyond
    FUSED_MAX_N = 12              # fused on all threads: n <= this and B n d >= FUSED_MIN_WORK
    FUSED_MIN_WORK = 1 << 23      #   (a region needing both cores for long loses them below);
    FUSED_MIN_WORK_F32 = 1 << 20  #   float32's rows run 16 lanes and beat BLAS from smaller work
    PARALLEL_MIN_WORK = 1 << 16   # B n d below this: one block (a fork/join costs more)
    BLOCKS_PER_THREAD = 4         # row blocks per thread (of 8 rows or more): load balance
    # the chunked path's products on fastbp's own kernels (csrc/products.h) once W has this
    # many weights: the scores (BLAS packs all of W again per block of rows), the backward
    # (never: BLAS packs only its small operands there, and is as fast)
    OWN_SCORES_MIN_WEIGHTS = 1 << 22
    OWN_BACKWARD_MIN_WEIGHTS = 1 << 62
    OWN_ROW_ALIGN = 64            # and W's rows whole 64-byte lines (d = 500 float32: every
    #                               vector load of a row would be split over two)


class Numba:
    """The numba backend: linear_head's choice between the fused rows and BLAS; the heads'
    threads."""
    FUSED_ANY_N_WEIGHTS = 1024    # n d <= this: tiny W, always fused on one thread (BLAS's
    #                               packing costs more, most with caches cold after user code)
    FUSED_MAX_N = 12              # fused on all threads: n <= this, B >= FUSED_MIN_ROWS and
    FUSED_MIN_WORK = 1 << 23      #   B n d >= FUSED_MIN_WORK (float64) / _F32 (float32): as C's
    FUSED_MIN_WORK_F32 = 1 << 20  #   fused rows, since their k loops run in X's dtype too
    FUSED_MIN_ROWS = 128
    FUSED_TINY_SCORES = 64        # one thread, B n <= this: the rows one at a time (their
    #                               blocks' setup costs more than such a call's arithmetic)
    PARALLEL_MIN_WORK = 1 << 16   # B n d below this: one thread
    BLOCKS_PER_THREAD = 1         # the fused rows' blocks per thread (of 8 rows or more), handed
    #                               out as threads free up; C's 4 cost 1.3x at C float32 here
    #                               (each block copies W: docs/performance.md, "In a loop")
    HEADS_PARALLEL_MIN = 1 << 16  # heads on scores: B n below this, one thread (csrc/heads.c's)
    OWN_SCORES_MIN_WEIGHTS = 1 << 23  # the chunked path's scores by own_scores (numba/linear.py:
    #                                   its dot tile beats BLAS's packing from there)
    OWN_BACKWARD_MIN_WEIGHTS = 1 << 62  # (no own backward kernels in Numba: never)
    OWN_ROW_ALIGN = 64                  # as C's
    FUSED_FEW_N = FUSED_FEW_MIN_D = FUSED_FEW_WEIGHTS = 0     # no few-classes window: its BLAS
    #                                                           path wins there


# softmax_nll with many classes: column blocks (two passes over the columns, four full-size
# products) once the score budget holds fewer than COLUMN_MIN_ROWS whole rows (and fewer than B)
COLUMN_MIN_ROWS = 64
PANEL_ROWS = 1024                 # rows per panel of column blocks (W is read three times each)
# the chunked path's team: one thread per CHUNKED_MIN_CLASSES classes at most, so each thread's
# one-thread products stay wide; below 2 x that many classes, the team splits the rows instead,
# one thread per CHUNKED_MIN_ROWS rows of a block at most (csrc/linear.c's #defines of the same
# names must equal them: tests/test_thread_counts.py)
CHUNKED_MIN_CLASSES = 128
CHUNKED_MIN_ROWS = 16
CHUNKED_MIN_WORK = 1 << 16        # B n d below this: one thread (a fork / join costs more)


OWN_SCORES, OWN_BACKWARD = 1, 2      # csrc/fastbp.h's FBP_OWN_* bits
OWN_TILE_BYTES = 256                 # a register tile's rows of scores: OWN_KV = 4 vectors of 64
#                                      bytes (csrc/linear.c), 64 float32 or 32 float64 rows


def own_products(tuning, dtype, n, d):
    """The FBP_OWN_* bits of the chunked path's products that run on fastbp's own kernels
    (csrc/products.h) rather than BLAS."""
    if d * dtype.itemsize % tuning.OWN_ROW_ALIGN:
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
