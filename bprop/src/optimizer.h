/* The book's optimizer updates (SGD, Momentum, Nesterov, AdaGrad, RMSprop,
 * Adam), instantiated for double and float from optimizer_impl.h. */
#ifndef BPROP_OPTIMIZER_H
#define BPROP_OPTIMIZER_H

#include <Python.h>
#include <math.h>

#if defined(__GNUC__) || defined(__clang__)
#define BP_RESTRICT __restrict__
#elif defined(_MSC_VER)
#define BP_RESTRICT __restrict
#else
#define BP_RESTRICT
#endif

/* The updates must round as NumPy does, one operation at a time: no a * b + c
 * contracted into a fused multiply-add, which the FMA-capable clones would
 * otherwise do. */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#elif defined(_MSC_VER)
#pragma fp_contract(off)
#endif

#if defined(BPROP_CLONES) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define OPT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), noinline))
#else
#define OPT_CLONES static
#endif

#define OPT_T double
#define OPT_SQRT sqrt
#define OPT_NAME(stem) stem##_f64
#include "optimizer_impl.h"
#undef OPT_T
#undef OPT_SQRT
#undef OPT_NAME

#define OPT_T float
#define OPT_SQRT sqrtf
#define OPT_NAME(stem) stem##_f32
#include "optimizer_impl.h"
#undef OPT_T
#undef OPT_SQRT
#undef OPT_NAME

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
