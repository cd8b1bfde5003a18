/* Instantiates the body of the header named by BP_BODY (a string) once per
 * level that BP_LEVELS (platform.h) compiles, for the dtype in force
 * (dtype_f64.h or dtype_f32.h). The body defines its leveled functions as
 * BP_LEVELED ... BP_LFN(name); whatever else it defines must be guarded by
 * #if BP_LEVEL == 0, so that it is defined once. Included by portable.h,
 * gemm.h, batchnorm.h and optimizer.h between the dtype headers; no guard,
 * since it is meant to be included many times.
 */
#ifdef BP_BODY
#include "platform.h"

#define BP_LEVEL 0
#include BP_BODY
#undef BP_LEVEL
#if BP_LEVELS > 1
#define BP_LEVEL 1
#include BP_BODY
#undef BP_LEVEL
#define BP_LEVEL 2
#include BP_BODY
#undef BP_LEVEL
#endif
#endif
