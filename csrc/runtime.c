/* Runtime settings: the BLAS the kernels call and the number of OpenMP threads. */
#include "common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

void *fbp_sgemm = NULL, *fbp_dgemm = NULL;
int fbp_blas_ilp64 = 0;
static int threads = 0;           /* 0: OpenMP's default (one per core) */

/* The Fortran ?gemm the kernels call, set once by fastbp/backends/c_kernels.py at import:
 * NumPy's own OpenBLAS (ILP64: 64-bit integer arguments) where found, else SciPy's from
 * scipy.linalg.cython_blas (32-bit integers). */
void fbp_set_blas(void *sgemm, void *dgemm, int ilp64)
{
    fbp_sgemm = sgemm;
    fbp_dgemm = dgemm;
    fbp_blas_ilp64 = ilp64;
}

/* Kept here and passed to every parallel region's num_threads (omp_set_num_threads would only
 * set the calling thread's value, and Python may call from any thread). */
void fbp_set_num_threads(int n) { threads = n < 1 ? 1 : n; }

int fbp_threads(void)
{
#ifdef _OPENMP
    return threads ? threads : omp_get_max_threads();
#else
    return 1;
#endif
}
