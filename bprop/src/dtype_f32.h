/* Names for instantiating a loop body for float (see dtype_f64.h). */
#define BP_T float
#define BP_FN(name) name##_f32
#define BP_EXP bp_exp_neg_f32
#define BP_I int32_t
#define BP_INDEX 1

#define BP_L 16
#define BP_V __m512
#define BP_M __mmask16
#define BP_FULL ((__mmask16)0xFFFF)
#define BP_TAIL bp_tail16
#define BP_VOP(op) _mm512_##op##_ps
#define BP_HV __m256
#define BP_HOP(op) _mm256_##op##_ps
#define BP_VEXP bp_exp_neg_f32x16
#define BP_VSIGNS(v) _mm512_movepi32_mask(_mm512_castps_si512(v))
#define BP_LOAD_F64X8(live, p) _mm512_cvtps_pd(_mm256_maskz_loadu_ps(live, p))
#define BP_STORE_F64X8(p, live, v) _mm256_mask_storeu_ps(p, live, _mm512_cvtpd_ps(v))
#define BP_VCMP_MASK _mm512_cmp_ps_mask
