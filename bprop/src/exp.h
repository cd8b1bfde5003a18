/* exp(a) for a <= 0 (or NaN): the only arguments sigmoid (exp(-|x|)) and
 * softmax (exp(x - max)) ever pass. Each type has its own polynomial and
 * constants, so these are written per type, not instantiated from one body.
 *
 * Scalar, bp_exp_neg_f64 / _f32, for the portable loops. Branch-free, so
 * that GCC vectorises the loops that call it. a = k ln2 + r with
 * |r| <= ln2/2 (Cody-Waite split of ln2, so k ln2 is exact), e^r by its
 * Taylor series (degree 13 in double, 7 in float: truncation below
 * 0.05 ulp), then scaled by 2^k through the exponent bits. The scale is
 * applied as 2^(k+512) * 2^-512 (2^(k+64) * 2^-64 in float) so results that
 * underflow into subnormals are rounded once, correctly.
 *
 * AVX-512, bp_exp_neg_f64x8 / _f32x16, for the hand-written loops.
 * a = (k/16) ln2 + r with |r| <= ln2/32, e^r - 1 as r + r^2 p(r), times
 * 2^(j/16) (j = k mod 16) from a 16-entry table held in registers and
 * picked with permutes, then scaled by 2^floor(k/16) with vscalef, which
 * rounds once, also into the subnormals.
 *
 * Both: -inf gives +0, NaN gives NaN, arguments below the clamp (-750 /
 * -760 in double, -110 in float) give +0. tests/test_exp_accuracy.py holds
 * sigmoid and softmax built on either to 4 and 5 ulp of a long-double
 * reference.
 */
#ifndef BP_EXP_H
#define BP_EXP_H
#include <stdint.h>
#include <string.h>
#include "platform.h"

static inline double bp_exp_neg_f64(double a)
{
    const double log2e = 0x1.71547652b82fep0, shift = 0x1.8p52;
    const double ln2_hi = 0x1.62e42fee00000p-1, ln2_lo = 0x1.a39ef35793c76p-33;
    a = a < -750.0 ? -750.0 : a;          /* NaN compares false and stays NaN */
    double kd = a * log2e + shift;        /* round(a / ln2) in the low bits */
    uint64_t kbits;
    memcpy(&kbits, &kd, sizeof kbits);
    kd -= shift;
    double r = (a - kd * ln2_hi) - kd * ln2_lo;
    double p = 1.0 / 6227020800.0;        /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* k is in [-1083, 0]; 2^(k+512) is a normal double. */
    uint64_t sbits = (kbits - 0x4338000000000000ULL + 1535) << 52;
    double s;
    memcpy(&s, &sbits, sizeof s);
    return (p * s) * 0x1p-512;
}

static inline float bp_exp_neg_f32(float a)
{
    const float log2e = 0x1.715476p0f, shift = 0x1.8p23f;
    const float ln2_hi = 0x1.62ep-1f, ln2_lo = 0x1.0bfbe8p-15f;
    a = a < -110.0f ? -110.0f : a;
    float kd = a * log2e + shift;
    uint32_t kbits;
    memcpy(&kbits, &kd, sizeof kbits);
    kd -= shift;
    float r = (a - kd * ln2_hi) - kd * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* k is in [-159, 0]; 2^(k+64) is a normal float. */
    uint32_t sbits = (kbits - 0x4B400000U + 191) << 23;
    float s;
    memcpy(&s, &sbits, sizeof s);
    return (p * s) * 0x1p-64f;
}

#if BP_HAVE_AVX512
/* Double: Cody-Waite split of ln2/16 (k ln2_hi is exact for |k| < 2^15);
 * p of degree 4 fitted by Remez's algorithm to minimise the largest error
 * relative to 1 over |r| <= ln2/32 (0.105 ulp at most, coefficients rounded
 * to double). Table entries are 2^(j/16) rounded to double (hi) and the
 * rounded remainder (lo), so the table adds no rounding of its own. */
BP_AVX512_INLINE __m512d bp_exp_neg_f64x8(__m512d a)
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

/* Float: the same with the Taylor series to r^4 and a one-register table. */
BP_AVX512_INLINE __m512 bp_exp_neg_f32x16(__m512 a)
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
#endif

#endif
