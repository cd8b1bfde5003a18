/* Batch normalisation loops (BatchNormalization's training forward and its
 * backward), instantiated for double and float from batchnorm_impl.h. */
#ifndef BPROP_BATCHNORM_H
#define BPROP_BATCHNORM_H

#include <Python.h>
#include <math.h>

#if defined(__GNUC__) || defined(__clang__)
#define BP_RESTRICT __restrict__
#elif defined(_MSC_VER)
#define BP_RESTRICT __restrict
#else
#define BP_RESTRICT
#endif

/* Per-CPU versions picked at load time where GCC can make them, as for the
 * other loops: one build runs on any x86-64 CPU. */
#if defined(BPROP_CLONES) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), noinline))
#else
#define BN_CLONES static
#endif

#define BN_T double
#define BN_NAME(stem) stem##_f64
#include "batchnorm_impl.h"
#undef BN_T
#undef BN_NAME

#define BN_T float
#define BN_NAME(stem) stem##_f32
#include "batchnorm_impl.h"
#undef BN_T
#undef BN_NAME

#endif
