"""Tunables, in one place. Change them at run time:
``fastbp.config.score_block_bytes = 1 << 20``."""

#: Budget for the block of scores ``linear_head`` holds at once (``chunk_rows x n`` entries), so
#: peak extra memory does not grow with the batch: smaller blocks make BLAS run skinny, slower
#: products (the trade: docs/performance.md, "The score budget").
score_block_bytes = 12 << 20

#: The only fastmath flags the compiled kernels may use. ``fastmath=True`` would also assume
#: no NaN/Inf, which breaks NaN propagation (docs/design.md, "fastmath").
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
