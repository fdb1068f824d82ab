"""Tunables, in one place. Change them at run time: ``fastbp.config.score_block_bytes = 1 << 20``."""

#: Budget for the block of scores ``linear_head`` holds at once (``chunk_rows x n`` entries):
#: cache-sized, so peak extra memory does not grow with the batch.
score_block_bytes = 4 << 20

#: The only fastmath flags the compiled kernels may use. ``fastmath=True`` would also assume
#: no NaN/Inf, which breaks NaN propagation (design.md, "fastmath").
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
