/* Takes back the names dtype_f64.h and dtype_f32.h define. */
#undef BP_T
#undef BP_FN
#undef BP_EXP
#undef BP_I
#undef BP_L
#undef BP_V
#undef BP_M
#undef BP_FULL
#undef BP_TAIL
#undef BP_VOP
#undef BP_HV
#undef BP_HOP
#undef BP_VEXP
#undef BP_VSIGNS
#undef BP_LOAD_F64X8
#undef BP_STORE_F64X8
#undef BP_VCMP_MASK
