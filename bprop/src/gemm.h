/* Small matrix products for Affine at the book's sizes, where a BLAS call
 * through np.dot costs more in NumPy's dispatch than in arithmetic (the
 * layer sends only products under a measured size here; bprop/layers.py):
 *
 *   C[i, j] = sum_k A[i*ars + k*acs] * B[k*ldb + j]   (+ bias[j])
 *
 * Invariants: k runs in order from a zero sum and the bias is added last,
 * as x @ W + b rounds (each element is one FMA chain over k, as in BLAS); A
 * is read through two strides so that x.T needs no copy; no element of C
 * outside rows x cols is written. The AVX-512 loop keeps 8 (or 4, or 1)
 * rows of C in registers per column block, 8 lanes wide (16 in float32),
 * or half a register for a narrow last block, so that the book's 10
 * columns cost 8 + 2 lanes rather than 2 x 8. gemm_avx2.h has the AVX2 +
 * FMA loops; bp_gemm_scalar is the plain one.
 *
 * Which runs: dispatch.h's BP_PICK takes bp_gemm_avx512 when the AVX-512
 * loops are selected, else bp_gemm_portable, which takes the AVX2 loops
 * where bp_gemm_use_avx2 (set at import to whether this CPU has AVX2 and
 * FMA), else the scalar loop. bp_gemm_loops names the one that runs.
 *
 * Like portable.h, the body below the #else is written once and included
 * once per type and level (levels.h); only the scalar loop is leveled,
 * the rest is defined at level 0.
 */
#ifndef BP_T
#ifndef BP_GEMM_H
#define BP_GEMM_H
#include <stddef.h>
#include "platform.h"
#include "gemm_avx2.h"

static int bp_gemm_use_avx2 = 0;

/* Let bp_gemm_portable take the AVX2 loops when want, where they are
 * compiled and this CPU runs them; returns whether it now does. */
static int bp_gemm_select_avx2(int want)
{
    bp_gemm_use_avx2 = want && BP_HAVE_AVX2 && bp_avx2_usable();
    return bp_gemm_use_avx2;
}

/* The loops the products run on, given whether the AVX-512 loops are
 * selected: 2 AVX-512, 1 AVX2, 0 the scalar loop. */
static int bp_gemm_loops(int avx512_selected)
{
    return avx512_selected && BP_HAVE_AVX512 ? 2 : bp_gemm_use_avx2 ? 1 : 0;
}

#if BP_HAVE_AVX512
/* R rows of one column block with the vectors of OP (BP_VOP, or BP_HOP for
 * a block of at most half a register of live columns: the FMA then takes
 * one 256-bit pipe instead of two), columns masked by m. */
#define BP_GEMM_ROWS(OP, V, m)                                                                    \
    V acc[8];                                                                                     \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r] = OP(setzero)();                   \
    for (ptrdiff_t k = 0; k < K; k++) {                                                           \
        const V b = OP(maskz_loadu)(m, B + k * ldb);                                              \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                       \
            acc[r] = OP(fmadd)(OP(set1)(A[r * ars + k * acs]), b, acc[r]);                        \
    }                                                                                             \
    if (bias) {                                                                                   \
        const V bb = OP(maskz_loadu)(m, bias);                                                    \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) acc[r] = OP(add)(acc[r], bb);         \
    }                                                                                             \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                           \
        OP(mask_storeu)(C + r * ldc, m, acc[r]);
#endif

#define BP_BODY "gemm.h"
#include "dtype_f64.h"
#include "levels.h"
#include "dtype_undef.h"
#include "dtype_f32.h"
#include "levels.h"
#include "dtype_undef.h"
#undef BP_BODY
#endif /* BP_GEMM_H */

#else /* the body, for one BP_T */

BP_LEVELED void BP_LFN(bp_gemm_scalar)(const BP_T *restrict A, ptrdiff_t ars, ptrdiff_t acs,
                                       const BP_T *restrict B, ptrdiff_t ldb, BP_T *restrict C, ptrdiff_t ldc,
                                       const BP_T *restrict bias, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t K)
{
    for (ptrdiff_t i = 0; i < rows; i++) {
        BP_T *restrict c = C + i * ldc;
        for (ptrdiff_t j = 0; j < cols; j++)
            c[j] = 0;
        for (ptrdiff_t k = 0; k < K; k++) {
            const BP_T a = A[i * ars + k * acs];
            const BP_T *restrict b = B + k * ldb;
            for (ptrdiff_t j = 0; j < cols; j++)
                c[j] += a * b[j];
        }
        if (bias)
            for (ptrdiff_t j = 0; j < cols; j++)
                c[j] += bias[j];
    }
}

#if BP_LEVEL == 0
/* out (cols x rows) = a (rows x cols) transposed. */
static void BP_FN(bp_transpose)(const BP_T *restrict a, BP_T *restrict out, ptrdiff_t rows, ptrdiff_t cols)
{
    for (ptrdiff_t i = 0; i < rows; i++)
        for (ptrdiff_t j = 0; j < cols; j++)
            out[j * rows + i] = a[i * cols + j];
}

#if BP_HAVE_AVX512
BP_AVX512_INLINE void BP_FN(bp_gemm_block)(const int R, const BP_T *restrict A, ptrdiff_t ars, ptrdiff_t acs,
                                           const BP_T *restrict B, ptrdiff_t ldb, BP_T *restrict C,
                                           ptrdiff_t ldc, const BP_T *restrict bias, ptrdiff_t K, ptrdiff_t live)
{
    if (live > BP_L / 2) {
        const BP_M m = live >= BP_L ? BP_FULL : (BP_M)((1u << live) - 1);
        BP_GEMM_ROWS(BP_VOP, BP_V, m)
    } else {
        const __mmask8 m = (__mmask8)((1u << live) - 1);
        BP_GEMM_ROWS(BP_HOP, BP_HV, m)
    }
}

BP_AVX512 static void BP_FN(bp_gemm_avx512)(const BP_T *restrict A, ptrdiff_t ars, ptrdiff_t acs,
                                            const BP_T *restrict B, ptrdiff_t ldb, BP_T *restrict C, ptrdiff_t ldc,
                                            const BP_T *restrict bias, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t K)
{
    for (ptrdiff_t j = 0; j < cols; j += BP_L) {
        const ptrdiff_t live = cols - j < BP_L ? cols - j : BP_L;
        const BP_T *bj = bias ? bias + j : NULL;
        ptrdiff_t i = 0;
        /* Eight rows hide the FMA latency; the leftovers go by four, then one. */
        for (; i + 8 <= rows; i += 8)
            BP_FN(bp_gemm_block)(8, A + i * ars, ars, acs, B + j, ldb, C + i * ldc + j, ldc, bj, K, live);
        for (; i + 4 <= rows; i += 4)
            BP_FN(bp_gemm_block)(4, A + i * ars, ars, acs, B + j, ldb, C + i * ldc + j, ldc, bj, K, live);
        for (; i < rows; i++)
            BP_FN(bp_gemm_block)(1, A + i * ars, ars, acs, B + j, ldb, C + i * ldc + j, ldc, bj, K, live);
    }
}
#endif
#endif /* BP_LEVEL == 0 */

/* After the last level, so that BP_AT can name every level's scalar loop. */
#if BP_LEVEL == BP_LEVELS - 1
static inline void BP_FN(bp_gemm_portable)(const BP_T *A, ptrdiff_t ars, ptrdiff_t acs, const BP_T *B,
                                           ptrdiff_t ldb, BP_T *C, ptrdiff_t ldc, const BP_T *bias, ptrdiff_t rows,
                                           ptrdiff_t cols, ptrdiff_t K)
{
#if BP_HAVE_AVX2
    if (bp_gemm_use_avx2) {
        BP_FN(bp_gemm_avx2)(A, ars, acs, B, ldb, C, ldc, bias, rows, cols, K);
        return;
    }
#endif
    BP_AT(BP_FN(bp_gemm_scalar))(A, ars, acs, B, ldb, C, ldc, bias, rows, cols, K);
}
#endif

#endif
