/* BatchNormalization's training forward and its backward over the rows of
 * an (n, d) C-ordered array.
 *
 * Invariants: the caller (the Cython entry) has checked every size and
 * layout; column statistics accumulate in double whatever BP_T is, row by
 * row, so each loop over d vectorises and n only sets the trip count.
 *
 * The body below the #else is written once and instantiated for double and
 * float: this header includes itself with the names of dtype_f64.h, then of
 * dtype_f32.h (as portable.h does).
 */
#ifndef BP_T
#ifndef BP_BATCHNORM_H
#define BP_BATCHNORM_H
#include <math.h>
#include <stddef.h>
#include "platform.h"

#define BP_BODY "batchnorm.h"
#include "dtype_f64.h"
#include "levels.h"
#include "dtype_undef.h"
#include "dtype_f32.h"
#include "levels.h"
#include "dtype_undef.h"
#undef BP_BODY
#endif

#else /* the body, for one BP_T */

#if BP_LEVEL == 0
/* The width of the column blocks the loops below take one at a time: every
 * pass over a block reads what the previous pass touched, so a block of
 * all n rows (x and xc, or dout and xc: two n x width arrays) is sized to
 * stay in a 256 KiB share of the core's L2 cache. Whole rows when they fit;
 * never under 64 columns, whose rows of 256-512 bytes keep the hardware
 * prefetcher streaming. Blocking moves no arithmetic between elements: each
 * column's sums still add rows 0..n-1 in order, so results do not depend on
 * the width. */
static inline ptrdiff_t BP_FN(bp_bn_block)(ptrdiff_t n, ptrdiff_t d)
{
    ptrdiff_t w = (ptrdiff_t)(((size_t)1 << 17) / ((size_t)n * sizeof(BP_T)));
    w = w < 64 ? 64 : w & ~(ptrdiff_t)15;
    return w < d ? w : d;
}
#endif

/* out = gamma * xn + beta with xn = (x - mu) / std, mu and var the column
 * mean and biased variance, std = sqrt(var + eps). Writes mu, var, std (d)
 * and xc, out (n, d); xn is not stored: it is xc / std, which the backward
 * recomputes (the same division, so the same values). acc is d doubles of
 * scratch. */
BP_LEVELED void BP_LFN(bp_bn_forward)(const BP_T *restrict x, ptrdiff_t n, ptrdiff_t d,
                                     const BP_T *restrict gamma, const BP_T *restrict beta, double eps,
                                     BP_T *restrict mu, BP_T *restrict var, BP_T *restrict std,
                                     BP_T *restrict xc, BP_T *restrict out,
                                     double *restrict acc)
{
    ptrdiff_t i, j, j0, w = BP_FN(bp_bn_block)(n, d);
    for (j0 = 0; j0 < d; j0 += w) {
        ptrdiff_t j1 = j0 + w < d ? j0 + w : d;
        for (j = j0; j < j1; j++) acc[j] = 0.0;
        for (i = 0; i < n; i++) {
            const BP_T *row = x + i * d;
            for (j = j0; j < j1; j++) acc[j] += (double)row[j];
        }
        for (j = j0; j < j1; j++) { mu[j] = (BP_T)(acc[j] / (double)n); acc[j] = 0.0; }
        /* xc is written here in BP_T, and the variance is the mean of its
         * squares: the same values the NumPy twin squares. */
        for (i = 0; i < n; i++) {
            const BP_T *row = x + i * d;
            BP_T *c = xc + i * d;
            for (j = j0; j < j1; j++) {
                BP_T v = row[j] - mu[j];
                c[j] = v;
                acc[j] += (double)v * (double)v;
            }
        }
        for (j = j0; j < j1; j++) {
            var[j] = (BP_T)(acc[j] / (double)n);
            std[j] = (BP_T)sqrt((double)var[j] + eps);
        }
        for (i = 0; i < n; i++) {
            const BP_T *c = xc + i * d;
            BP_T *o = out + i * d;
            for (j = j0; j < j1; j++) {
                BP_T v = c[j] / std[j];
                o[j] = gamma[j] * v + beta[j];
            }
        }
    }
}

/* The book's backward, in two passes over each column block: with
 * xn = xc / std (the forward's division) and the per-column sums
 * sd = sum(dout), sdx = sum(dout * xn) and sx = sum(xn)
 * (zero but for rounding; the book's dmu keeps it, so this does too),
 *   dx = gamma / std * (dout - sd / n - (xn - sx / n) * sdx / n),
 * dgamma = sdx, dbeta = sd. acc is 4 d doubles of scratch. */
BP_LEVELED void BP_LFN(bp_bn_backward)(const BP_T *restrict dout, const BP_T *restrict xc,
                                         ptrdiff_t n, ptrdiff_t d,
                                         const BP_T *restrict gamma, const BP_T *restrict std,
                                         BP_T *restrict dx, BP_T *restrict dgamma, BP_T *restrict dbeta,
                                         double *restrict acc)
{
    ptrdiff_t i, j, j0, w = BP_FN(bp_bn_block)(n, d);
    double *sd = acc, *sdx = acc + d, *sx = acc + 2 * d, *scale = acc + 3 * d;
    for (j0 = 0; j0 < d; j0 += w) {
        ptrdiff_t j1 = j0 + w < d ? j0 + w : d;
        for (j = j0; j < j1; j++) sd[j] = sdx[j] = sx[j] = 0.0;
        /* dx's block holds xn until the second pass overwrites it: one
         * division per element, and the block is still in the cache. */
        for (i = 0; i < n; i++) {
            const BP_T *g = dout + i * d, *c = xc + i * d;
            BP_T *o = dx + i * d;
            for (j = j0; j < j1; j++) {
                BP_T z = c[j] / std[j];
                o[j] = z;
                sd[j] += (double)g[j];
                sdx[j] += (double)g[j] * (double)z;
                sx[j] += (double)z;
            }
        }
        for (j = j0; j < j1; j++) {
            dbeta[j] = (BP_T)sd[j];
            dgamma[j] = (BP_T)sdx[j];
            /* From here on, the per-column constants of the second pass. */
            sd[j] /= (double)n;
            sdx[j] /= (double)n;
            sx[j] /= (double)n;
            scale[j] = (double)gamma[j] / (double)std[j];
        }
        for (i = 0; i < n; i++) {
            const BP_T *g = dout + i * d;
            BP_T *o = dx + i * d;
            for (j = j0; j < j1; j++) {
                BP_T z = o[j];
                o[j] = (BP_T)(scale[j] * ((double)g[j] - sd[j] - ((double)z - sx[j]) * sdx[j]));
            }
        }
    }
}

#endif
