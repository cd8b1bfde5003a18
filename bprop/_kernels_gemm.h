/* Small matrix products for Affine at the book's sizes, called from
 * _kernels.pyx (included by _kernels_loops.h).
 *
 * Why not BLAS there: at (100, 50, 10) a BLAS call through np.dot costs
 * ~2.9 us, of which ~1 us is NumPy's dispatch, and the layer then adds
 * np.errstate (0.7 us) and a separate bias pass. The arithmetic is the
 * same either way (each product element is an FMA chain over k, and BLAS
 * is bound by the same FMA throughput), so the gain is the overhead; the
 * layer sends only products under a measured size here (bprop/layers.py).
 *
 *   C[i, j] = sum_k A[i*ars + k*acs] * B[k*ldb + j]   (+ bias[j])
 *
 * k runs in order from a zero sum and the bias is added last, as x @ W + b
 * rounds; A is read through two strides so that x.T needs no copy. The
 * AVX-512 loop keeps 8 (or 4, or 1) rows of C in registers per column
 * block: 8 lanes wide (16 in float32), or 256-bit halves for a narrow last
 * block, so the book's 10 columns cost 8 + 2 lanes rather than 2 x 8.
 */
#ifndef BPROP_KERNELS_GEMM_H
#define BPROP_KERNELS_GEMM_H
#include <stddef.h>

#define BP_GEMM_PORTABLE(T, S)                                                                    \
BP_CLONES void bp_gemm_##S##_portable(const T *restrict A, ptrdiff_t ars, ptrdiff_t acs,          \
                                      const T *restrict B, ptrdiff_t ldb, T *restrict C,          \
                                      ptrdiff_t ldc, const T *restrict bias, ptrdiff_t rows,      \
                                      ptrdiff_t cols, ptrdiff_t K)                                \
{                                                                                                 \
    for (ptrdiff_t i = 0; i < rows; i++) {                                                        \
        T *restrict c = C + i * ldc;                                                              \
        for (ptrdiff_t j = 0; j < cols; j++)                                                      \
            c[j] = 0;                                                                             \
        for (ptrdiff_t k = 0; k < K; k++) {                                                       \
            const T a = A[i * ars + k * acs];                                                     \
            const T *restrict b = B + k * ldb;                                                    \
            for (ptrdiff_t j = 0; j < cols; j++)                                                  \
                c[j] += a * b[j];                                                                 \
        }                                                                                         \
        if (bias)                                                                                 \
            for (ptrdiff_t j = 0; j < cols; j++)                                                  \
                c[j] += bias[j];                                                                  \
    }                                                                                             \
}                                                                                                 \
static void bp_transpose_##S(const T *restrict a, T *restrict out, ptrdiff_t rows, ptrdiff_t cols)\
{                                                                                                 \
    for (ptrdiff_t i = 0; i < rows; i++)                                                          \
        for (ptrdiff_t j = 0; j < cols; j++)                                                      \
            out[j * rows + i] = a[i * cols + j];                                                  \
}

BP_GEMM_PORTABLE(double, f64)
BP_GEMM_PORTABLE(float, f32)

#if BPROP_HAVE_AVX512_PATH
/* R rows of one column block with the vectors of PFX (_mm512, or _mm256
 * when the block has at most half a register of live columns: the FMA then
 * occupies one 256-bit pipe instead of two), columns masked by m. */
#define BP_GEMM_ROWS(PFX, V, SFX, m)                                                              \
    V acc[8];                                                                                     \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r] = PFX##_setzero_##SFX();           \
    for (ptrdiff_t k = 0; k < K; k++) {                                                           \
        const V b = PFX##_maskz_loadu_##SFX(m, B + k * ldb);                                      \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                       \
            acc[r] = PFX##_fmadd_##SFX(PFX##_set1_##SFX(A[r * ars + k * acs]), b, acc[r]);        \
    }                                                                                             \
    if (bias) {                                                                                   \
        const V bb = PFX##_maskz_loadu_##SFX(m, bias);                                            \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r] = PFX##_add_##SFX(acc[r], bb); \
    }                                                                                             \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                           \
        PFX##_mask_storeu_##SFX(C + r * ldc, m, acc[r]);

#define BP_GEMM_AVX512(T, S, W, H, MW, SFX, L)                                                    \
BP_AVX512_INLINE void bp_gemm_block_##S(const int R, const T *restrict A, ptrdiff_t ars,          \
                                        ptrdiff_t acs, const T *restrict B, ptrdiff_t ldb,        \
                                        T *restrict C, ptrdiff_t ldc, const T *restrict bias,     \
                                        ptrdiff_t K, ptrdiff_t live)                              \
{                                                                                                 \
    if (live > L / 2) {                                                                           \
        const MW m = (MW)(live >= L ? ~(MW)0 : (MW)((1u << live) - 1));                          \
        BP_GEMM_ROWS(_mm512, W, SFX, m)                                                           \
    } else {                                                                                      \
        const __mmask8 m = (__mmask8)((1u << live) - 1);                                          \
        BP_GEMM_ROWS(_mm256, H, SFX, m)                                                           \
    }                                                                                             \
}                                                                                                 \
BP_AVX512 static void bp_gemm_##S##_avx512(const T *restrict A, ptrdiff_t ars, ptrdiff_t acs,     \
                                           const T *restrict B, ptrdiff_t ldb, T *restrict C,     \
                                           ptrdiff_t ldc, const T *restrict bias, ptrdiff_t rows, \
                                           ptrdiff_t cols, ptrdiff_t K)                           \
{                                                                                                 \
    for (ptrdiff_t j = 0; j < cols; j += L) {                                                     \
        const ptrdiff_t live = cols - j < L ? cols - j : L;                                       \
        const T *bj = bias ? bias + j : NULL;                                                     \
        ptrdiff_t i = 0;                                                                          \
        /* Eight rows hide the FMA latency; the leftovers go by four, then one. */               \
        for (; i + 8 <= rows; i += 8)                                                             \
            bp_gemm_block_##S(8, A + i * ars, ars, acs, B + j, ldb, C + i * ldc + j, ldc, bj, K, live);\
        for (; i + 4 <= rows; i += 4)                                                             \
            bp_gemm_block_##S(4, A + i * ars, ars, acs, B + j, ldb, C + i * ldc + j, ldc, bj, K, live);\
        for (; i < rows; i++)                                                                     \
            bp_gemm_block_##S(1, A + i * ars, ars, acs, B + j, ldb, C + i * ldc + j, ldc, bj, K, live);\
    }                                                                                             \
}

BP_GEMM_AVX512(double, f64, __m512d, __m256d, __mmask8, pd, 8)
BP_GEMM_AVX512(float, f32, __m512, __m256, __mmask16, ps, 16)
#endif

#define BP_GEMM_DISPATCH(T, S)                                                                    \
static inline void bp_gemm_##S(const T *A, ptrdiff_t ars, ptrdiff_t acs, const T *B, ptrdiff_t ldb,\
                               T *C, ptrdiff_t ldc, const T *bias, ptrdiff_t rows, ptrdiff_t cols,\
                               ptrdiff_t K)                                                       \
{ BP_PICK(bp_gemm_##S, A, ars, acs, B, ldb, C, ldc, bias, rows, cols, K); }

BP_GEMM_DISPATCH(double, f64)
BP_GEMM_DISPATCH(float, f32)

/* Affine's backward: dx = dout @ W.T (skipped when dx is NULL; wt holds
 * W.T, d x m elements, NULL only when that is empty), dW = x.T @ dout and
 * db = the column sums of dout. */
#define BP_AFFINE_GRADS(T, S)                                                                     \
static void bp_affine_grads_##S(const T *dout, const T *x, const T *W, T *wt, T *dx, T *dW, T *db,\
                                ptrdiff_t n, ptrdiff_t d, ptrdiff_t m)                            \
{                                                                                                 \
    if (dx) {                                                                                     \
        if (wt)                                                                                   \
            bp_transpose_##S(W, wt, d, m);                                                        \
        /* With m == 0 the product is zeros and never reads wt. */                                \
        bp_gemm_##S(dout, m, 1, wt, d, dx, d, NULL, n, d, m);                                     \
    }                                                                                             \
    bp_gemm_##S(x, 1, d, dout, m, dW, m, NULL, d, m, n);                                          \
    bp_column_sum_##S(dout, db, n, m);                                                            \
}

BP_AFFINE_GRADS(double, f64)
BP_AFFINE_GRADS(float, f32)

#endif
