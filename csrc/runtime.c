/* Runtime settings: the BLAS the kernels call and the number of OpenMP threads. */
#include "common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

fbp_sgemm_t fbp_sgemm = NULL;
fbp_dgemm_t fbp_dgemm = NULL;
static int threads = 0;           /* 0: OpenMP's default (one per core) */

/* SciPy's ?gemm from scipy.linalg.cython_blas (the OpenBLAS NumPy and Numba use too); set once
 * by fastbp/backends/c_kernels.py at import. */
void fbp_set_blas(void *sgemm, void *dgemm)
{
    fbp_sgemm = (fbp_sgemm_t)sgemm;
    fbp_dgemm = (fbp_dgemm_t)dgemm;
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
