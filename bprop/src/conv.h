/* Convolution and pooling loops: im2col / col2im in two layouts, max pooling
 * on NCHW with a compact window argmax, the per-channel bias add and sum,
 * and the convolution's small products.
 *
 * Each loop is written once, below the #else, and instantiated for double
 * (suffix _f64) and float (_f32) at each per-CPU level (suffix _l0, _l1,
 * _l2; platform.h, levels.h), as portable.h is; callers name a loop through
 * BP_AT, so conv runs at the level every other portable loop runs at. No
 * loop allocates; callers pass every buffer with the sizes the Cython entry
 * points (bprop/_kernels_conv.pxi) have checked.
 *
 * Geometry, shared by every loop: an input plane is H x W, padded by `pad`
 * zeros on each side; a window of fh x fw moves by `stride`, giving
 * oh = (H + 2 pad - fh) / stride + 1 rows of oh x ow outputs (floor, as the
 * book and PyTorch). Window (i, j), offset (ky, kx) reads input row
 * i * stride + ky - pad and column j * stride + kx - pad; outside the input
 * it reads zero (convolution) or nothing (pooling: a padded cell never wins).
 *
 * Layouts. "rows" is the book's im2col layout: one row per output position
 * (n, i, j), columns (c, ky, kx), shape (N * oh * ow, C * fh * fw). "kp" is
 * per sample (C * fh * fw, oh * ow), so that W (F, C fh fw) @ col is
 * (F, oh * ow): the sample's NCHW output, contiguous.
 *
 * Invariants, the same at every level: col2im adds the windows'
 * contributions to each input cell in the order of the offset (ky, kx),
 * starting from +0.0, which is the book's order, so the result is the
 * book's bit for bit; im2col, col2im, pooling and the bias loops give the
 * same bits at every level (they only copy, compare and add). The products
 * sum each element over k in order from zero at every level too, but at a
 * level with FMA (x86-64-v3 and up) the compiler may fuse a multiply-add
 * (where it does is its choice), so their last bits may differ from the
 * baseline's.
 */
#ifndef BP_T
#ifndef BP_CONV_H
#define BP_CONV_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "platform.h"
#include "gemm.h"

/* 1 where GCC's vector extension (also clang's) spells out the register
 * blocks of bp_conv_gemm. Elsewhere (MSVC, tcc) a "vector" is a single
 * element and the same loops run scalar, with the same summation order per
 * element. */
#if defined(__GNUC__) || defined(__clang__)
#define BP_CONV_VECTORS 1
#else
#define BP_CONV_VECTORS 0
#endif

/* bp_conv_gemm's vector of BP_T (bp_conv_vec_f64 or _f32, typedef'd once
 * per dtype in the body), its lanes, and its loads and stores (memcpy: no
 * alignment assumed; compilers turn it into vector moves). */
#define BP_CV BP_FN(bp_conv_vec)
#define BP_CV_LANES ((ptrdiff_t)(sizeof(BP_CV) / sizeof(BP_T)))
#define BP_CV_LOAD(v, p) memcpy(&(v), (p), sizeof(BP_CV))
#define BP_CV_STORE(p, v) memcpy((p), &(v), sizeof(BP_CV))

/* The first maximum wins, as np.argmax: v replaces best when it is larger, or
 * NaN while best is not (np.argmax returns the first NaN). */
#define BP_POOL_TAKES(v, best) (!((v) <= (best)) && (best) == (best))

/* The first and one-past-last window index j whose offset k lands inside
 * [0, n): j * s + k - pad in [0, n). Outside [lo, hi) the window reads padding. */
static inline void bp_conv_span(ptrdiff_t n, ptrdiff_t k, ptrdiff_t s, ptrdiff_t pad, ptrdiff_t count,
                                ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = pad - k;              /* j * s >= a */
    ptrdiff_t b = n - 1 + pad - k;      /* j * s <= b */
    ptrdiff_t l = a <= 0 ? 0 : (a + s - 1) / s;
    ptrdiff_t h = b < 0 ? 0 : b / s + 1;
    if (h > count) h = count;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

#define BP_BODY "conv.h"
#include "dtype_f64.h"
#include "levels.h"
#include "dtype_undef.h"
#include "dtype_f32.h"
#include "levels.h"
#include "dtype_undef.h"
#undef BP_BODY

/* Max pooling forward's version: at most x86-64-v3 in float64 and the
 * baseline in float32, whatever level the rest runs at. Its loop runs along
 * one output row, 12-14 windows for the book's networks: shorter than a
 * vector at the wider levels, where the compilers leave most of a row to the
 * scalar remainder. Measured per level on an AVX-512 machine (time against
 * the baseline's): GCC float64 0.20-0.39 at x86-64-v3 and 0.23-0.64 at v4,
 * float32 0.87-1.47 and 2.2-2.4; clang float64 0.82-1.11 and 1.26-1.48,
 * float32 1.22-1.83 and 0.95-1.08. Each version gives the same results. */
#if BP_LEVELS > 1
#define BP_POOL_FWD_F64 (bp_level >= BP_LEVEL_V3 ? bp_pool_fwd_f64_l1 : bp_pool_fwd_f64_l0)
#else
#define BP_POOL_FWD_F64 bp_pool_fwd_f64_l0
#endif
#define BP_POOL_FWD_F32 bp_pool_fwd_f32_l0
#endif /* BP_CONV_H */

#else /* the body, for one BP_T and one level */

/* col (C fh fw, oh ow) of one sample x (C, H, W). Row by row of the window
 * offset (ky, kx): the columns [lo, hi) read x, with unit stride where s is
 * 1 (a copy the compiler vectorises); the rest are padding. */
BP_LEVELED void BP_LFN(bp_im2col_kp)(const BP_T *restrict x, BP_T *restrict col, ptrdiff_t C, ptrdiff_t H,
                                     ptrdiff_t W, ptrdiff_t fh, ptrdiff_t fw, ptrdiff_t s, ptrdiff_t pad,
                                     ptrdiff_t oh, ptrdiff_t ow)
{
    ptrdiff_t c, ky, kx, i, j, r, lo, hi, p = oh * ow;
    for (c = 0; c < C; c++)
        for (ky = 0; ky < fh; ky++)
            for (kx = 0; kx < fw; kx++) {
                BP_T *row = col + ((c * fh + ky) * fw + kx) * p;
                bp_conv_span(W, kx, s, pad, ow, &lo, &hi);
                for (i = 0; i < oh; i++) {
                    BP_T *dst = row + i * ow;
                    const BP_T *src;
                    r = i * s + ky - pad;
                    if (r < 0 || r >= H) {
                        memset(dst, 0, (size_t)ow * sizeof(BP_T));
                        continue;
                    }
                    src = x + (c * H + r) * W + kx - pad;   /* src[j * s] is column j's cell */
                    for (j = 0; j < lo; j++) dst[j] = 0;
                    if (s == 1) {
                        for (j = lo; j < hi; j++) dst[j] = src[j];
                    } else {
                        for (j = lo; j < hi; j++) dst[j] = src[j * s];
                    }
                    for (j = hi; j < ow; j++) dst[j] = 0;
                }
            }
}

/* img (C, H, W) = the sum of one sample's col (C fh fw, oh ow) over its windows. */
BP_LEVELED void BP_LFN(bp_col2im_kp)(const BP_T *restrict col, BP_T *restrict img, ptrdiff_t C, ptrdiff_t H,
                                     ptrdiff_t W, ptrdiff_t fh, ptrdiff_t fw, ptrdiff_t s, ptrdiff_t pad,
                                     ptrdiff_t oh, ptrdiff_t ow)
{
    ptrdiff_t c, ky, kx, i, j, r, lo, hi, p = oh * ow;
    memset(img, 0, (size_t)(C * H * W) * sizeof(BP_T));
    for (c = 0; c < C; c++)
        for (ky = 0; ky < fh; ky++)
            for (kx = 0; kx < fw; kx++) {
                const BP_T *row = col + ((c * fh + ky) * fw + kx) * p;
                bp_conv_span(W, kx, s, pad, ow, &lo, &hi);
                for (i = 0; i < oh; i++) {
                    r = i * s + ky - pad;
                    if (r < 0 || r >= H) continue;
                    BP_T *dst = img + (c * H + r) * W + kx - pad;
                    const BP_T *src = row + i * ow;
                    if (s == 1) {
                        for (j = lo; j < hi; j++) dst[j] += src[j];
                    } else {
                        for (j = lo; j < hi; j++) dst[j * s] += src[j];
                    }
                }
            }
}

/* The book's layout for the whole batch: col (N oh ow, C fh fw) of x (N, C, H, W). */
BP_LEVELED void BP_LFN(bp_im2col_rows)(const BP_T *restrict x, BP_T *restrict col, ptrdiff_t N, ptrdiff_t C,
                                       ptrdiff_t H, ptrdiff_t W, ptrdiff_t fh, ptrdiff_t fw, ptrdiff_t s,
                                       ptrdiff_t pad, ptrdiff_t oh, ptrdiff_t ow)
{
    ptrdiff_t n, i, j, c, ky, kx, r, q;
    for (n = 0; n < N; n++)
        for (i = 0; i < oh; i++)
            for (j = 0; j < ow; j++) {
                BP_T *dst = col + ((n * oh + i) * ow + j) * (C * fh * fw);
                for (c = 0; c < C; c++) {
                    const BP_T *plane = x + (n * C + c) * H * W;
                    for (ky = 0; ky < fh; ky++) {
                        r = i * s + ky - pad;
                        for (kx = 0; kx < fw; kx++) {
                            q = j * s + kx - pad;
                            *dst++ = (r >= 0 && r < H && q >= 0 && q < W) ? plane[r * W + q] : (BP_T)0;
                        }
                    }
                }
            }
}

/* img (N, C, H, W) = the sum of the book's col (N oh ow, C fh fw) over the windows. */
BP_LEVELED void BP_LFN(bp_col2im_rows)(const BP_T *restrict col, BP_T *restrict img, ptrdiff_t N, ptrdiff_t C,
                                       ptrdiff_t H, ptrdiff_t W, ptrdiff_t fh, ptrdiff_t fw, ptrdiff_t s,
                                       ptrdiff_t pad, ptrdiff_t oh, ptrdiff_t ow)
{
    ptrdiff_t n, c, ky, kx, i, j, r, lo, hi, k = C * fh * fw;
    memset(img, 0, (size_t)(N * C * H * W) * sizeof(BP_T));
    for (n = 0; n < N; n++)
        for (ky = 0; ky < fh; ky++)
            for (kx = 0; kx < fw; kx++) {
                bp_conv_span(W, kx, s, pad, ow, &lo, &hi);
                for (c = 0; c < C; c++) {
                    const BP_T *src = col + n * oh * ow * k + (c * fh + ky) * fw + kx;
                    for (i = 0; i < oh; i++) {
                        r = i * s + ky - pad;
                        if (r < 0 || r >= H) continue;
                        BP_T *dst = img + ((n * C + c) * H + r) * W + kx - pad;
                        const BP_T *from = src + i * ow * k;
                        for (j = lo; j < hi; j++) dst[j * s] += from[j * k];
                    }
                }
            }
}

/* Max pooling of `planes` planes (N C of them) of H x W; out and arg are
 * (planes, oh, ow); arg holds the winner's offset ky * fw + kx in its window. */
BP_LEVELED void BP_LFN(bp_pool_fwd)(const BP_T *restrict x, BP_T *restrict out, uint8_t *restrict arg,
                                    ptrdiff_t planes, ptrdiff_t H, ptrdiff_t W, ptrdiff_t fh, ptrdiff_t fw,
                                    ptrdiff_t s, ptrdiff_t pad, ptrdiff_t oh, ptrdiff_t ow)
{
    ptrdiff_t pl, i, j, r0, r1, q0, q1, r, q;
    if (fh == 2 && fw == 2 && s == 2 && pad == 0) {
        /* The book's 2x2/2: four loads, three selects; odd trailing rows and
         * columns fall outside every window. */
        for (pl = 0; pl < planes; pl++) {
            const BP_T *plane = x + pl * H * W;
            BP_T *o = out + pl * oh * ow;
            uint8_t *a8 = arg + pl * oh * ow;
            for (i = 0; i < oh; i++) {
                const BP_T *top = plane + 2 * i * W;
                const BP_T *bot = top + W;
                /* Selects, not branches (the winner is data-dependent), the
                 * offsets in an integer of BP_T's width, and a plain `>`: so GCC
                 * vectorises the loop (the NaN rule's second compare, or a
                 * byte store, stopped it). `>` never takes a NaN, so a block
                 * holding one is done again with the exact rule. */
                ptrdiff_t j0, jn;
                for (j0 = 0; j0 < ow; j0 += 64) {
                    BP_I kb[64], nan = 0;
                    BP_T *oo = o + i * ow + j0;
                    const BP_T *t0 = top + 2 * j0;
                    const BP_T *b0 = bot + 2 * j0;
                    jn = ow - j0 < 64 ? ow - j0 : 64;
                    for (j = 0; j < jn; j++) {
                        BP_T a = t0[2 * j], b = t0[2 * j + 1], c = b0[2 * j], d = b0[2 * j + 1];
                        BP_I tb = b > a;
                        BP_T m = tb ? b : a;
                        BP_I k = tb;
                        BP_I tc = c > m;
                        m = tc ? c : m;
                        k = tc ? 2 : k;
                        BP_I td = d > m;
                        oo[j] = td ? d : m;
                        kb[j] = td ? 3 : k;
                    }
                    for (j = 0; j < 2 * jn; j++) nan |= (BP_I)(t0[j] != t0[j]);
                    for (j = 0; j < 2 * jn; j++) nan |= (BP_I)(b0[j] != b0[j]);
                    if (nan) {
                        for (j = 0; j < jn; j++) {
                            BP_T best = t0[2 * j], v;
                            BP_I k = 0;
                            v = t0[2 * j + 1];
                            if (BP_POOL_TAKES(v, best)) { best = v; k = 1; }
                            v = b0[2 * j];
                            if (BP_POOL_TAKES(v, best)) { best = v; k = 2; }
                            v = b0[2 * j + 1];
                            if (BP_POOL_TAKES(v, best)) { best = v; k = 3; }
                            oo[j] = best;
                            kb[j] = k;
                        }
                    }
                    for (j = 0; j < jn; j++) a8[i * ow + j0 + j] = (uint8_t)kb[j];
                }
            }
        }
        return;
    }
    for (pl = 0; pl < planes; pl++) {
        const BP_T *plane = x + pl * H * W;
        for (i = 0; i < oh; i++) {
            r0 = i * s - pad;
            r1 = r0 + fh;
            if (r0 < 0) r0 = 0;
            if (r1 > H) r1 = H;
            for (j = 0; j < ow; j++) {
                q0 = j * s - pad;
                q1 = q0 + fw;
                if (q0 < 0) q0 = 0;
                if (q1 > W) q1 = W;
                /* Every window holds a real cell (pad < fh, fw is checked). */
                BP_T best = plane[r0 * W + q0];
                ptrdiff_t k = (r0 - (i * s - pad)) * fw + (q0 - (j * s - pad));
                for (r = r0; r < r1; r++)
                    for (q = q0; q < q1; q++) {
                        BP_T v = plane[r * W + q];
                        if (BP_POOL_TAKES(v, best)) {
                            best = v;
                            k = (r - (i * s - pad)) * fw + (q - (j * s - pad));
                        }
                    }
                out[(pl * oh + i) * ow + j] = best;
                arg[(pl * oh + i) * ow + j] = (uint8_t)k;
            }
        }
    }
}

/* dx (planes, H, W): each dout goes to its window's winner. Where windows
 * overlap (stride < fh or fw) a cell sums several, added in the order of the
 * offset (ky, kx) as the book's col2im does; +0.0 starts every sum. */
BP_LEVELED void BP_LFN(bp_pool_bwd)(const BP_T *restrict dout, const uint8_t *restrict arg, BP_T *restrict dx,
                                    ptrdiff_t planes, ptrdiff_t H, ptrdiff_t W, ptrdiff_t fh, ptrdiff_t fw,
                                    ptrdiff_t s, ptrdiff_t pad, ptrdiff_t oh, ptrdiff_t ow)
{
    ptrdiff_t pl, i, j, ky, kx, r, q;
    if (s >= fh && s >= fw) {
        /* Windows do not overlap: each cell gets at most one value, so a
         * zeroed plane and one store per window, plane by plane while the
         * plane is in L1 (the book's 2x2/2 case; writing all four cells per
         * window with selects measured 3x slower). */
        for (pl = 0; pl < planes; pl++) {
            BP_T *plane = dx + pl * H * W;
            const BP_T *d = dout + pl * oh * ow;
            const uint8_t *a = arg + pl * oh * ow;
            memset(plane, 0, (size_t)(H * W) * sizeof(BP_T));
            for (i = 0; i < oh; i++)
                for (j = 0; j < ow; j++) {
                    ptrdiff_t k = a[i * ow + j];
                    r = i * s - pad + (fw == 2 ? k >> 1 : k / fw);
                    q = j * s - pad + (fw == 2 ? k & 1 : k % fw);
                    plane[r * W + q] += d[i * ow + j];
                }
        }
        return;
    }
    memset(dx, 0, (size_t)(planes * H * W) * sizeof(BP_T));
    for (pl = 0; pl < planes; pl++)
        for (ky = 0; ky < fh; ky++)
            for (kx = 0; kx < fw; kx++) {
                uint8_t k = (uint8_t)(ky * fw + kx);
                for (i = 0; i < oh; i++)
                    for (j = 0; j < ow; j++) {
                        ptrdiff_t at = (pl * oh + i) * ow + j;
                        if (arg[at] == k) {
                            r = i * s - pad + ky;
                            q = j * s - pad + kx;
                            dx[(pl * H + r) * W + q] += dout[at];
                        }
                    }
            }
}

/* y (N, F, p) += b (F,), per channel. */
BP_LEVELED void BP_LFN(bp_conv_bias)(BP_T *restrict y, const BP_T *restrict b, ptrdiff_t N, ptrdiff_t F, ptrdiff_t p)
{
    ptrdiff_t n, f, k;
    for (n = 0; n < N; n++)
        for (f = 0; f < F; f++) {
            BP_T *row = y + (n * F + f) * p;
            BP_T v = b[f];
            for (k = 0; k < p; k++) row[k] += v;
        }
}

/* db (F,) = dout (N, F, p) summed over N and p, in double: eight running sums
 * per row (so the loop vectorises without reassociating one chain), then rows
 * in order of n. */
BP_LEVELED void BP_LFN(bp_conv_bias_grad)(const BP_T *restrict dout, BP_T *restrict db, ptrdiff_t N, ptrdiff_t F,
                                          ptrdiff_t p)
{
    ptrdiff_t n, f, k, l;
    for (f = 0; f < F; f++) {
        double total = 0;
        for (n = 0; n < N; n++) {
            const BP_T *row = dout + (n * F + f) * p;
            double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (k = 0; k + 8 <= p; k += 8)
                for (l = 0; l < 8; l++) acc[l] += (double)row[k + l];
            for (; k < p; k++) acc[0] += (double)row[k];
            total += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
        db[f] = (BP_T)total;
    }
}

/* C (M, P) = A (M, Kd) @ B (Kd, P) [+ bias per row, added after the sum].
 * A is read through strides (ars, acs), so A may be W or W.T; B and C are
 * contiguous. The convolution's products have a small inner size (the
 * book's C FH FW = 25), where BLAS ran at a quarter of its peak here: six
 * rows of C by one 64-byte vector of columns stay in registers while the
 * k loop streams B. GCC's vector extension spells the block out (written as
 * plain loops, GCC vectorised the wrong loop and kept the block in memory);
 * below x86-64-v4 the compiler splits each vector into halves or quarters.
 * Each element is summed over k in order from zero. */
#if BP_LEVEL == 0
#if BP_CONV_VECTORS
typedef BP_T BP_CV __attribute__((vector_size(64), aligned(sizeof(BP_T))));
#else
typedef BP_T BP_CV;
#endif
#endif

BP_LEVELED void BP_LFN(bp_conv_gemm)(const BP_T *restrict A, ptrdiff_t ars, ptrdiff_t acs, const BP_T *restrict B,
                                     BP_T *restrict C, const BP_T *restrict bias, ptrdiff_t M, ptrdiff_t Kd,
                                     ptrdiff_t P)
{
    ptrdiff_t m0, p0, k, m;
    for (p0 = 0; p0 + BP_CV_LANES <= P; p0 += BP_CV_LANES) {
        for (m0 = 0; m0 + 6 <= M; m0 += 6) {
            BP_CV c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0}, b;
            const BP_T *a = A + m0 * ars;
            for (k = 0; k < Kd; k++) {
                BP_CV_LOAD(b, B + k * P + p0);
                c0 += a[k * acs] * b;
                c1 += a[ars + k * acs] * b;
                c2 += a[2 * ars + k * acs] * b;
                c3 += a[3 * ars + k * acs] * b;
                c4 += a[4 * ars + k * acs] * b;
                c5 += a[5 * ars + k * acs] * b;
            }
            if (bias) {
                c0 += bias[m0]; c1 += bias[m0 + 1]; c2 += bias[m0 + 2];
                c3 += bias[m0 + 3]; c4 += bias[m0 + 4]; c5 += bias[m0 + 5];
            }
            BP_CV_STORE(C + m0 * P + p0, c0);
            BP_CV_STORE(C + (m0 + 1) * P + p0, c1);
            BP_CV_STORE(C + (m0 + 2) * P + p0, c2);
            BP_CV_STORE(C + (m0 + 3) * P + p0, c3);
            BP_CV_STORE(C + (m0 + 4) * P + p0, c4);
            BP_CV_STORE(C + (m0 + 5) * P + p0, c5);
        }
        for (m = m0; m < M; m++) {
            BP_CV c = {0}, b;
            for (k = 0; k < Kd; k++) {
                BP_CV_LOAD(b, B + k * P + p0);
                c += A[m * ars + k * acs] * b;
            }
            if (bias) c += bias[m];
            BP_CV_STORE(C + m * P + p0, c);
        }
    }
    for (; p0 < P; p0++)
        for (m = 0; m < M; m++) {
            BP_T acc = 0;
            for (k = 0; k < Kd; k++) acc += A[m * ars + k * acs] * B[k * P + p0];
            C[m * P + p0] = bias ? acc + bias[m] : acc;
        }
}

/* After the last level, so that BP_AT can name every level's loops: the
 * convolution's product as the level in force runs it. Below x86-64-v4,
 * where the CPU has AVX2 and FMA (bp_gemm_use_avx2, set with the level), it
 * takes gemm_avx2.h's register-blocked loops, then adds the bias: the
 * 64-byte vector blocks of bp_conv_gemm take two or four registers each
 * there and spill, and measured on this AVX-512 machine held to AVX2, the
 * x86-64-v3 copy took 1.2-1.5x the baseline's time and the Convolution
 * layer ran at 0.36-0.88x the book's speed on OpenBLAS's AVX2 kernels. Both
 * sum each element over k in order from zero, in one FMA chain at
 * x86-64-v3, then add the bias: the same results. */
#if BP_LEVEL == BP_LEVELS - 1
static inline void BP_FN(bp_conv_product)(const BP_T *A, ptrdiff_t ars, ptrdiff_t acs, const BP_T *B, BP_T *C,
                                          const BP_T *bias, ptrdiff_t M, ptrdiff_t Kd, ptrdiff_t P)
{
#if BP_HAVE_AVX2
    if (bp_gemm_use_avx2 && bp_level < BP_LEVEL_V4) {
        BP_FN(bp_gemm_avx2)(A, ars, acs, B, P, C, P, NULL, M, P, Kd);
        if (bias) BP_AT(BP_FN(bp_conv_bias))(C, bias, 1, M, P);
        return;
    }
#endif
    BP_AT(BP_FN(bp_conv_gemm))(A, ars, acs, B, C, bias, M, Kd, P);
}
#endif

#endif
