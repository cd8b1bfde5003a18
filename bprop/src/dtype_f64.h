/* Names for instantiating a loop body for double; dtype_undef.h takes them
 * back. A header whose body is written once includes itself between these
 * (see portable.h). The vector names are only meaningful where
 * BP_HAVE_AVX512 is 1 (BP_HV and BP_HOP, 256-bit, also where BP_HAVE_AVX2
 * is) and are never expanded elsewhere. */
#define BP_T double
#define BP_FN(name) name##_f64          /* bp_relu_fwd -> bp_relu_fwd_f64 */
#define BP_EXP bp_exp_neg_f64           /* scalar exp(a), a <= 0 (exp.h) */
#define BP_I int64_t                    /* the signed integer as wide as BP_T (stdint.h) */
#define BP_INDEX 0                      /* its slot in per-dtype tables: [0] double, [1] float */

#define BP_L 8                          /* elements in one 512-bit register */
#define BP_V __m512d
#define BP_M __mmask8                   /* one bit per element of a BP_V */
#define BP_FULL ((__mmask8)0xFF)
#define BP_TAIL bp_tail8                /* mask of the first r < BP_L elements */
#define BP_VOP(op) _mm512_##op##_pd     /* BP_VOP(loadu) -> _mm512_loadu_pd */
#define BP_HV __m256d                   /* half a register, for narrow blocks */
#define BP_HOP(op) _mm256_##op##_pd
#define BP_VEXP bp_exp_neg_f64x8
#define BP_VSIGNS(v) _mm512_movepi64_mask(_mm512_castpd_si512(v))   /* sign bits */
/* Eight elements to and from doubles, for sums and scalings done in double. */
#define BP_LOAD_F64X8(live, p) _mm512_maskz_loadu_pd(live, p)
#define BP_STORE_F64X8(p, live, v) _mm512_mask_storeu_pd(p, live, v)
#define BP_VCMP_MASK _mm512_cmp_pd_mask
