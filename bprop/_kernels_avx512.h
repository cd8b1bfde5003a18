/* Hand-written AVX-512 loops for the kernels where GCC's vectorisation of
 * the portable loops (_kernels_loops.h) leaves time on the table:
 *
 * - exp, for sigmoid and softmax: a 16-entry table of 2^(j/16), picked with
 *   register permutes, leaves a degree-6 polynomial instead of 13, and vscalefpd
 *   scales by 2^k with one rounding, also into the subnormals. The sigmoid
 *   loop went from ~1.03 to ~0.72 ns per element in float64 and from 0.36
 *   to 0.28 in float32 (78,400 elements, in cache).
 * - ReLU: from the portable loop GCC made ~80 instructions per 64 elements
 *   (each compare done twice, mask bytes packed with permutes); here one
 *   compare's mask register drives both the zeroing store and the mask
 *   bytes: ~20% faster once the arrays leave L2.
 *
 * - softmax rows: max, exp with the sum, and the scaling in three passes
 *   of whole registers (the portable row spent twice its exp time outside
 *   exp, in the max, the float64 sum and the scaling).
 *
 * - streaming stores, for results too big for the last-level cache: a
 *   regular store first reads the line it writes (read-for-ownership), a
 *   third of a one-input kernel's memory traffic. The *_avx512_stream loops
 *   at the end of this file skip that read. Sigmoid backward at 4096 x 4096
 *   float32 went from 7.9 to 5.75 ms (memcpy of the same bytes: 5.55 ms).
 *
 * Results match the portable loops: ReLU, sigmoid backward and the
 * cross-entropy gradients bit for bit, streamed or not (test_simd_paths.py,
 * test_stream_stores.py), exp within the same ulp bounds
 * (test_exp_accuracy.py checks both paths). These run only where the CPU
 * and OS support AVX-512 F/BW/VL/DQ (checked once at import) and
 * BPROP_SIMD is not "portable"; everywhere else the portable loops run.
 */
#ifndef BPROP_KERNELS_AVX512_H
#define BPROP_KERNELS_AVX512_H
#include <stddef.h>
#include <math.h>
#include <stdint.h>

#if defined(BPROP_CLONES) && defined(__GNUC__) && defined(__x86_64__)
#define BPROP_HAVE_AVX512_PATH 1
#include <immintrin.h>
#define BP_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512dq,fma"
#define BP_AVX512 __attribute__((target(BP_AVX512_TARGET), noinline))
#define BP_AVX512_INLINE __attribute__((target(BP_AVX512_TARGET), always_inline)) static inline

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

/* One register's worth (or less: `live`) of ReLU forward and backward, for
 * the tails and heads around the 64-element blocks. */
BP_AVX512_INLINE void bp_relu_fwd8(const double *x, double *out, uint8_t *mask, __mmask8 live)
{
    __m512d v = _mm512_maskz_loadu_pd(live, x);
    __mmask8 k = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_LE_OQ) & live;
    _mm512_mask_storeu_pd(out, live, _mm512_maskz_mov_pd((__mmask8)~k, v));
    _mm_mask_storeu_epi8((void *)mask, live, _mm_maskz_mov_epi8(k, _mm_set1_epi8(1)));
}

BP_AVX512_INLINE void bp_relu_fwd16(const float *x, float *out, uint8_t *mask, __mmask16 live)
{
    __m512 v = _mm512_maskz_loadu_ps(live, x);
    __mmask16 k = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LE_OQ) & live;
    _mm512_mask_storeu_ps(out, live, _mm512_maskz_mov_ps((__mmask16)~k, v));
    _mm_mask_storeu_epi8((void *)mask, live, _mm_maskz_mov_epi8(k, _mm_set1_epi8(1)));
}

BP_AVX512_INLINE void bp_relu_bwd8(const double *dout, const uint8_t *mask, double *dx, __mmask8 live)
{
    __m128i mb = _mm_maskz_loadu_epi8(live, (const void *)mask);
    __mmask8 keep = (__mmask8)(~_mm_test_epi8_mask(mb, mb) & live);
    _mm512_mask_storeu_pd(dx, live, _mm512_maskz_loadu_pd(keep, dout));
}

BP_AVX512_INLINE void bp_relu_bwd16(const float *dout, const uint8_t *mask, float *dx, __mmask16 live)
{
    __m128i mb = _mm_maskz_loadu_epi8(live, (const void *)mask);
    __mmask16 keep = (__mmask16)(~_mm_test_epi8_mask(mb, mb) & live);
    _mm512_mask_storeu_ps(dx, live, _mm512_maskz_loadu_ps(keep, dout));
}

/* mask = x <= 0 (false for NaN), out = mask ? 0 : x, as the portable loop.
 * Tails use masked loads and stores, so no element past n is touched. */
BP_AVX512 static void bp_relu_fwd_f64_avx512(const double *restrict x, double *restrict out,
                                             uint8_t *restrict mask, ptrdiff_t n)
{
    const __m512d zero = _mm512_setzero_pd();
    const __m512i ones = _mm512_set1_epi8(1);
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t bits = 0;
        for (int b = 0; b < 8; b++) {
            __m512d v = _mm512_loadu_pd(x + i + 8 * b);
            __mmask8 k = _mm512_cmp_pd_mask(v, zero, _CMP_LE_OQ);
            _mm512_storeu_pd(out + i + 8 * b, _mm512_maskz_mov_pd((__mmask8)~k, v));
            bits |= (uint64_t)k << (8 * b);
        }
        _mm512_storeu_si512((void *)(mask + i), _mm512_maskz_mov_epi8((__mmask64)bits, ones));
    }
    for (; i < n; i += 8)
        bp_relu_fwd8(x + i, out + i, mask + i, bp_tail8(n - i));
}

BP_AVX512 static void bp_relu_fwd_f32_avx512(const float *restrict x, float *restrict out,
                                             uint8_t *restrict mask, ptrdiff_t n)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512i ones = _mm512_set1_epi8(1);
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint64_t bits = 0;
        for (int b = 0; b < 4; b++) {
            __m512 v = _mm512_loadu_ps(x + i + 16 * b);
            __mmask16 k = _mm512_cmp_ps_mask(v, zero, _CMP_LE_OQ);
            _mm512_storeu_ps(out + i + 16 * b, _mm512_maskz_mov_ps((__mmask16)~k, v));
            bits |= (uint64_t)k << (16 * b);
        }
        _mm512_storeu_si512((void *)(mask + i), _mm512_maskz_mov_epi8((__mmask64)bits, ones));
    }
    for (; i < n; i += 16)
        bp_relu_fwd16(x + i, out + i, mask + i, bp_tail16(n - i));
}

/* dx = mask ? 0 : dout; any nonzero mask byte counts as set, as in C. */
BP_AVX512 static void bp_relu_bwd_f64_avx512(const double *restrict dout, const uint8_t *restrict mask,
                                             double *restrict dx, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i mb = _mm512_loadu_si512((const void *)(mask + i));
        uint64_t bits = (uint64_t)_mm512_test_epi8_mask(mb, mb);
        for (int b = 0; b < 8; b++) {
            __mmask8 keep = (__mmask8)~(bits >> (8 * b));
            _mm512_storeu_pd(dx + i + 8 * b, _mm512_maskz_loadu_pd(keep, dout + i + 8 * b));
        }
    }
    for (; i < n; i += 8)
        bp_relu_bwd8(dout + i, mask + i, dx + i, bp_tail8(n - i));
}

BP_AVX512 static void bp_relu_bwd_f32_avx512(const float *restrict dout, const uint8_t *restrict mask,
                                             float *restrict dx, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i mb = _mm512_loadu_si512((const void *)(mask + i));
        uint64_t bits = (uint64_t)_mm512_test_epi8_mask(mb, mb);
        for (int b = 0; b < 4; b++) {
            __mmask16 keep = (__mmask16)~(bits >> (16 * b));
            _mm512_storeu_ps(dx + i + 16 * b, _mm512_maskz_loadu_ps(keep, dout + i + 16 * b));
        }
    }
    for (; i < n; i += 16)
        bp_relu_bwd16(dout + i, mask + i, dx + i, bp_tail16(n - i));
}

/* exp(a) for a <= 0 or NaN, eight doubles at a time: a = (k/16) ln2 + r with
 * |r| <= ln2/32 (Cody-Waite split of ln2/16: k ln2_hi is exact for
 * |k| < 2^15), e^r - 1 as r + r^2 p(r), p of degree 4 fitted by Remez's
 * algorithm to minimise the largest error relative to 1 over |r| <= ln2/32
 * (0.105 ulp at most, coefficients rounded to double; the Taylor series to
 * r^7, at 0.01 ulp, took one multiply-add more, 6% of the sigmoid loop;
 * the worst sigmoid and softmax errors measured did not change),
 * times 2^(j/16), j = k mod 16, from a 16-entry table in two registers per
 * part (hi + lo: the table adds no rounding of its own), then scaled by
 * 2^floor(k/16) with vscalefpd. Table entries are 2^(j/16) rounded to
 * double (hi) and the rounded remainder (lo), from a 300-bit evaluation.
 * -inf gives +0 (clamped at -760), NaN gives NaN. */
BP_AVX512_INLINE __m512d bp_exp_neg_pd(__m512d a)
{
    const __m512d t_hi0 = _mm512_setr_pd(0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0,
        0x1.2387a6e756238p+0, 0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0, 0x1.5ab07dd485429p+0);
    const __m512d t_hi1 = _mm512_setr_pd(0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0,
        0x1.9c49182a3f090p+0, 0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0);
    const __m512d t_lo0 = _mm512_setr_pd(0.0, 0x1.8a62e4adc610bp-54, -0x1.19041b9d78a76p-55, 0x1.9b07eb6c70573p-54,
        0x1.6f46ad23182e4p-55, 0x1.ada0911f09ebcp-55, 0x1.d4397afec42e2p-56, 0x1.6324c054647adp-54);
    const __m512d t_lo1 = _mm512_setr_pd(-0x1.bdd3413b26456p-54, -0x1.41577ee04992fp-55, 0x1.6e9f156864b27p-54,
        0x1.c7c46b071f2bep-56, 0x1.7a1cd345dcc81p-54, 0x1.11065895048ddp-55, 0x1.2ed02d75b3707p-55, -0x1.e9c23179c2893p-54);
    const __m512d shift = _mm512_set1_pd(0x1.8p52);
    /* max(lo, a) returns a when a is NaN. */
    a = _mm512_max_pd(_mm512_set1_pd(-760.0), a);
    __m512d z = _mm512_fmadd_pd(a, _mm512_set1_pd(0x1.71547652b82fep+4), shift);
    __m512i j = _mm512_castpd_si512(z);          /* k mod 16 in the low bits */
    __m512d kd = _mm512_sub_pd(z, shift);
    __m512d r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(0x1.62e42fefa0000p-5), a);
    r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(0x1.cf79abc9e3b3ap-44), r);
    __m512d p = _mm512_set1_pd(0x1.6c185de50baa5p-10);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.11123aafe9fc6p-7));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.555555545eb57p-5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.555555548f869p-3));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0x1.0000000000005p-1));
    __m512d q = _mm512_fmadd_pd(_mm512_mul_pd(r, r), p, r);   /* e^r - 1 */
    __m512d th = _mm512_permutex2var_pd(t_hi0, j, t_hi1);
    __m512d tl = _mm512_permutex2var_pd(t_lo0, j, t_lo1);
    __m512d m = _mm512_add_pd(th, _mm512_fmadd_pd(th, q, tl));
    return _mm512_scalef_pd(m, _mm512_mul_pd(kd, _mm512_set1_pd(0.0625)));
}

/* The same for sixteen floats: |r| <= ln2/32, series to r^4, clamp -110. */
BP_AVX512_INLINE __m512 bp_exp_neg_ps(__m512 a)
{
    const __m512 t_hi = _mm512_setr_ps(0x1.000000p+0f, 0x1.0b5586p+0f, 0x1.172b84p+0f, 0x1.2387a6p+0f,
        0x1.306fe0p+0f, 0x1.3dea64p+0f, 0x1.4bfdaep+0f, 0x1.5ab07ep+0f, 0x1.6a09e6p+0f, 0x1.7a1148p+0f,
        0x1.8ace54p+0f, 0x1.9c4918p+0f, 0x1.ae89fap+0f, 0x1.c199bep+0f, 0x1.d5818ep+0f, 0x1.ea4afap+0f);
    const __m512 t_lo = _mm512_setr_ps(0.0f, 0x1.9f3122p-25f, -0x1.c15742p-27f, 0x1.ceac48p-25f,
        0x1.4636e2p-25f, 0x1.824684p-25f, -0x1.593abcp-25f, -0x1.5bd5ecp-27f, 0x1.9fcef4p-26f, -0x1.829fd0p-25f,
        0x1.15506ep-27f, 0x1.51f848p-27f, -0x1.a94b14p-26f, -0x1.3d56b2p-27f, -0x1.822dbcp-27f, 0x1.52486cp-27f);
    const __m512 shift = _mm512_set1_ps(0x1.8p23f);
    a = _mm512_max_ps(_mm512_set1_ps(-110.0f), a);
    __m512 z = _mm512_fmadd_ps(a, _mm512_set1_ps(0x1.715476p+4f), shift);
    __m512i j = _mm512_castps_si512(z);
    __m512 kd = _mm512_sub_ps(z, shift);
    __m512 r = _mm512_fnmadd_ps(kd, _mm512_set1_ps(0x1.62ep-5f), a);
    r = _mm512_fnmadd_ps(kd, _mm512_set1_ps(0x1.0bfbe8p-19f), r);
    __m512 p = _mm512_set1_ps(1.0f / 24);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    __m512 q = _mm512_fmadd_ps(_mm512_mul_ps(r, r), p, r);
    __m512 th = _mm512_permutexvar_ps(j, t_hi);
    __m512 tl = _mm512_permutexvar_ps(j, t_lo);
    __m512 m = _mm512_add_ps(th, _mm512_fmadd_ps(th, q, tl));
    return _mm512_scalef_ps(m, _mm512_mul_ps(kd, _mm512_set1_ps(0.0625f)));
}

/* Sigmoid as the portable loop: e = exp(-|x|), 1/(1+e) or e/(1+e). */
BP_AVX512_INLINE __m512d bp_sigmoid_pd(__m512d v)
{
    const __m512d one = _mm512_set1_pd(1.0);
    const __m512i sign = _mm512_set1_epi64((long long)0x8000000000000000ULL);
    __m512d e = bp_exp_neg_pd(_mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(v), sign)));
    __m512d r = _mm512_div_pd(one, _mm512_add_pd(one, e));
    /* e * r where the sign bit is set (-0 gives 0.5 either way; NaN stays NaN):
     * one masked multiply in place of a compare, a multiply and a blend. */
    return _mm512_mask_mul_pd(r, _mm512_movepi64_mask(_mm512_castpd_si512(v)), e, r);
}

BP_AVX512_INLINE __m512 bp_sigmoid_ps(__m512 v)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000U);
    __m512 e = bp_exp_neg_ps(_mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(v), sign)));
    __m512 r = _mm512_div_ps(one, _mm512_add_ps(one, e));
    /* e * r where the sign bit is set (-0 gives 0.5 either way; NaN stays NaN):
     * one masked multiply in place of a compare, a multiply and a blend. */
    return _mm512_mask_mul_ps(r, _mm512_movepi32_mask(_mm512_castps_si512(v)), e, r);
}

/* Whole vectors, then one masked tail: masking every vector, as this loop
 * first did, cost 8-14% at (1000, 1000). */
BP_AVX512 static void bp_sigmoid_fwd_f64_avx512(const double *restrict x, double *restrict out, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_pd(out + i, bp_sigmoid_pd(_mm512_loadu_pd(x + i)));
    if (i < n) {
        __mmask8 live = bp_tail8(n - i);
        _mm512_mask_storeu_pd(out + i, live, bp_sigmoid_pd(_mm512_maskz_loadu_pd(live, x + i)));
    }
}

BP_AVX512 static void bp_sigmoid_fwd_f32_avx512(const float *restrict x, float *restrict out, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, bp_sigmoid_ps(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 live = bp_tail16(n - i);
        _mm512_mask_storeu_ps(out + i, live, bp_sigmoid_ps(_mm512_maskz_loadu_ps(live, x + i)));
    }
}

/* One softmax row, as bp_softmax_row_* in _kernels_loops.h: y = softmax(x),
 * returns log(sum(exp(x - max))) and stores the max in *mx_out. The max
 * skips NaN (vmaxpd returns its second operand when either is NaN), but
 * exp(NaN - max) then makes the sum, and so the row, NaN, as in the book.
 * exp and the sum share one pass; the sum and the scaling run in double
 * (a float32 row keeps a float64 normaliser, as in the portable loop).
 * The scaling pass keeps regular stores even for big results: the exp pass
 * has already read the row's lines in, and streaming the scaled row over
 * them measured 1.3-1.4x slower at (4096, 4096). */
BP_AVX512 static double bp_softmax_row_f64_avx512(const double *restrict x, double *restrict y, ptrdiff_t c,
                                                  double *mx_out)
{
    __m512d m = _mm512_set1_pd(-INFINITY);
    for (ptrdiff_t j = 0; j < c; j += 8)
        m = _mm512_max_pd(_mm512_mask_loadu_pd(m, bp_tail8(c - j), x + j), m);
    double mx = _mm512_reduce_max_pd(m);
    const __m512d vmx = _mm512_set1_pd(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    ptrdiff_t j = 0;
    for (; j + 16 <= c; j += 16) {
        __m512d e0 = bp_exp_neg_pd(_mm512_sub_pd(_mm512_loadu_pd(x + j), vmx));
        __m512d e1 = bp_exp_neg_pd(_mm512_sub_pd(_mm512_loadu_pd(x + j + 8), vmx));
        _mm512_storeu_pd(y + j, e0);
        _mm512_storeu_pd(y + j + 8, e1);
        s0 = _mm512_add_pd(s0, e0);
        s1 = _mm512_add_pd(s1, e1);
    }
    for (; j < c; j += 8) {
        __mmask8 live = bp_tail8(c - j);
        __m512d e = bp_exp_neg_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(live, x + j), vmx));
        _mm512_mask_storeu_pd(y + j, live, e);
        s0 = _mm512_add_pd(s0, _mm512_maskz_mov_pd(live, e));
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    const __m512d inv = _mm512_set1_pd(1.0 / s);
    for (j = 0; j < c; j += 8) {
        __mmask8 live = bp_tail8(c - j);
        _mm512_mask_storeu_pd(y + j, live, _mm512_mul_pd(_mm512_maskz_loadu_pd(live, y + j), inv));
    }
    *mx_out = mx;
    return log(s);
}

BP_AVX512 static double bp_softmax_row_f32_avx512(const float *restrict x, float *restrict y, ptrdiff_t c,
                                                  float *mx_out)
{
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (ptrdiff_t j = 0; j < c; j += 16)
        m = _mm512_max_ps(_mm512_mask_loadu_ps(m, bp_tail16(c - j), x + j), m);
    float mx = _mm512_reduce_max_ps(m);
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (ptrdiff_t j = 0; j < c; j += 16) {
        __mmask16 live = bp_tail16(c - j);
        __m512 e = _mm512_maskz_mov_ps(live, bp_exp_neg_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + j), vmx)));
        _mm512_mask_storeu_ps(y + j, live, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    const __m512d inv = _mm512_set1_pd(1.0 / s);
    for (ptrdiff_t j = 0; j < c; j += 8) {
        __mmask8 live = bp_tail8(c - j);
        __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, y + j));
        _mm256_mask_storeu_ps(y + j, live, _mm512_cvtpd_ps(_mm512_mul_pd(v, inv)));
    }
    *mx_out = mx;
    return log(s);
}

/* --- Streaming stores -------------------------------------------------------
 *
 * The *_avx512_stream loops run instead of the ones above (or, where there
 * is no AVX-512 loop, the portable one) when the caller has found the
 * result too big for the last-level cache (bp_stream_min_bytes). Their
 * results are those of the loops they replace, bit for bit; only the
 * stores differ. Whole 64-byte lines of the output are written with
 * streaming stores, which skip the read-for-ownership of a regular store;
 * the lines at either end, shared with whatever lies around the output,
 * get masked regular stores. Loads stay unaligned. Each loop ends with an
 * sfence: streaming stores are weakly ordered, and the result must be in
 * memory, in order, before another thread (OpenMP's join, the next layer)
 * reads it.
 */

/* out[0, n) = VEC, streamed. VEC is an expression in `i` (its first
 * element) and `live` (its lanes, for masked loads; the constant full mask
 * of the middle makes them plain loads). */
#define BP_STREAM_PD(out, n, VEC)                                                                 \
    do {                                                                                          \
        const ptrdiff_t head_ = bp_to_line(out, sizeof(double), n);                               \
        ptrdiff_t i = 0;                                                                          \
        if (head_) {                                                                              \
            __mmask8 live = bp_tail8(head_);                                                      \
            _mm512_mask_storeu_pd((out), live, VEC);                                              \
        }                                                                                         \
        for (i = head_; i + 8 <= (n); i += 8) {                                                   \
            const __mmask8 live = 0xFF;                                                           \
            _mm512_stream_pd((out) + i, VEC);                                                     \
        }                                                                                         \
        if (i < (n)) {                                                                            \
            __mmask8 live = bp_tail8((n) - i);                                                    \
            _mm512_mask_storeu_pd((out) + i, live, VEC);                                          \
        }                                                                                         \
        _mm_sfence();                                                                             \
    } while (0)

#define BP_STREAM_PS(out, n, VEC)                                                                 \
    do {                                                                                          \
        const ptrdiff_t head_ = bp_to_line(out, sizeof(float), n);                                \
        ptrdiff_t i = 0;                                                                          \
        if (head_) {                                                                              \
            __mmask16 live = bp_tail16(head_);                                                    \
            _mm512_mask_storeu_ps((out), live, VEC);                                              \
        }                                                                                         \
        for (i = head_; i + 16 <= (n); i += 16) {                                                 \
            const __mmask16 live = 0xFFFF;                                                        \
            _mm512_stream_ps((out) + i, VEC);                                                     \
        }                                                                                         \
        if (i < (n)) {                                                                            \
            __mmask16 live = bp_tail16((n) - i);                                                  \
            _mm512_mask_storeu_ps((out) + i, live, VEC);                                          \
        }                                                                                         \
        _mm_sfence();                                                                             \
    } while (0)

BP_AVX512 static void bp_sigmoid_fwd_f64_avx512_stream(const double *restrict x, double *restrict out,
                                                       ptrdiff_t n)
{
    BP_STREAM_PD(out, n, bp_sigmoid_pd(_mm512_maskz_loadu_pd(live, x + i)));
}

BP_AVX512 static void bp_sigmoid_fwd_f32_avx512_stream(const float *restrict x, float *restrict out, ptrdiff_t n)
{
    BP_STREAM_PS(out, n, bp_sigmoid_ps(_mm512_maskz_loadu_ps(live, x + i)));
}

/* Sigmoid backward and the cross-entropy gradients have no AVX-512 loop
 * with regular stores: GCC's is as fast (at (1000, 1000) float64 a hand
 * one was 7-15% slower). These exist for the streaming stores, and follow
 * the portable loops' order of operations, so the results are the same bit
 * for bit (no product there is added to anything: nothing to contract). */
BP_AVX512 static void bp_sigmoid_bwd_f64_avx512_stream(const double *restrict dout, const double *restrict y,
                                                       double *restrict dx, ptrdiff_t n)
{
    const __m512d one = _mm512_set1_pd(1.0);
    BP_STREAM_PD(dx, n, _mm512_mul_pd(_mm512_mul_pd(_mm512_maskz_loadu_pd(live, dout + i),
        _mm512_sub_pd(one, _mm512_maskz_loadu_pd(live, y + i))), _mm512_maskz_loadu_pd(live, y + i)));
}

BP_AVX512 static void bp_sigmoid_bwd_f32_avx512_stream(const float *restrict dout, const float *restrict y,
                                                       float *restrict dx, ptrdiff_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    BP_STREAM_PS(dx, n, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, dout + i),
        _mm512_sub_ps(one, _mm512_maskz_loadu_ps(live, y + i))), _mm512_maskz_loadu_ps(live, y + i)));
}

/* dx = (y - t) * inv and dx = y * inv. */
BP_AVX512 static void bp_xent_onehot_bwd_f64_avx512_stream(const double *restrict y, const double *restrict t,
                                                           double *restrict dx, ptrdiff_t n, double inv)
{
    const __m512d vinv = _mm512_set1_pd(inv);
    BP_STREAM_PD(dx, n, _mm512_mul_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(live, y + i),
        _mm512_maskz_loadu_pd(live, t + i)), vinv));
}

BP_AVX512 static void bp_xent_onehot_bwd_f32_avx512_stream(const float *restrict y, const float *restrict t,
                                                           float *restrict dx, ptrdiff_t n, float inv)
{
    const __m512 vinv = _mm512_set1_ps(inv);
    BP_STREAM_PS(dx, n, _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, y + i),
        _mm512_maskz_loadu_ps(live, t + i)), vinv));
}

BP_AVX512 static void bp_scale_f64_avx512_stream(const double *restrict y, double *restrict dx, ptrdiff_t n,
                                                 double inv)
{
    const __m512d vinv = _mm512_set1_pd(inv);
    BP_STREAM_PD(dx, n, _mm512_mul_pd(_mm512_maskz_loadu_pd(live, y + i), vinv));
}

BP_AVX512 static void bp_scale_f32_avx512_stream(const float *restrict y, float *restrict dx, ptrdiff_t n,
                                                 float inv)
{
    const __m512 vinv = _mm512_set1_ps(inv);
    BP_STREAM_PS(dx, n, _mm512_mul_ps(_mm512_maskz_loadu_ps(live, y + i), vinv));
}

/* ReLU as the loops above, in 64-element blocks (64 mask bytes) between a
 * masked head that aligns out and a masked tail (bp_relu_fwd8 etc.). */
/* 64 elements of out streamed (out 64-byte aligned); returns their mask bits. */
BP_AVX512_INLINE uint64_t bp_relu_fwd64_pd(const double *x, double *out)
{
    uint64_t bits = 0;
    for (int b = 0; b < 8; b++) {
        __m512d v = _mm512_loadu_pd(x + 8 * b);
        __mmask8 k = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_LE_OQ);
        _mm512_stream_pd(out + 8 * b, _mm512_maskz_mov_pd((__mmask8)~k, v));
        bits |= (uint64_t)k << (8 * b);
    }
    return bits;
}

BP_AVX512_INLINE uint64_t bp_relu_fwd64_ps(const float *x, float *out)
{
    uint64_t bits = 0;
    for (int b = 0; b < 4; b++) {
        __m512 v = _mm512_loadu_ps(x + 16 * b);
        __mmask16 k = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LE_OQ);
        _mm512_stream_ps(out + 16 * b, _mm512_maskz_mov_ps((__mmask16)~k, v));
        bits |= (uint64_t)k << (16 * b);
    }
    return bits;
}

/* The whole 64-element blocks from i (where out is 64-byte aligned), out
 * and mask streamed; returns where the blocks end. The mask need not be
 * aligned where out is (NumPy gives big arrays the same 16-byte offset into
 * a page, and 64 mask bytes go with 8 or 4 lines of out), so each aligned
 * mask line is put together from the last m bits of the previous block and
 * the first 64 - m of this one. The first block's leading mask bytes and
 * the last block's trailing ones share a line with bytes outside the
 * blocks: masked regular stores for those. */
#define BP_RELU_FWD_BLOCKS(T, SUFFIX)                                                             \
BP_AVX512_INLINE ptrdiff_t bp_relu_fwd_blocks_##SUFFIX(const T *x, T *out, uint8_t *mask, ptrdiff_t i, \
                                                      ptrdiff_t n)                                \
{                                                                                                 \
    const __m512i ones = _mm512_set1_epi8(1);                                                     \
    const unsigned m = (unsigned)((uintptr_t)(mask + i) & 63);                                    \
    const ptrdiff_t start = i;                                                                    \
    uint64_t prev = 0;                                                                            \
    for (; i + 64 <= n; i += 64) {                                                                \
        uint64_t bits = bp_relu_fwd64_##SUFFIX(x + i, out + i);                                   \
        if (m == 0)                                                                               \
            _mm512_stream_si512((void *)(mask + i), _mm512_maskz_mov_epi8((__mmask64)bits, ones)); \
        else if (i == start)                                                                      \
            _mm512_mask_storeu_epi8((void *)(mask + i), (__mmask64)(~0ULL >> m),                  \
                                    _mm512_maskz_mov_epi8((__mmask64)bits, ones));                \
        else                                                                                      \
            _mm512_stream_si512((void *)(mask + i - m),                                           \
                                _mm512_maskz_mov_epi8((__mmask64)((prev >> (64 - m)) | (bits << m)), ones)); \
        prev = bits;                                                                              \
    }                                                                                             \
    if (m != 0 && i != start)                                                                     \
        _mm512_mask_storeu_epi8((void *)(mask + i - m), (__mmask64)((1ULL << m) - 1),             \
                                _mm512_maskz_mov_epi8((__mmask64)(prev >> (64 - m)), ones));      \
    return i;                                                                                     \
}
BP_RELU_FWD_BLOCKS(double, pd)
BP_RELU_FWD_BLOCKS(float, ps)

BP_AVX512 static void bp_relu_fwd_f64_avx512_stream(const double *restrict x, double *restrict out,
                                                    uint8_t *restrict mask, ptrdiff_t n)
{
    ptrdiff_t i = bp_to_line(out, sizeof *out, n);
    if (i)
        bp_relu_fwd8(x, out, mask, bp_tail8(i));
    for (i = bp_relu_fwd_blocks_pd(x, out, mask, i, n); i < n; i += 8)
        bp_relu_fwd8(x + i, out + i, mask + i, bp_tail8(n - i));
    _mm_sfence();
}

BP_AVX512 static void bp_relu_fwd_f32_avx512_stream(const float *restrict x, float *restrict out,
                                                    uint8_t *restrict mask, ptrdiff_t n)
{
    ptrdiff_t i = bp_to_line(out, sizeof *out, n);
    if (i)
        bp_relu_fwd16(x, out, mask, bp_tail16(i));
    for (i = bp_relu_fwd_blocks_ps(x, out, mask, i, n); i < n; i += 16)
        bp_relu_fwd16(x + i, out + i, mask + i, bp_tail16(n - i));
    _mm_sfence();
}

BP_AVX512 static void bp_relu_bwd_f64_avx512_stream(const double *restrict dout, const uint8_t *restrict mask,
                                                    double *restrict dx, ptrdiff_t n)
{
    ptrdiff_t i = bp_to_line(dx, sizeof *dx, n);
    if (i)
        bp_relu_bwd8(dout, mask, dx, bp_tail8(i));
    for (; i + 64 <= n; i += 64) {
        __m512i mb = _mm512_loadu_si512((const void *)(mask + i));
        uint64_t bits = (uint64_t)_mm512_test_epi8_mask(mb, mb);
        for (int b = 0; b < 8; b++)
            _mm512_stream_pd(dx + i + 8 * b, _mm512_maskz_loadu_pd((__mmask8)~(bits >> (8 * b)), dout + i + 8 * b));
    }
    for (; i < n; i += 8)
        bp_relu_bwd8(dout + i, mask + i, dx + i, bp_tail8(n - i));
    _mm_sfence();
}

BP_AVX512 static void bp_relu_bwd_f32_avx512_stream(const float *restrict dout, const uint8_t *restrict mask,
                                                    float *restrict dx, ptrdiff_t n)
{
    ptrdiff_t i = bp_to_line(dx, sizeof *dx, n);
    if (i)
        bp_relu_bwd16(dout, mask, dx, bp_tail16(i));
    for (; i + 64 <= n; i += 64) {
        __m512i mb = _mm512_loadu_si512((const void *)(mask + i));
        uint64_t bits = (uint64_t)_mm512_test_epi8_mask(mb, mb);
        for (int b = 0; b < 4; b++)
            _mm512_stream_ps(dx + i + 16 * b, _mm512_maskz_loadu_ps((__mmask16)~(bits >> (16 * b)), dout + i + 16 * b));
    }
    for (; i < n; i += 16)
        bp_relu_bwd16(dout + i, mask + i, dx + i, bp_tail16(n - i));
    _mm_sfence();
}

static int bp_avx512_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("fma");
}
#else
#define BPROP_HAVE_AVX512_PATH 0
static int bp_avx512_usable(void) { return 0; }
#endif

#endif
