"""Tunables, in one place. Change them at run time: ``fastbp.config.score_block_bytes = 1 << 20``."""

#: Budget for the block of scores ``linear_head`` holds at once (``chunk_rows x n`` entries), so
#: peak extra memory does not grow with the batch. A trade-off, measured at B=1024, d=512,
#: n=32000 float32 (benchmarks/test_bench_linear_head.py): smaller blocks make BLAS run
#: skinny, slower GEMMs (a 4 MiB block, 32 rows: 2.5x the bare GEMMs; 12 MiB, 98 rows: ~1.5x;
#: the whole 131 MB matrix: ~1.2x); 12 MiB keeps the block under 1/8 of that score matrix.
score_block_bytes = 12 << 20

#: The only fastmath flags the compiled kernels may use. ``fastmath=True`` would also assume
#: no NaN/Inf, which breaks NaN propagation (docs/design.md, "fastmath").
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
