/* Hand-written AVX-512 loops, for the kernels where GCC's vectorisation of
 * the portable loops (portable.h) leaves time on the table, and for
 * streaming stores:
 *
 * - sigmoid and softmax: the table-driven exp of exp.h, with fewer
 *   multiply-adds than the portable one.
 * - ReLU: one compare's mask register drives both the zeroing store and the
 *   mask bytes (GCC compares twice and packs the bytes with permutes).
 * - softmax rows: max, exp with the sum, and the scaling in three passes of
 *   whole registers.
 * - streaming stores (the *_avx512_stream loops), for results too big for
 *   the last-level cache: a regular store first reads the line it writes
 *   (read-for-ownership), a third of a one-input kernel's memory traffic.
 *   Whole 64-byte lines of the output are streamed; the lines at either
 *   end, shared with whatever lies around the output, get masked regular
 *   stores. Each such loop ends with an sfence: streaming stores are weakly
 *   ordered, and the result must be in memory, in order, before another
 *   thread (OpenMP's join, the next layer) reads it.
 *
 * Invariants: results match the portable loops bit for bit for ReLU,
 * sigmoid backward and the cross-entropy gradients, streamed or not
 * (test_simd_paths.py, test_stream_stores.py); sigmoid and softmax within
 * the ulp bounds of test_exp_accuracy.py. Tails use masked loads and
 * stores, so no element outside [0, n) is read or written. These run only
 * where bp_avx512_usable() holds and BPROP_SIMD is not "portable".
 *
 * Sigmoid backward and the cross-entropy gradients have only streaming
 * versions: for regular stores GCC's loop is as fast as a hand-written one.
 *
 * Like portable.h, the body below the #else is written once and included
 * once per type.
 */
#ifndef BP_T
#ifndef BP_AVX512_H
#define BP_AVX512_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include "platform.h"
#include "exp.h"

#if BP_HAVE_AVX512
static inline __mmask8 bp_tail8(ptrdiff_t r) { return r >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << r) - 1); }
static inline __mmask16 bp_tail16(ptrdiff_t r) { return r >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << r) - 1); }

/* Elements of `size` bytes before p reaches a 64-byte boundary, at most n.
 * Streaming stores fault on an unaligned address; the entry checks require
 * arrays aligned to their element size, so the division is exact. */
static inline ptrdiff_t bp_to_line(const void *p, size_t size, ptrdiff_t n)
{
    ptrdiff_t k = (ptrdiff_t)((-(uintptr_t)p & 63) / size);
    return k < n ? k : n;
}

/* out[0, n) = VEC, a register at a time. VEC is an expression in `i` (its
 * first element) and `live` (its lanes, for masked loads; the middle's
 * constant full mask makes them plain loads). STREAM, a constant: 0 for
 * regular stores; 1 for streaming stores from the first 64-byte line of out
 * on, the partial lines at either end stored regularly. */
#define BP_MAP(out, n, STREAM, VEC)                                           \
    do {                                                                      \
        const ptrdiff_t head_ = (STREAM) ? bp_to_line(out, sizeof(BP_T), n) : 0; \
        ptrdiff_t i = 0;                                                      \
        if (head_) {                                                          \
            const BP_M live = BP_TAIL(head_);                                 \
            BP_VOP(mask_storeu)((out), live, VEC);                            \
        }                                                                     \
        for (i = head_; i + BP_L <= (n); i += BP_L) {                         \
            const BP_M live = BP_FULL;                                        \
            if (STREAM)                                                       \
                BP_VOP(stream)((out) + i, VEC);                               \
            else                                                              \
                BP_VOP(storeu)((out) + i, VEC);                               \
        }                                                                     \
        if (i < (n)) {                                                        \
            const BP_M live = BP_TAIL((n) - i);                               \
            BP_VOP(mask_storeu)((out) + i, live, VEC);                        \
        }                                                                     \
        if (STREAM)                                                           \
            _mm_sfence();                                                     \
    } while (0)

/* exp(x - mx) into y and its sum over the row, in double: a float32 row
 * keeps a float64 normaliser, as in the portable loop. Written per type
 * because the float sum widens each register into two. */
BP_AVX512_INLINE double bp_softmax_exp_sum_f64(const double *x, double *y, ptrdiff_t c, __m512d vmx)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    ptrdiff_t j = 0;
    for (; j + 16 <= c; j += 16) {
        __m512d e0 = bp_exp_neg_f64x8(_mm512_sub_pd(_mm512_loadu_pd(x + j), vmx));
        __m512d e1 = bp_exp_neg_f64x8(_mm512_sub_pd(_mm512_loadu_pd(x + j + 8), vmx));
        _mm512_storeu_pd(y + j, e0);
        _mm512_storeu_pd(y + j + 8, e1);
        s0 = _mm512_add_pd(s0, e0);
        s1 = _mm512_add_pd(s1, e1);
    }
    for (; j < c; j += 8) {
        __mmask8 live = bp_tail8(c - j);
        __m512d e = bp_exp_neg_f64x8(_mm512_sub_pd(_mm512_maskz_loadu_pd(live, x + j), vmx));
        _mm512_mask_storeu_pd(y + j, live, e);
        s0 = _mm512_add_pd(s0, _mm512_maskz_mov_pd(live, e));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

BP_AVX512_INLINE double bp_softmax_exp_sum_f32(const float *x, float *y, ptrdiff_t c, __m512 vmx)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (ptrdiff_t j = 0; j < c; j += 16) {
        __mmask16 live = bp_tail16(c - j);
        __m512 e = _mm512_maskz_mov_ps(live, bp_exp_neg_f32x16(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + j), vmx)));
        _mm512_mask_storeu_ps(y + j, live, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

#include "dtype_f64.h"
#include "avx512.h"
#include "dtype_undef.h"
#include "dtype_f32.h"
#include "avx512.h"
#include "dtype_undef.h"
#endif /* BP_HAVE_AVX512 */
#endif /* BP_AVX512_H */

#else /* the body, for one BP_T */

/* --- ReLU ---------------------------------------------------------------- */

/* One register's worth (`live` lanes) of ReLU forward and backward, for the
 * heads and tails around the 64-element blocks. */
BP_AVX512_INLINE void BP_FN(bp_relu_fwd_vec)(const BP_T *x, BP_T *out, uint8_t *mask, BP_M live)
{
    BP_V v = BP_VOP(maskz_loadu)(live, x);
    BP_M k = BP_VCMP_MASK(v, BP_VOP(setzero)(), _CMP_LE_OQ) & live;
    BP_VOP(mask_storeu)(out, live, BP_VOP(maskz_mov)((BP_M)~k, v));
    _mm_mask_storeu_epi8((void *)mask, live, _mm_maskz_mov_epi8(k, _mm_set1_epi8(1)));
}

BP_AVX512_INLINE void BP_FN(bp_relu_bwd_vec)(const BP_T *dout, const uint8_t *mask, BP_T *dx, BP_M live)
{
    __m128i mb = _mm_maskz_loadu_epi8(live, (const void *)mask);
    BP_M keep = (BP_M)(~_mm_test_epi8_mask(mb, mb) & live);
    BP_VOP(mask_storeu)(dx, live, BP_VOP(maskz_loadu)(keep, dout));
}

/* 64 elements of out = x <= 0 ? 0 : x (out 64-byte aligned when streamed);
 * returns their mask bits. */
BP_AVX512_INLINE uint64_t BP_FN(bp_relu_fwd64)(const BP_T *x, BP_T *out, const int stream)
{
    uint64_t bits = 0;
    for (int b = 0; b < 64 / BP_L; b++) {
        BP_V v = BP_VOP(loadu)(x + BP_L * b);
        BP_M k = BP_VCMP_MASK(v, BP_VOP(setzero)(), _CMP_LE_OQ);
        if (stream)
            BP_VOP(stream)(out + BP_L * b, BP_VOP(maskz_mov)((BP_M)~k, v));
        else
            BP_VOP(storeu)(out + BP_L * b, BP_VOP(maskz_mov)((BP_M)~k, v));
        bits |= (uint64_t)k << (BP_L * b);
    }
    return bits;
}

/* The whole 64-element blocks from i on; returns where they end. Streamed,
 * out is 64-byte aligned at i but the mask need not be (NumPy gives big
 * arrays the same 16-byte offset into a page, and 64 mask bytes go with 8
 * or 4 lines of out), so each aligned mask line is put together from the
 * last m bits of the previous block and the first 64 - m of this one; the
 * first block's leading mask bytes and the last block's trailing ones share
 * a line with bytes outside the blocks and get masked regular stores. */
BP_AVX512_INLINE ptrdiff_t BP_FN(bp_relu_fwd_blocks)(const BP_T *x, BP_T *out, uint8_t *mask, ptrdiff_t i,
                                                     ptrdiff_t n, const int stream)
{
    const __m512i ones = _mm512_set1_epi8(1);
    const unsigned m = stream ? (unsigned)((uintptr_t)(mask + i) & 63) : 0;
    const ptrdiff_t start = i;
    uint64_t prev = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t bits = BP_FN(bp_relu_fwd64)(x + i, out + i, stream);
        if (!stream)
            _mm512_storeu_si512((void *)(mask + i), _mm512_maskz_mov_epi8((__mmask64)bits, ones));
        else if (m == 0)
            _mm512_stream_si512((void *)(mask + i), _mm512_maskz_mov_epi8((__mmask64)bits, ones));
        else if (i == start)
            _mm512_mask_storeu_epi8((void *)(mask + i), (__mmask64)(~0ULL >> m),
                                    _mm512_maskz_mov_epi8((__mmask64)bits, ones));
        else
            _mm512_stream_si512((void *)(mask + i - m),
                                _mm512_maskz_mov_epi8((__mmask64)((prev >> (64 - m)) | (bits << m)), ones));
        prev = bits;
    }
    if (m != 0 && i != start)
        _mm512_mask_storeu_epi8((void *)(mask + i - m), (__mmask64)((1ULL << m) - 1),
                                _mm512_maskz_mov_epi8((__mmask64)(prev >> (64 - m)), ones));
    return i;
}

/* mask = x <= 0 (false for NaN), out = mask ? 0 : x, as the portable loop:
 * a head up to out's first line when streamed, 64-element blocks, a tail. */
BP_AVX512_INLINE void BP_FN(bp_relu_fwd_run)(const BP_T *restrict x, BP_T *restrict out,
                                             uint8_t *restrict mask, ptrdiff_t n, const int stream)
{
    ptrdiff_t i = stream ? bp_to_line(out, sizeof *out, n) : 0;
    if (i)
        BP_FN(bp_relu_fwd_vec)(x, out, mask, BP_TAIL(i));
    for (i = BP_FN(bp_relu_fwd_blocks)(x, out, mask, i, n, stream); i < n; i += BP_L)
        BP_FN(bp_relu_fwd_vec)(x + i, out + i, mask + i, BP_TAIL(n - i));
    if (stream)
        _mm_sfence();
}

/* dx = mask ? 0 : dout; any nonzero mask byte counts as set, as in C. */
BP_AVX512_INLINE void BP_FN(bp_relu_bwd_run)(const BP_T *restrict dout, const uint8_t *restrict mask,
                                             BP_T *restrict dx, ptrdiff_t n, const int stream)
{
    ptrdiff_t i = stream ? bp_to_line(dx, sizeof *dx, n) : 0;
    if (i)
        BP_FN(bp_relu_bwd_vec)(dout, mask, dx, BP_TAIL(i));
    /* Each register's mask bytes are loaded and tested on their own: one
     * test of all 64 and shifts of its 64-bit result made clang take the
     * result apart through memory, a store-forwarding stall per block. */
    for (; i + 64 <= n; i += 64) {
        for (int b = 0; b < 64 / BP_L; b++) {
            __m128i mb = _mm_maskz_loadu_epi8(BP_FULL, (const void *)(mask + i + BP_L * b));
            BP_V v = BP_VOP(maskz_loadu)((BP_M)~_mm_test_epi8_mask(mb, mb), dout + i + BP_L * b);
            if (stream)
                BP_VOP(stream)(dx + i + BP_L * b, v);
            else
                BP_VOP(storeu)(dx + i + BP_L * b, v);
        }
    }
    for (; i < n; i += BP_L)
        BP_FN(bp_relu_bwd_vec)(dout + i, mask + i, dx + i, BP_TAIL(n - i));
    if (stream)
        _mm_sfence();
}

BP_AVX512 static void BP_FN(bp_relu_fwd_avx512)(const BP_T *restrict x, BP_T *restrict out,
                                                uint8_t *restrict mask, ptrdiff_t n)
{
    BP_FN(bp_relu_fwd_run)(x, out, mask, n, 0);
}

BP_AVX512 static void BP_FN(bp_relu_fwd_avx512_stream)(const BP_T *restrict x, BP_T *restrict out,
                                                       uint8_t *restrict mask, ptrdiff_t n)
{
    BP_FN(bp_relu_fwd_run)(x, out, mask, n, 1);
}

BP_AVX512 static void BP_FN(bp_relu_bwd_avx512)(const BP_T *restrict dout, const uint8_t *restrict mask,
                                                BP_T *restrict dx, ptrdiff_t n)
{
    BP_FN(bp_relu_bwd_run)(dout, mask, dx, n, 0);
}

BP_AVX512 static void BP_FN(bp_relu_bwd_avx512_stream)(const BP_T *restrict dout, const uint8_t *restrict mask,
                                                       BP_T *restrict dx, ptrdiff_t n)
{
    BP_FN(bp_relu_bwd_run)(dout, mask, dx, n, 1);
}

/* --- Sigmoid ------------------------------------------------------------- */

/* As the portable loop: e = exp(-|v|), then 1/(1+e), times e where v's
 * sign bit is set (-0 gives 0.5 either way; NaN stays NaN). */
BP_AVX512_INLINE BP_V BP_FN(bp_sigmoid_vec)(BP_V v)
{
    const BP_V one = BP_VOP(set1)((BP_T)1);
    BP_V e = BP_VEXP(BP_VOP(or)(v, BP_VOP(set1)((BP_T)-0.0)));
    BP_V r = BP_VOP(div)(one, BP_VOP(add)(one, e));
    return BP_VOP(mask_mul)(r, BP_VSIGNS(v), e, r);
}

BP_AVX512 static void BP_FN(bp_sigmoid_fwd_avx512)(const BP_T *restrict x, BP_T *restrict out, ptrdiff_t n)
{
    BP_MAP(out, n, 0, BP_FN(bp_sigmoid_vec)(BP_VOP(maskz_loadu)(live, x + i)));
}

BP_AVX512 static void BP_FN(bp_sigmoid_fwd_avx512_stream)(const BP_T *restrict x, BP_T *restrict out,
                                                          ptrdiff_t n)
{
    BP_MAP(out, n, 1, BP_FN(bp_sigmoid_vec)(BP_VOP(maskz_loadu)(live, x + i)));
}

/* The gradients below follow the portable loops' order of operations, and
 * no product there is added to anything (nothing to contract into an FMA),
 * so they match the portable loops bit for bit. */
BP_AVX512 static void BP_FN(bp_sigmoid_bwd_avx512_stream)(const BP_T *restrict dout, const BP_T *restrict y,
                                                          BP_T *restrict dx, ptrdiff_t n)
{
    const BP_V one = BP_VOP(set1)((BP_T)1);
    BP_MAP(dx, n, 1, BP_VOP(mul)(BP_VOP(mul)(BP_VOP(maskz_loadu)(live, dout + i),
        BP_VOP(sub)(one, BP_VOP(maskz_loadu)(live, y + i))), BP_VOP(maskz_loadu)(live, y + i)));
}

/* --- Softmax and cross-entropy gradients --------------------------------- */

/* dx = (y - t) * inv and dx = y * inv. */
BP_AVX512 static void BP_FN(bp_xent_onehot_bwd_avx512_stream)(const BP_T *restrict y, const BP_T *restrict t,
                                                              BP_T *restrict dx, ptrdiff_t n, BP_T inv)
{
    const BP_V vinv = BP_VOP(set1)(inv);
    BP_MAP(dx, n, 1, BP_VOP(mul)(BP_VOP(sub)(BP_VOP(maskz_loadu)(live, y + i),
        BP_VOP(maskz_loadu)(live, t + i)), vinv));
}

BP_AVX512 static void BP_FN(bp_scale_avx512_stream)(const BP_T *restrict y, BP_T *restrict dx, ptrdiff_t n,
                                                    BP_T inv)
{
    const BP_V vinv = BP_VOP(set1)(inv);
    BP_MAP(dx, n, 1, BP_VOP(mul)(BP_VOP(maskz_loadu)(live, y + i), vinv));
}

/* One softmax row, as bp_softmax_row_portable: y = softmax(x), returns
 * log(sum(exp(x - max))) and stores the max in *mx_out. The max skips NaN
 * (vmax returns its second operand when either is NaN), but exp(NaN - max)
 * then makes the sum, and so the row, NaN, as in the book. The sum and the
 * scaling run in double. The scaling keeps regular stores even for big
 * results: the exp pass has just brought the row's lines into the cache. */
BP_AVX512 static double BP_FN(bp_softmax_row_avx512)(const BP_T *restrict x, BP_T *restrict y, ptrdiff_t c,
                                                     BP_T *mx_out)
{
    BP_V m = BP_VOP(set1)((BP_T)-INFINITY);
    for (ptrdiff_t j = 0; j < c; j += BP_L)
        m = BP_VOP(max)(BP_VOP(mask_loadu)(m, BP_TAIL(c - j), x + j), m);
    BP_T mx = BP_VOP(reduce_max)(m);
    double s = BP_FN(bp_softmax_exp_sum)(x, y, c, BP_VOP(set1)(mx));
    const __m512d inv = _mm512_set1_pd(1.0 / s);
    for (ptrdiff_t j = 0; j < c; j += 8) {
        __mmask8 live = bp_tail8(c - j);
        BP_STORE_F64X8(y + j, live, _mm512_mul_pd(BP_LOAD_F64X8(live, y + j), inv));
    }
    *mx_out = mx;
    return log(s);
}

#endif
