/* fastbp's C kernels (the "c" backend), bound with cffi in API mode (fastbp/backends/_cbuild.py
 * reads this file as its cdef: prototypes, enums and plain integer #defines only).
 *
 * Conventions (llm.c style): outputs first, gradients prefixed d, dimensions last; every array
 * is C-contiguous and already validated by fastbp/_checks.py (shapes, dtypes, labels in range);
 * NULL means "absent" (no bias, no sample_weight, dX not wanted, ...). Every kernel returns a
 * status, FBP_OK = 0; the kernels re-check their cheap preconditions (n >= 1, B >= 0, a known
 * head code) and never print or exit. Each kernel exists as _f64 (double) and _f32 (float),
 * compiled from one source
 * (csrc/template.h). Sums: sums[0] = sum_i sw_i l_i (the "sum" loss), sums[1] = sum_i omega_i
 * (the "mean" denominator); with mean != 0 every gradient row is already divided by sums[1].
 */
#define FBP_OK 0
#define FBP_EBADARG 1      /* a precondition failed: B < 0, n < 1, bad code */
#define FBP_ENOMEM 2       /* scratch allocation failed */
#define FBP_ETOOBIG 3      /* a dimension does not fit BLAS's 32-bit int */
#define FBP_ENOBLAS 4      /* fbp_set_blas was not called */

/* heads: the codes of fastbp/_registry.py's SPECS (checked at import; softmax_nll has two,
 * labels and probability rows) */
enum {
    FBP_SOFTMAX,
    FBP_SOFTMAX_PROBS,
    FBP_MHINGE,
    FBP_BHINGE,
    FBP_BCE,
    FBP_SIGMOID_L2,
    FBP_L2,
    FBP_L1,
    FBP_NLL,
    FBP_HUBER,
    FBP_FOCAL,
    FBP_NUM_HEADS
};

/* One head's arguments (fastbp/_registry.py's HEAD_DTYPE, field by field; checked at import):
 * the code, the target and weight arrays (NULL: absent; floats of the kernel's type: y (B,)
 * labels, Z (B, n) targets, sample_weight (B,), weight (n,), pos_weight (n,)), then one field
 * per scalar option, named as the option; a head reads only its own. */
typedef struct {
    int64_t code;
    const int64_t *y;
    const void *Z, *sample_weight, *weight, *pos_weight;
    int64_t ignore_index;
    double label_smoothing, z_loss, softcap, margin;    /* softcap 0: off */
    int64_t p;
    double delta, alpha, gamma;
} fbp_head;
/* activations, in fastbp.ACTIVATIONS order */
enum { FBP_SIGMOID, FBP_TANH, FBP_RELU, FBP_LEAKY, FBP_ELU, FBP_MAXOUT, FBP_IDENTITY };
/* optimizers (fastbp.SGD, fastbp.Adam) */
enum { FBP_SGD, FBP_ADAM };
/* linear_chunked's own: which of its products run on fastbp's own kernels (csrc/products.h)
 * instead of BLAS, bits: the scores S = X_c W^T, the backward dW and dX */
enum { FBP_OWN_SCORES = 1, FBP_OWN_BACKWARD = 2 };
/* reductions, in fastbp/_registry.py's REDUCTIONS order (the XLA targets' attribute) */
enum { FBP_REDUCE_MEAN, FBP_REDUCE_SUM, FBP_REDUCE_NONE };
/* the array options of an XLA call, bits in fastbp/_registry.py's ARRAY_FIELDS order after y, Z */
enum { FBP_ARR_SAMPLE_WEIGHT = 1, FBP_ARR_WEIGHT = 2, FBP_ARR_POS_WEIGHT = 4 };
/* Constants fastbp/backends/tuning.py reads too (compared at import: c_kernels._check_abi).
 * Own products' register tile (products.h): FBP_OWN_RA rows of C by FBP_OWN_KV 64-byte vectors
 * (24 accumulators + 4 loads + a broadcast: 29 of AVX-512's 32 registers); the heads run on
 * fixed row blocks over the threads from FBP_HEADS_PARALLEL_MIN scores (a fork / join costs
 * more below). */
#define FBP_OWN_RA 6
#define FBP_OWN_KV 4
#define FBP_HEADS_PARALLEL_MIN 65536

/* runtime: SciPy's ?gemm (Fortran interface) from scipy.linalg.cython_blas; OpenMP threads */
void fbp_set_blas(void *sgemm, void *dgemm, int ilp64);
void fbp_set_num_threads(int n);
/* BLAS's own openblas_set_num_threads / openblas_get_num_threads (C ABI), or NULL: with them a
 * kernel runs one-thread products on each of its OpenMP threads (linear_chunked) */
void fbp_set_blas_threads(void *set, void *get);
/* BLAS on one thread until fbp_blas_release (0: it cannot be set); holders nest, the last
 * release restores the count the first one found (the Numba backend holds through these too) */
int fbp_blas_hold(void);
void fbp_blas_release(void);
int fbp_forked_child(void);      /* 1 in a process forked from one that loaded this library */
/* the clone of the hot loops that runs here (common.h's FBP_HOT): an index of
 * fastbp/backends/tuning.py's ISAS, 0 "avx512f", 1 "avx2", 2 "default" */
int fbp_isa(void);
/* the fused rows' kernel set in force (csrc/fused.h), an ISAS index as fbp_isa's: the CPU's
 * best unless fbp_set_tile chose a lesser one (the tests run every set the CPU has), or
 * FBP_TILE_WIDE: the AVX-512 set's tiles on the baseline ISA (for the tests: its loops on any
 * x86-64); returns the one in force, never one the CPU lacks; -1 sets the CPU's best */
#define FBP_TILE_WIDE 3
int fbp_tile(void);
int fbp_set_tile(int isa);
/* the core's L2 in bytes as the C library reads it from the CPU, 512 KiB where it cannot say
 * (the fused rows' blocks of rows fit half of it) */
int64_t fbp_l2_bytes(void);
/* GOMP_SPINCOUNT when this library (and libgomp before it) loaded, -1 if unset (the spin policy
 * fastbp sets for its own load only: fastbp/backends/__init__.py's spin_policy) */
int64_t fbp_spin_at_load(void);
/* bfloat16 <-> float32 of n elements (fastbp/_bf16.py): widening exact; narrowing to nearest
 * even, a NaN kept a NaN, into bfloat16 (as_float 0) or into float32 holding the bfloat16 value
 * (as_float 1: a product operand of a bfloat16 call) */
void fbp_bf16_to_f32(float *dst, const uint16_t *src, int64_t n);
void fbp_f32_to_bf16(void *dst, const float *src, int64_t n, int as_float);
/* scratch memory: the most bytes the kernels held at once since the last reset (exact) */
int64_t fbp_scratch_peak(void);
void fbp_scratch_reset(void);

/* A head on scores S (B, n): dS (B, n, may be S) = gradient; loss_rows (B,) or NULL = weighted
 * per-row losses. */
int heads_f64(double *dS, double *loss_rows, double *sums, const double *S, const fbp_head *head,
              int mean, int64_t B, int64_t n);
int heads_f32(float *dS, double *loss_rows, double *sums, const float *S, const fbp_head *head,
              int mean, int64_t B, int64_t n);

/* linear_head, fused rows (no BLAS; small W): dW (n, d), db (n,) or NULL, dX (B, d) or NULL;
 * X (B, d), W (n, d), b (n,) or NULL; head as heads_*; nblocks fixed row blocks run
 * on OpenMP threads, their float64 partials combined in block order. */
int linear_fused_f64(double *dW, double *db, double *dX, double *sums, const double *X,
                     const double *W, const double *b, const fbp_head *head, int mean, int nblocks,
                     int64_t B, int64_t d, int64_t n);
int linear_fused_f32(float *dW, float *db, float *dX, double *sums, const float *X, const float *W,
                     const float *b, const fbp_head *head, int mean, int nblocks, int64_t B,
                     int64_t d, int64_t n);
/* linear_fused_f32 on a bfloat16 call's rows (fastbp/_bf16.py): X (B, d) as bfloat16 bits, W and
 * b float32 (holding bfloat16 values), dW, db float32; dX float32 (dX) or bfloat16 bits (dXh),
 * at most one of them: each block's rows are widened in L2 and its dX rounded there */
int linear_fused_bf16(float *dW, float *db, float *dX, uint16_t *dXh, double *sums,
                      const uint16_t *X, const float *W, const float *b, const fbp_head *head,
                      int mean, int nblocks, int64_t B, int64_t d, int64_t n);
/* linear_chunked_f32 of a bfloat16 call on the team by classes (csrc/dot16.h): X (B, d) and
 * W (n, d) as bfloat16 bits (4-byte aligned, d even), b float32 holding bfloat16 values, dW, db,
 * dX float32; the three products in bfloat16 pairs with float32 sums, the score gradient
 * rounded to bfloat16 for the backward's (as autocast's backward). set 1: AVX512-BF16's
 * vdpbf16ps (FBP_EBADARG where fbp_dot16_hw is 0), 2: its arithmetic on float32 vectors.
 * filter_eps > 0 (softmax heads): the backward on each slice's active classes only. */
int linear_chunked_bf16(float *dW, float *db, float *dX, double *sums, const uint16_t *X,
                        const uint16_t *W, const float *b, const fbp_head *head, int mean,
                        int64_t chunk, double filter_eps, int team, int set, int64_t B, int64_t d,
                        int64_t n);
/* 1 where the CPU has AVX512-BF16 (and the build its kernels), else 0 */
int fbp_dot16_hw(void);

/* linear_head, chunked BLAS: per block of chunk rows S = X_c W^T, bias + head in place,
 * dW += S^T X_c, dX_c = S W; only one (chunk, n) score block is ever held. team: the threads
 * that run the blocks (tuning.plan's; at most the set_num_threads value, one where BLAS cannot
 * be held to one thread), split by rows (by_rows != 0: exact only) or by classes. cols < n (softmax
 * heads without softcap or z_loss only): blocks of (chunk, cols) scores in two passes over the
 * columns instead.
 * filter_eps > 0 (softmax heads, cols = n): the backward products skip, per block of rows, the
 * classes whose every |g_ij| < filter_eps omega_i (0: exact). own (cols = n): FBP_OWN_* bits,
 * the products that run on fastbp's own kernels (csrc/products.h) instead of BLAS. */
int linear_chunked_f64(double *dW, double *db, double *dX, double *sums, const double *X,
                       const double *W, const double *b, const fbp_head *head, int mean,
                       int64_t chunk, int64_t cols, double filter_eps, int own, int team,
                       int by_rows, int64_t B, int64_t d, int64_t n);
int linear_chunked_f32(float *dW, float *db, float *dX, double *sums, const float *X,
                       const float *W, const float *b, const fbp_head *head, int mean,
                       int64_t chunk, int64_t cols, double filter_eps, int own, int team,
                       int by_rows, int64_t B, int64_t d, int64_t n);

/* linear_head's loss alone (linear_chunked without dW: no gradient products): loss_rows (B,)
 * or NULL, the rows' weighted losses; sums: their sum and the rows' weights'. */
int linear_loss_f64(double *loss_rows, double *sums, const double *X, const double *W,
                    const double *b, const fbp_head *head, int64_t chunk, int own, int team,
                    int by_rows, int64_t B, int64_t d, int64_t n);
int linear_loss_f32(double *loss_rows, double *sums, const float *X, const float *W, const float *b,
                    const fbp_head *head, int64_t chunk, int own, int team, int by_rows, int64_t B,
                    int64_t d, int64_t n);

/* fastbp.jax's XLA custom-call targets (csrc/xla_ffi.c, which says what each takes): the
 * address of a target's handler (an XLA_FFI_Handler), NULL for an unknown code; and the XLA
 * FFI API version they were written for */
enum { FBP_XLA_FORWARD, FBP_XLA_LOSS, FBP_XLA_ROWS, FBP_XLA_HEAD };
void *fbp_xla_handler(int target);
void fbp_xla_api_version(int *major, int *minor);

/* fastbp's own products alone, on every thread (csrc/products.h): kind 0 C (M, N) = A (M, K)
 * B^T with B (N, K); kind 1 C (M, N) = A (M, K) B with B (K, N); kind 2 C (M, N) = A^T B with
 * A (K, M), B (K, N). */
int own_products_f64(int kind, double *C, const double *A, const double *B, int64_t M, int64_t N,
                     int64_t K);
int own_products_f32(int kind, float *C, const float *A, const float *B, int64_t M, int64_t N,
                     int64_t K);

/* A = f(X W^T + b): X (B, d), W (m, d), b (m,) or NULL; A (B, m), or (B, m / k) for maxout
 * with winners (B, m / k) the winning piece (W piece-major: row = piece * (m / k) + unit). */
int linear_act_forward_f64(double *A, int64_t *winners, const double *X, const double *W,
                           const double *b, int act, double alpha, int k, int64_t B, int64_t d,
                           int64_t m);
int linear_act_forward_f32(float *A, int64_t *winners, const float *X, const float *W,
                           const float *b, int act, double alpha, int k, int64_t B, int64_t d,
                           int64_t m);

/* dS = dA * f'(a) (or dA routed to the winners), dW (m, d) = dS^T X, db (m,) = sum_i dS_i or
 * NULL, dX (B, d) = dS W or NULL; dA and A (B, m_out), winners (B, m / k) or NULL. */
int linear_act_backward_f64(double *dX, double *dW, double *db, const double *dA, const double *A,
                            const int64_t *winners, const double *X, const double *W, int act,
                            double alpha, int k, int64_t B, int64_t d, int64_t m);
int linear_act_backward_f32(float *dX, float *dW, float *db, const float *dA, const float *A,
                            const int64_t *winners, const float *X, const float *W, int act,
                            double alpha, int k, int64_t B, int64_t d, int64_t m);

/* Training steps of an MLP with an elementwise activation (csrc/mlp.c): per block of `batch`
 * rows, forward, head, backward into the dW / db buffers, then SGD (kind FBP_SGD) or Adam on
 * every parameter with step count t, t + 1, ...; losses (one per step). ptrs (8 L,): W_0, b_0,
 * W_1, ..., then their gradients, then the optimizer's two buffers of each; widths (L + 1,);
 * X (B, widths[0]). */
int mlp_step_f64(double *losses, double *const *ptrs, const int64_t *widths, int L, const double *X,
                 int act, double alpha, const fbp_head *head, int mean, int kind, double lr,
                 double momentum, int nesterov, double wd, double b1, double b2, double adam_eps,
                 int64_t t, int64_t batch, int64_t B);
int mlp_step_f32(double *losses, float *const *ptrs, const int64_t *widths, int L, const float *X,
                 int act, double alpha, const fbp_head *head, int mean, int kind, double lr,
                 double momentum, int nesterov, double wd, double b1, double b2, double adam_eps,
                 int64_t t, int64_t batch, int64_t B);
