/* Math and OpenMP glue for _kernels.pyx.
 *
 * BPROP_VECTOR_EXP (set by setup.py for GCC on x86-64) re-declares exp/expf
 * with GCC's simd attribute: with -fno-math-errno GCC then vectorises loops
 * that call them into glibc's vector math library (libmvec), which keeps
 * IEEE semantics for NaN/inf, unlike -ffast-math.
 */
#ifndef BPROP_KERNELS_MATH_H
#define BPROP_KERNELS_MATH_H
#include <math.h>

#ifdef BPROP_VECTOR_EXP
__attribute__((simd("notinbranch"))) extern double exp(double);
__attribute__((simd("notinbranch"))) extern float expf(float);
#endif

#define bp_exp(x) exp(x)
#define bp_expf(x) expf(x)

#ifdef _OPENMP
#define BPROP_HAVE_OPENMP 1
#else
#define BPROP_HAVE_OPENMP 0
#endif

#endif
