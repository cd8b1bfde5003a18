/* The small products of gemm.h on AVX2 + FMA, for x86-64 CPUs without
 * AVX-512 and for BPROP_SIMD=portable: there, as on AVX-512, a BLAS call
 * through np.dot costs more in NumPy's dispatch than in arithmetic at the
 * book's sizes.
 *
 * Invariants (gemm.h's): each C[i, j] is one FMA chain over k in order from
 * a zero sum, the bias added last; A read through two strides; no element
 * of C outside rows x cols is written, nor any of B or bias outside their
 * cols read: the last register of a narrow column block is loaded through a
 * lane mask (vmaskmov, which leaves the masked-off lanes' memory alone) and
 * its live lanes stored one by one, since a masked store is microcoded on
 * AMD CPUs (on a Zen 4 EPYC it made the book's float32 forward product
 * about twice as slow).
 *
 * Blocking: a column block is two registers (8 doubles or 16 floats) and
 * six rows, so 12 accumulators, the two rows of B and a broadcast of A fill
 * the 16 registers. A block of at most one register's columns takes twelve
 * rows instead, to keep 12 FMA chains in flight. Leftover rows go by four,
 * two, then one.
 *
 * Compiled where BP_HAVE_AVX2 (platform.h); run only where
 * bp_avx2_usable(). The body below the #else is written once and included
 * once per type, with BP_HV / BP_HOP (dtype_*.h) naming the 256-bit
 * register and its intrinsics.
 */
#ifndef BP_T
#ifndef BP_GEMM_AVX2_H
#define BP_GEMM_AVX2_H
#include <stddef.h>
#include "platform.h"

/* Unroll the next loop fully (its trip count, R or NV, is a constant after
 * inlining), so that acc is registers and not an array in memory. Under
 * GCC's spelling clang left these loops rolled, acc on the stack, at half
 * the speed; its own plain "unroll" unrolls them fully. */
#if defined(__clang__)
#define BP_AVX2_UNROLL _Pragma("unroll")
#else
#define BP_AVX2_UNROLL _Pragma("GCC unroll 12")
#endif

#if BP_HAVE_AVX2
/* Lanes [0, live) of a register on, for vmaskmov (the sign bit of each lane). */
BP_AVX2_INLINE __m256i bp_avx2_tail_f64(ptrdiff_t live)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)live), _mm256_setr_epi64x(0, 1, 2, 3));
}

BP_AVX2_INLINE __m256i bp_avx2_tail_f32(ptrdiff_t live)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)live), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#include "dtype_f64.h"
#include "gemm_avx2.h"
#include "dtype_undef.h"
#include "dtype_f32.h"
#include "gemm_avx2.h"
#include "dtype_undef.h"
#endif
#endif /* BP_GEMM_AVX2_H */

#else /* the body, for one BP_T */

/* Register v of a row of a block of NV registers: the last one through the
 * lane mask m when MASKED. NV, MASKED (and R below) are constants after
 * inlining, so the loops over them unroll and acc stays in registers. */
#define BP_AVX2_LOAD(p, v) (MASKED && (v) == NV - 1 ? BP_HOP(maskload)((p) + (v) * (BP_L / 2), m) \
                                                     : BP_HOP(loadu)((p) + (v) * (BP_L / 2)))

/* R rows (at most 12 / NV) of one column block of NV registers (1 or 2);
 * when MASKED, only lanes [0, tail) of the last register are C's, loaded
 * through m and stored one by one. */
BP_AVX2_INLINE void BP_FN(bp_gemm_avx2_block)(const int R, const int NV, const int MASKED, const BP_T *restrict A,
                                              ptrdiff_t ars, ptrdiff_t acs, const BP_T *restrict B, ptrdiff_t ldb,
                                              BP_T *restrict C, ptrdiff_t ldc, const BP_T *restrict bias,
                                              ptrdiff_t K, __m256i m, ptrdiff_t tail)
{
    BP_HV acc[12][2];
    BP_AVX2_UNROLL for (int r = 0; r < R; r++)
        BP_AVX2_UNROLL for (int v = 0; v < NV; v++) acc[r][v] = BP_HOP(setzero)();
    for (ptrdiff_t k = 0; k < K; k++) {
        BP_HV b[2];
        BP_AVX2_UNROLL for (int v = 0; v < NV; v++) b[v] = BP_AVX2_LOAD(B + k * ldb, v);
        BP_AVX2_UNROLL for (int r = 0; r < R; r++) {
            const BP_HV a = BP_HOP(set1)(A[r * ars + k * acs]);
            BP_AVX2_UNROLL for (int v = 0; v < NV; v++) acc[r][v] = BP_HOP(fmadd)(a, b[v], acc[r][v]);
        }
    }
    if (bias) {
        BP_HV bb[2];
        BP_AVX2_UNROLL for (int v = 0; v < NV; v++) bb[v] = BP_AVX2_LOAD(bias, v);
        BP_AVX2_UNROLL for (int r = 0; r < R; r++)
            BP_AVX2_UNROLL for (int v = 0; v < NV; v++) acc[r][v] = BP_HOP(add)(acc[r][v], bb[v]);
    }
    BP_AVX2_UNROLL for (int r = 0; r < R; r++)
        BP_AVX2_UNROLL for (int v = 0; v < NV; v++) {
            BP_T *c = C + r * ldc + v * (BP_L / 2);
            if (MASKED && v == NV - 1) {
                BP_T t[BP_L / 2];
                BP_HOP(storeu)(t, acc[r][v]);
                for (ptrdiff_t l = 0; l < tail; l++)
                    c[l] = t[l];
            } else
                BP_HOP(storeu)(c, acc[r][v]);
        }
}

/* Every row of one column block of NV registers: 12 / NV rows at a time,
 * then four, two and one. */
BP_AVX2_INLINE void BP_FN(bp_gemm_avx2_rows)(const int NV, const int MASKED, const BP_T *restrict A, ptrdiff_t ars,
                                             ptrdiff_t acs, const BP_T *restrict B, ptrdiff_t ldb, BP_T *restrict C,
                                             ptrdiff_t ldc, const BP_T *restrict bias, ptrdiff_t rows, ptrdiff_t K,
                                             __m256i m, ptrdiff_t tail)
{
    const int RB = 12 / NV;
    ptrdiff_t i = 0;
    for (; i + RB <= rows; i += RB)
        BP_FN(bp_gemm_avx2_block)(RB, NV, MASKED, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, bias, K, m, tail);
    for (; i + 4 <= rows; i += 4)
        BP_FN(bp_gemm_avx2_block)(4, NV, MASKED, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, bias, K, m, tail);
    if (i + 2 <= rows) {
        BP_FN(bp_gemm_avx2_block)(2, NV, MASKED, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, bias, K, m, tail);
        i += 2;
    }
    if (i < rows)
        BP_FN(bp_gemm_avx2_block)(1, NV, MASKED, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, bias, K, m, tail);
}

BP_AVX2 static void BP_FN(bp_gemm_avx2)(const BP_T *restrict A, ptrdiff_t ars, ptrdiff_t acs,
                                        const BP_T *restrict B, ptrdiff_t ldb, BP_T *restrict C, ptrdiff_t ldc,
                                        const BP_T *restrict bias, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t K)
{
    const ptrdiff_t L = BP_L / 2;
    for (ptrdiff_t j = 0; j < cols; j += 2 * L) {
        const ptrdiff_t live = cols - j < 2 * L ? cols - j : 2 * L;
        const ptrdiff_t tail = live > L ? live - L : live; /* lanes of the block's last register */
        const __m256i m = BP_FN(bp_avx2_tail)(tail);
        const BP_T *bj = bias ? bias + j : NULL;
        if (live == 2 * L)
            BP_FN(bp_gemm_avx2_rows)(2, 0, A, ars, acs, B + j, ldb, C + j, ldc, bj, rows, K, m, tail);
        else if (live > L)
            BP_FN(bp_gemm_avx2_rows)(2, 1, A, ars, acs, B + j, ldb, C + j, ldc, bj, rows, K, m, tail);
        else if (live == L)
            BP_FN(bp_gemm_avx2_rows)(1, 0, A, ars, acs, B + j, ldb, C + j, ldc, bj, rows, K, m, tail);
        else
            BP_FN(bp_gemm_avx2_rows)(1, 1, A, ars, acs, B + j, ldb, C + j, ldc, bj, rows, K, m, tail);
    }
}

#undef BP_AVX2_LOAD

#endif
