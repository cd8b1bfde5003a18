/* The portable loops: plain C that GCC and clang vectorise, compiled per
 * CPU generation (the levels of platform.h). They run wherever the AVX-512
 * loops (avx512.h) do not, and they are the reference those are tested
 * against.
 *
 * In C rather than Cython because Cython cannot say `restrict`: without it
 * GCC cannot vectorise ReLU (the uint8 mask may alias anything) and runs it
 * branchy. Each loop is one pass with no temporaries over the n elements
 * (or rows) it is given; the caller has checked every size, releases the
 * GIL and splits work between threads (split.h, dispatch.h).
 *
 * The body below the #else is written once and instantiated for double
 * (names ending _f64) and float (_f32), at each level (suffix _l0, _l1,
 * _l2): this header includes itself through levels.h with the names of
 * dtype_f64.h, then of dtype_f32.h.
 */
#ifndef BP_T
#ifndef BP_PORTABLE_H
#define BP_PORTABLE_H
#include <fenv.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "platform.h"
#include "exp.h"
#include "numpy_loops.h"

#define BP_BODY "portable.h"
#include "dtype_f64.h"
#include "levels.h"
#include "dtype_undef.h"
#include "dtype_f32.h"
#include "levels.h"
#include "dtype_undef.h"
#undef BP_BODY
#endif

#else /* the body, for one BP_T */

/* mask = x <= 0, out = mask ? 0 : x. A select, not a branch, so it
 * vectorises; NaN compares false and passes through. */
BP_LEVELED void BP_LFN(bp_relu_fwd_portable)(const BP_T *restrict x, BP_T *restrict out,
                                             uint8_t *restrict mask, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T v = x[i];
        int m = v <= 0;
        mask[i] = (uint8_t)m;
        out[i] = m ? (BP_T)0 : v;
    }
}

/* dx = mask ? 0 : dout; any nonzero mask byte counts as set. dout[i] is
 * read whatever the mask says: a load under the condition vectorises only
 * with masked loads (AVX2, AVX-512), so baseline x86-64 and NEON would run
 * this loop branchy. */
BP_LEVELED void BP_LFN(bp_relu_bwd_portable)(const BP_T *restrict dout, const uint8_t *restrict mask,
                                             BP_T *restrict dx, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T d = dout[i];
        dx[i] = mask[i] ? (BP_T)0 : d;
    }
}

/* e = exp(-|x|) never overflows: x >= 0 gives 1/(1+e), x < 0 gives e/(1+e). */
BP_LEVELED void BP_LFN(bp_sigmoid_fwd_portable)(const BP_T *restrict x, BP_T *restrict out, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T v = x[i];
        BP_T e = BP_EXP(v >= 0 ? -v : v);
        BP_T r = (BP_T)1 / ((BP_T)1 + e);
        out[i] = v >= 0 ? r : e * r;
    }
}

/* The same on NumPy's loops (numpy_loops.h), a block at a time, in the
 * book's form 1 / (1 + exp(-x)): the book's own bits. Where exp(-x)
 * overflows (x below about -709, -88 in float) the overflow flag sends the
 * block through the loop above, so no result comes from an overflow. The
 * flag is cleared once per call and again only after a block that raised
 * it: glibc's feclearexcept also rewrites the x87 environment (where
 * NumPy's loops raise the flag too), a tenth of a float32 block's time. */
BP_LEVELED void BP_LFN(bp_sigmoid_fwd_numpy)(const BP_T *restrict x, BP_T *restrict out, ptrdiff_t n)
{
    const BP_T one = 1;
    const ptrdiff_t z = sizeof(BP_T);
    BP_T t[BP_NP_BLOCK];
    feclearexcept(FE_OVERFLOW);
    for (ptrdiff_t lo = 0; lo < n; lo += BP_NP_BLOCK) {
        const ptrdiff_t m = n - lo < BP_NP_BLOCK ? n - lo : BP_NP_BLOCK;
        bp_np_unary(BP_NP_NEGATIVE, BP_INDEX, x + lo, t, m, z);
        bp_np_unary(BP_NP_EXP, BP_INDEX, t, t, m, z);
        if (fetestexcept(FE_OVERFLOW)) {
            BP_LFN(bp_sigmoid_fwd_portable)(x + lo, out + lo, m);
            feclearexcept(FE_OVERFLOW);
            continue;
        }
        bp_np_binary(BP_NP_ADD, BP_INDEX, t, z, &one, 0, t, m, z);
        bp_np_binary(BP_NP_DIVIDE, BP_INDEX, &one, 0, t, z, out + lo, m, z);
    }
}

/* dx = dout * (1 - y) * y, in that order. */
BP_LEVELED void BP_LFN(bp_sigmoid_bwd_portable)(const BP_T *restrict dout, const BP_T *restrict y,
                                                BP_T *restrict dx, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        dx[i] = dout[i] * ((BP_T)1 - y[i]) * y[i];
}

/* dx = (y - t) * inv and dx = y * inv: callers pass inv = 1/N, since a
 * vector divide would make these loops divide-bound. */
BP_LEVELED void BP_LFN(bp_xent_onehot_bwd_portable)(const BP_T *restrict y, const BP_T *restrict t,
                                                    BP_T *restrict dx, ptrdiff_t n, BP_T inv)
{
    for (ptrdiff_t i = 0; i < n; i++)
        dx[i] = (y[i] - t[i]) * inv;
}

BP_LEVELED void BP_LFN(bp_scale_portable)(const BP_T *restrict y, BP_T *restrict dx, ptrdiff_t n, BP_T inv)
{
    for (ptrdiff_t i = 0; i < n; i++)
        dx[i] = y[i] * inv;
}

/* Rows y[i, :m] += b, for n rows of m. */
BP_LEVELED void BP_LFN(bp_add_bias)(BP_T *restrict y, const BP_T *restrict b, ptrdiff_t n, ptrdiff_t m)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        BP_T *restrict row = y + i * m;
        for (ptrdiff_t j = 0; j < m; j++)
            row[j] += b[j];
    }
}

/* out[j] = sum of a[i * lda + j] over the n rows, j < m, added in row order
 * from zero, as NumPy's axis-0 sum does for C-ordered input. */
BP_LEVELED void BP_LFN(bp_column_sum)(const BP_T *restrict a, ptrdiff_t lda, BP_T *restrict out,
                                      ptrdiff_t n, ptrdiff_t m)
{
    for (ptrdiff_t j = 0; j < m; j++)
        out[j] = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const BP_T *restrict row = a + i * lda;
        for (ptrdiff_t j = 0; j < m; j++)
            out[j] += row[j];
    }
}

/* One softmax row of c >= 1 elements: y = softmax(x); returns
 * log(sum(exp(x - max))) and stores max in *mx_out, so that callers can
 * form a loss as (max - x_j) + log(sum), which stays exact for a loss of
 * log 2 next to scores of 1e20. A NaN in the row makes the sum NaN and so
 * the whole row, as in the book. */
BP_LEVELED double BP_LFN(bp_softmax_row_portable)(const BP_T *restrict x, BP_T *restrict y, ptrdiff_t c,
                                                  BP_T *mx_out)
{
    /* Eight running maxima so the loop vectorises. NaN is never selected
     * here, but exp(NaN - mx) below still turns the row into NaN. They
     * start at -inf rather than x[0]: clang would keep that load of x[0]
     * for the exp loop's first element and then not vectorise the loop. */
    BP_T m8[8];
    for (int k = 0; k < 8; k++)
        m8[k] = (BP_T)-INFINITY;
    ptrdiff_t j8 = 0;
    for (; j8 + 8 <= c; j8 += 8)
        for (int k = 0; k < 8; k++)
            m8[k] = x[j8 + k] > m8[k] ? x[j8 + k] : m8[k];
    BP_T mx = m8[0];
    for (int k = 1; k < 8; k++)
        mx = m8[k] > mx ? m8[k] : mx;
    for (; j8 < c; j8++)
        mx = x[j8] > mx ? x[j8] : mx;
    if (bp_np_on) {
        for (ptrdiff_t j = 0; j < c; j++)
            y[j] = x[j] - mx;
        bp_np_unary(BP_NP_EXP, BP_INDEX, y, y, c, sizeof(BP_T));
    } else {
        for (ptrdiff_t j = 0; j < c; j++)
            y[j] = BP_EXP(x[j] - mx);
    }
    /* Eight partial sums in double: vectorisable without -ffast-math, and a
     * float32 row keeps a float64 normaliser. */
    double s8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    ptrdiff_t j = 0;
    for (; j + 8 <= c; j += 8)
        for (int k = 0; k < 8; k++)
            s8[k] += (double)y[j + k];
    double s = ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7]));
    for (; j < c; j++)
        s += (double)y[j];
    double inv = 1.0 / s;
    for (ptrdiff_t k = 0; k < c; k++)
        y[k] = (BP_T)((double)y[k] * inv);
    *mx_out = mx;
    return log(s);
}

#endif
