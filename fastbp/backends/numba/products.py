"""fastbp's own products (csrc/products.h): the chunked path's scores S = X_c W^T read W's rows
where they lie (BLAS packs all of W again per block of rows), and ``scores``, the choice
between them and BLAS."""
import numpy as np

from .runtime import gemm
from ._jit import jit


@jit
def own_scores(S, Xc, W, c0, c1):
    """S[:, c0:c1] = Xc W[c0:c1]^T, fastbp's own product (csrc/products.h's scores): dot tiles
    of 4 rows by 4 classes along k, whose 16 sums LLVM vectorizes into vector accumulators
    (config.FASTMATH's reassociation), each load feeding 4 multiply-adds, W's rows read where
    they lie (BLAS packs all of W again per block of rows). A tile past the rows or classes
    repeats the last one; the stores, last one first, leave each element its own sum."""
    rows, d = Xc.shape
    ud = np.uint64(d)
    zero = W.dtype.type(0)
    for j0 in range(c0, c1, 4):          # 4 rows of W stay in L1 over the block's rows
        q0, q1, q2, q3 = j0, min(j0 + 1, c1 - 1), min(j0 + 2, c1 - 1), min(j0 + 3, c1 - 1)
        for i0 in range(0, rows, 4):
            r0, r1 = i0, min(i0 + 1, rows - 1)
            r2, r3 = min(i0 + 2, rows - 1), min(i0 + 3, rows - 1)
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
            a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = zero
            for k in range(ud):
                x0, x1, x2, x3 = Xc[r0, k], Xc[r1, k], Xc[r2, k], Xc[r3, k]
                w0, w1, w2, w3 = W[q0, k], W[q1, k], W[q2, k], W[q3, k]
                a00 += x0 * w0
                a01 += x0 * w1
                a02 += x0 * w2
                a03 += x0 * w3
                a10 += x1 * w0
                a11 += x1 * w1
                a12 += x1 * w2
                a13 += x1 * w3
                a20 += x2 * w0
                a21 += x2 * w1
                a22 += x2 * w2
                a23 += x2 * w3
                a30 += x3 * w0
                a31 += x3 * w1
                a32 += x3 * w2
                a33 += x3 * w3
            S[r3, q3], S[r3, q2], S[r3, q1], S[r3, q0] = a33, a32, a31, a30
            S[r2, q3], S[r2, q2], S[r2, q1], S[r2, q0] = a23, a22, a21, a20
            S[r1, q3], S[r1, q2], S[r1, q1], S[r1, q0] = a13, a12, a11, a10
            S[r0, q3], S[r0, q2], S[r0, q1], S[r0, q0] = a03, a02, a01, a00


@jit
def scores(S, Xc, W, c0, c1, own):
    """S[:, c0:c1] = Xc W[c0:c1]^T: own_scores (own), else BLAS."""
    if own:
        own_scores(S, Xc, W, c0, c1)
    else:
        gemm(S[:, c0:c1], Xc, W[c0:c1], False, True)
