/* Runtime settings: the BLAS the kernels call and the number of OpenMP threads. */
#define _GNU_SOURCE   /* sysconf's cache sizes */
#include "common.h"

#include <unistd.h>

#include <pthread.h>

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

/* BLAS's thread count, set to 1 while a kernel runs its own products on each of its threads
 * (two pools on the same cores would wait on each other's spinning threads): the first holder
 * saves the count and the last restores it, so concurrent kernels leave the user's count. */
typedef void (*fbp_set_threads_t)(int);
typedef int (*fbp_get_threads_t)(void);
static fbp_set_threads_t blas_set = NULL;
static fbp_get_threads_t blas_get = NULL;
static pthread_mutex_t blas_lock = PTHREAD_MUTEX_INITIALIZER;
static int blas_holders = 0, blas_saved = 0;

void fbp_set_blas_threads(void *set, void *get)
{
    pthread_mutex_lock(&blas_lock);
    blas_set = (fbp_set_threads_t)set;
    blas_get = (fbp_get_threads_t)get;
    pthread_mutex_unlock(&blas_lock);
}

int fbp_blas_hold(void)
{
    pthread_mutex_lock(&blas_lock);
    int ok = blas_set && blas_get;
    if (ok && blas_holders++ == 0) {
        blas_saved = blas_get();
        blas_set(1);
    }
    pthread_mutex_unlock(&blas_lock);
    return ok;
}

void fbp_blas_release(void)
{
    pthread_mutex_lock(&blas_lock);
    if (blas_holders > 0 && --blas_holders == 0)
        blas_set(blas_saved);
    pthread_mutex_unlock(&blas_lock);
}

/* Kept here and passed to every parallel region's num_threads (omp_set_num_threads would only
 * set the calling thread's value, and Python may call from any thread). */
void fbp_set_num_threads(int n) { threads = n < 1 ? 1 : n; }

/* A process forked after OpenMP ran has no OpenMP threads, but libgomp still counts on its pool
 * and waits for it forever: from fork on, the child runs every parallel region's blocks in a
 * loop on its one thread (the same blocks, so the same bits). Registered when the library
 * loads, so any fork is covered (multiprocessing, os.fork, a server's workers). */
static volatile int forked = 0;

static void fbp_after_fork_in_child(void) { forked = 1; }

__attribute__((constructor)) static void fbp_register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, fbp_after_fork_in_child);
}

int fbp_forked_child(void) { return forked; }

/* Each block carries its size in a header of FBP_HEADER bytes (a multiple of 64: the block's
 * alignment stays malloc's). */
#define FBP_HEADER 64
static int64_t scratch_live = 0, scratch_peak = 0;

void *fbp_malloc(size_t bytes)
{
    char *raw = malloc(bytes + FBP_HEADER);
    if (!raw)
        return NULL;
    memcpy(raw, &bytes, sizeof bytes);
    int64_t live = __atomic_add_fetch(&scratch_live, (int64_t)bytes, __ATOMIC_RELAXED);
    int64_t seen = __atomic_load_n(&scratch_peak, __ATOMIC_RELAXED);
    while (live > seen
           && !__atomic_compare_exchange_n(&scratch_peak, &seen, live, 1, __ATOMIC_RELAXED,
                                           __ATOMIC_RELAXED))
        ;
    return raw + FBP_HEADER;
}

void *fbp_calloc(size_t count, size_t size)
{
    void *p = fbp_malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void fbp_free(void *p)
{
    if (!p)
        return;
    char *raw = (char *)p - FBP_HEADER;
    size_t bytes;
    memcpy(&bytes, raw, sizeof bytes);
    __atomic_sub_fetch(&scratch_live, (int64_t)bytes, __ATOMIC_RELAXED);
    free(raw);
}

int64_t fbp_scratch_peak(void) { return __atomic_load_n(&scratch_peak, __ATOMIC_RELAXED); }

void fbp_scratch_reset(void)
{
    __atomic_store_n(&scratch_peak, __atomic_load_n(&scratch_live, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
}

int fbp_threads(void)
{
#ifdef _OPENMP
    return threads ? threads : omp_get_max_threads();
#else
    return 1;
#endif
}

/* GOMP_SPINCOUNT as libgomp read it when it loaded, before this library (-1: unset) */
static int64_t spin_at_load = -2;
__attribute__((constructor)) static void record_spin(void)
{
    const char *s = getenv("GOMP_SPINCOUNT");
    spin_at_load = s ? strtoll(s, NULL, 10) : -1;
}
int64_t fbp_spin_at_load(void) { return spin_at_load; }

int fbp_isa(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    /* the bits GCC's target_clones resolver reads */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 0 : __builtin_cpu_supports("avx2") ? 1 : 2;
#else
    return 2;
#endif
}

static int tile = -1;             /* -1: fbp_isa() */
int fbp_tile(void) { return tile < 0 ? fbp_isa() : tile; }
int fbp_set_tile(int isa)
{
    tile = isa < 0 ? -1 : isa == FBP_TILE_WIDE ? isa : (int)fbp_min(fbp_max(isa, fbp_isa()), 2);
    return fbp_tile();
}

int64_t fbp_l2_bytes(void)
{
    static int64_t l2 = 0;        /* (every thread that races here writes the same value) */
    if (!l2) {
        long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
        l2 = v >= 64 * 1024 ? v : 512 * 1024;
    }
    return l2;
}

/* ---- bfloat16 <-> float32 (fastbp/_bf16.py): a bfloat16 is a float32's upper 16 bits, so
 * widening is exact; narrowing rounds to nearest even and keeps a NaN a (quiet) NaN, as
 * ml_dtypes does. Element by element: the same bits at any thread count. */
FBP_HOT static void widen_part(float *dst, const uint16_t *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
}

FBP_HOT static void narrow_part(void *dst, const float *src, int64_t n, int as_float)
{
    if (as_float) {
        float *out = dst;
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &src[i], 4);
            u = (uint32_t)fbp_to_bf16(u) << 16;
            memcpy(&out[i], &u, 4);
        }
    } else {
        uint16_t *out = dst;
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &src[i], 4);
            out[i] = fbp_to_bf16(u);
        }
    }
}

/* parts of FBP_CONVERT_PART elements on the threads once there are two of them (a fork / join
 * costs more than a smaller conversion) */
#define FBP_CONVERT_PART (64 * 1024)
static int convert_threads(int64_t n)
{
    int64_t parts = (n + FBP_CONVERT_PART - 1) / FBP_CONVERT_PART;
    return parts < 2 ? 1 : (int)fbp_min(parts, fbp_threads());
}

void fbp_bf16_to_f32(float *dst, const uint16_t *src, int64_t n)
{
    int64_t parts = (n + FBP_CONVERT_PART - 1) / FBP_CONVERT_PART;
#pragma omp parallel for num_threads(convert_threads(n)) schedule(static)
    for (int64_t p = 0; p < parts; p++)
        widen_part(dst + p * FBP_CONVERT_PART, src + p * FBP_CONVERT_PART,
                   fbp_min(FBP_CONVERT_PART, n - p * FBP_CONVERT_PART));
}

void fbp_f32_to_bf16(void *dst, const float *src, int64_t n, int as_float)
{
    int64_t parts = (n + FBP_CONVERT_PART - 1) / FBP_CONVERT_PART;
    size_t size = as_float ? sizeof(float) : sizeof(uint16_t);
#pragma omp parallel for num_threads(convert_threads(n)) schedule(static)
    for (int64_t p = 0; p < parts; p++)
        narrow_part((char *)dst + (size_t)(p * FBP_CONVERT_PART) * size, src + p * FBP_CONVERT_PART,
                    fbp_min(FBP_CONVERT_PART, n - p * FBP_CONVERT_PART), as_float);
}
