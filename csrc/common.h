/* Internal pieces shared by every family file (not part of the cffi interface). */
#ifndef FBP_COMMON_H
#define FBP_COMMON_H

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fastbp.h"

#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num(void) { return 0; }   /* (teams are one thread then) */
#endif

/* Hot loops are compiled for AVX-512F, AVX2 and the baseline, the best picked at load time
 * (GCC function multi-versioning): the build never uses -march=native, so a wheel runs on any
 * x86-64. FBP_HOT is empty where multi-versioning is not available. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
        && !defined(FBP_NO_CLONES)
#define FBP_HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FBP_HOT
#endif

/* Helpers of the hot loops are force-inlined, so each clone gets its own vector code (a helper
 * left out of line would be compiled for the baseline only). */
#if defined(__GNUC__)
#define FBP_INLINE static inline __attribute__((always_inline))
#else
#define FBP_INLINE static inline
#endif

#define FBP_MAX_BLOCKS 64          /* cap on the fixed row blocks of a parallel kernel */

/* The fused rows' register blocks are 64-byte vectors (GCC / Clang vector extensions, linear.c),
 * explicit because the compiler does not block a loop nest over registers by itself. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"     /* the vector helpers are always inlined: no ABI */
#endif

/* ---- runtime (runtime.c) */
extern void *fbp_sgemm, *fbp_dgemm;     /* Fortran ?gemm (layer_ops.h casts them) */
extern int fbp_blas_ilp64;                 /* their integers are int64_t, else int */
int fbp_threads(void);             /* the set_num_threads value (>= 1) */
/* Every scratch allocation of the kernels goes through these: malloc / calloc / free that keep
 * the bytes alive and their high-water mark (fbp_scratch_peak), so memory is counted exactly. */
void *fbp_malloc(size_t bytes);
void *fbp_calloc(size_t count, size_t size);
void fbp_free(void *p);

static inline int fbp_fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }
/* a head struct with a code of the enum (every kernel checks it before reading a row) */
static inline int fbp_known_head(const fbp_head *h)
{
    return h && h->code >= 0 && h->code < FBP_NUM_HEADS;
}
/* A bfloat16 call's rows for the fused rows (linear_fused_bf16): X and dX as bfloat16 bits,
 * whole arrays (B, d); NULL where the float arrays are used */
typedef struct {
    const uint16_t *X;
    uint16_t *dX;
} fbp_bf16_rows;

/* a float32's bits rounded to bfloat16's (to nearest even; a NaN stays a quiet NaN) */
FBP_INLINE uint16_t fbp_to_bf16(uint32_t u)
{
    uint16_t nan = (uint16_t)((u >> 16) | 0x40);
    uint16_t rounded = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}

static inline int64_t fbp_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t fbp_max(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- scalars, NaN-faithful as the NumPy reference */
FBP_INLINE double fbp_relu(double x) { return (x > 0 || x != x) ? x : 0.0; }
/* 1[x > 0], NaN for NaN and +-Inf (the reference's (x > 0) + 0 * x) */
FBP_INLINE double fbp_step(double x) { return (x > 0 ? 1.0 : 0.0) + 0.0 * x; }
FBP_INLINE double fbp_sign(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : x); }
/* exp(x), inline and branch-free so a loop calling it vectorizes (libm's exp is a scalar call):
 * exp(x) = 2^k e^r, k = round(x / ln 2) by the 1.5 * 2^52 trick (whose low bits are then k
 * itself), r = x - k ln 2 (Cody-Waite: ln 2 in two parts), |r| <= ln(2)/2, e^r by its Taylor
 * polynomial of degree 13 (truncation < 5e-18 relative; degree 11 left 7e-15, which tanh's
 * (1 - e) / (1 + e) showed as 7e-15 relative), 2^k from its IEEE bits. x is clamped
 * to [-708, 709], and below -708 the result is 0 (libm's is subnormal there, < 3e-308, and 0
 * from -745: a sigmoid of -1e4 is 0, not 3e-308); NaN stays NaN (the comparisons are false for
 * it, and NaN flows through the polynomial). */
FBP_INLINE double fbp_exp1(double x)
{
    const double log2e = 1.4426950408889634, ln2_hi = 6.93147180369123816490e-01,
                 ln2_lo = 1.90821492927058770002e-10, shifter = 6755399441055744.0;
    double c = x;                        /* selects, not branches */
    c = c < -708.0 ? -708.0 : c;
    c = c > 709.0 ? 709.0 : c;
    double kd = c * log2e + shifter;
    int64_t kbits;
    memcpy(&kbits, &kd, sizeof kbits);
    kd -= shifter;
    double r = (c - kd * ln2_hi) - kd * ln2_lo;
    /* clang-format off */
    double p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (
        1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (
        1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (
        1.0 / 479001600 + r * (1.0 / 6227020800.0)))))))))))));
    /* clang-format on */
    /* k = kbits - bits(shifter) = low bits of kbits; 2^k = (k + 1023) << 52 */
    int64_t sbits = (int64_t)(((uint64_t)(kbits - 0x4338000000000000LL) + 1023) << 52);
    double scale;
    memcpy(&scale, &sbits, sizeof scale);
    return x < -708.0 ? 0.0 : p * scale; /* a NaN x made p NaN */
}

/* x[j] = exp(x[j]) in place (fbp_exp1: the loop vectorizes) */
FBP_INLINE void fbp_vexp(double *x, int64_t n)
{
    for (int64_t j = 0; j < n; j++)
        x[j] = fbp_exp1(x[j]);
}

/* log1p(e) for 0 <= e <= 1 (NaN stays NaN), inline and vectorizable as fbp_exp1 (libm's log1p
 * is a scalar call): log(1 + e) = 2 atanh(t), t = e / (2 + e) in [0, 1/3], by the series
 * 2 t sum_k t^2k / (2k + 1) to k = 16 (the first term left out is < 2e-17 of the sum); relative
 * throughout, so a tiny e keeps its digits. */
FBP_INLINE double fbp_log1p_unit(double e)
{
    double t = e / (2.0 + e), u = t * t;
    /* clang-format off */
    double p = 1.0 + u * (1.0 / 3 + u * (1.0 / 5 + u * (1.0 / 7 + u * (1.0 / 9 + u * (
        1.0 / 11 + u * (1.0 / 13 + u * (1.0 / 15 + u * (1.0 / 17 + u * (1.0 / 19 + u * (
        1.0 / 21 + u * (1.0 / 23 + u * (1.0 / 25 + u * (1.0 / 27 + u * (1.0 / 29 + u * (
        1.0 / 31 + u * (1.0 / 33))))))))))))))));
    /* clang-format on */
    return 2.0 * t * p;
}

/* expm1(y) for y <= 0 (NaN stays NaN), inline and vectorizable: from -0.5 up its Taylor series
 * y (1 + y/2 (1 + y/3 (... (1 + y/16)))) (the first term left out is < 2e-18 of the sum,
 * relative throughout: a tiny y keeps its digits), below it fbp_exp1(y) - 1 (>= 0.39 in size:
 * no cancellation). */
FBP_INLINE double fbp_expm1_neg(double y)
{
    double p = 1.0 + y / 16, q;
    /* clang-format off */
    p = 1.0 + y / 15 * p; p = 1.0 + y / 14 * p; p = 1.0 + y / 13 * p; p = 1.0 + y / 12 * p;
    p = 1.0 + y / 11 * p; p = 1.0 + y / 10 * p; p = 1.0 + y / 9 * p; p = 1.0 + y / 8 * p;
    p = 1.0 + y / 7 * p; p = 1.0 + y / 6 * p; p = 1.0 + y / 5 * p; p = 1.0 + y / 4 * p;
    p = 1.0 + y / 3 * p; p = 1.0 + y / 2 * p;
    /* clang-format on */
    q = fbp_exp1(y) - 1.0;
    return y >= -0.5 ? y * p : q;
}

/* tanh(x) = sign(x) (1 - e^-2|x|) / (1 + e^-2|x|) = sign(x) (-m) / (2 + m), m = expm1(-2|x|):
 * inline and vectorizable (libm's tanh is a scalar call); -0 stays -0, NaN stays NaN */
FBP_INLINE double fbp_tanh(double x)
{
    double m = fbp_expm1_neg(-2.0 * fabs(x));
    return copysign(-m / (2.0 + m), x);
}

/* sigma(x) without overflow: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below */
FBP_INLINE double fbp_sigmoid(double x)
{
    double e = exp(-fabs(x));
    return x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

FBP_INLINE double fbp_activate(int act, double x, double alpha)
{
    switch (act) {
    case FBP_SIGMOID: return fbp_sigmoid(x);
    case FBP_TANH: return fbp_tanh(x);
    case FBP_RELU: return fbp_relu(x);
    case FBP_LEAKY: return x > 0 ? x : alpha * x;
    case FBP_ELU: return x > 0 ? x : alpha * fbp_expm1_neg(x > 0 ? 0.0 : x); /* NaN stays */
    default: return x;
    }
}

/* f'(s) read off a = f(s) (alpha >= 0 keeps the sign of s) */
FBP_INLINE double fbp_activation_grad(int act, double a, double alpha)
{
    switch (act) {
    case FBP_SIGMOID: return a * (1.0 - a);
    case FBP_TANH: return 1.0 - a * a;
    case FBP_RELU: return a > 0 ? 1.0 : 0.0;
    case FBP_LEAKY: return a > 0 ? 1.0 : alpha;
    case FBP_ELU: return a > 0 ? 1.0 : a + alpha;
    default: return 1.0;
    }
}

#endif
