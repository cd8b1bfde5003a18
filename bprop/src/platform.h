/* What the loops may assume about the compiler and the CPU.
 *
 * Per-CPU levels of the portable loops. A header whose body is written once
 * (portable.h, gemm.h, batchnorm.h, optimizer.h) instantiates it per dtype
 * and per level through levels.h: level 0 is the baseline the compiler
 * targets by default; where the build has per-CPU versions (BP_LEVELS 3:
 * setup.py defines BPROP_CLONES when the compiler takes target attributes
 * and __builtin_cpu_supports, GCC and clang on x86-64) level 1 is the same
 * C compiled for x86-64-v3 (AVX2, FMA, BMI2) and level 2 for x86-64-v4
 * (AVX-512 F/BW/CD/DQ/VL). dispatch.h picks one level at import
 * (bp_level); every call goes through BP_AT. Inside a body:
 *
 * BP_LEVELED  in front of a leveled function: static, compiled for the
 *             level's instruction set and never inlined into another level.
 * BP_LFN(f)   the name of f for the current dtype and level (f_f64_l1).
 * BP_AT(fn)   outside the bodies: the level-`bp_level` version of fn
 *             (fn names the dtype, as bp_relu_fwd_portable_f64), a function
 *             designator to call. One switch on a variable set once: the
 *             branch is always predicted, and the kernels take microseconds.
 * BP_LEVELS   1 or 3. With 1 (no per-CPU versions: other compilers and
 *             architectures, or a build with BPROP_NO_CLONES=1) only the
 *             baseline is compiled and BP_AT names it directly.
 *
 * BP_HAVE_AVX512
 *             1 when the hand-written AVX-512 loops are compiled in; they
 *             run only where bp_avx512_usable() says the CPU and OS have
 *             AVX-512 F/BW/VL/DQ and FMA. BP_AVX512 / BP_AVX512_INLINE
 *             mark functions compiled for that instruction set.
 * BP_HAVE_AVX2
 *             1 when the AVX2 + FMA small products (gemm_avx2.h) are
 *             compiled in: on x86-64 with GCC or clang (not clang-cl, whose
 *             __builtin_cpu_supports needs a runtime MSVC's linker lacks),
 *             whose target attribute compiles one function for AVX2
 *             without build flags, whether or not BPROP_CLONES is set.
 *             They run only where bp_avx2_usable() says the CPU and OS
 *             have AVX2 and FMA.
 *             BP_AVX2 / BP_AVX2_INLINE mark functions compiled for them.
 * restrict    C99's keyword; spelled __restrict for MSVC, which the portable
 *             loops are meant to compile with (everything GCC-specific is
 *             behind an #if).
 */
#ifndef BP_PLATFORM_H
#define BP_PLATFORM_H

#if defined(_MSC_VER) && !defined(__clang__) && !defined(restrict)
#define restrict __restrict
#endif

#define BP_CAT_(a, b) a##b
#define BP_CAT(a, b) BP_CAT_(a, b)

/* The level numbers, as bp_level and bp_cpu_level() give them. */
#define BP_LEVEL_BASE 0
#define BP_LEVEL_V3 1
#define BP_LEVEL_V4 2

#if defined(BPROP_CLONES) && defined(__GNUC__) && defined(__x86_64__)
#define BP_LEVELS 3
#include <immintrin.h>
/* The instruction sets are the features bp_cpu_level() checks, so that a
 * level never runs an instruction the check did not see (clang's
 * __builtin_cpu_supports knows neither movbe nor f16c, part of x86-64-v3). */
#define BP_V3_TARGET "avx,avx2,fma,bmi,bmi2,popcnt"
#define BP_V4_TARGET BP_V3_TARGET ",avx512f,avx512bw,avx512cd,avx512dq,avx512vl"
#define BP_LEVEL_ATTR_0 static
#define BP_LEVEL_ATTR_1 __attribute__((target(BP_V3_TARGET), noinline)) static
#define BP_LEVEL_ATTR_2 __attribute__((target(BP_V4_TARGET), noinline)) static

/* The best level this CPU (and OS: the checks include the saved register
 * state) runs. */
static int bp_cpu_level(void)
{
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi")
          && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt")))
        return BP_LEVEL_BASE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512cd")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return BP_LEVEL_V4;
    return BP_LEVEL_V3;
}

#define BP_HAVE_AVX512 1
#define BP_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512dq,fma"
#define BP_AVX512 __attribute__((target(BP_AVX512_TARGET), noinline))
#define BP_AVX512_INLINE __attribute__((target(BP_AVX512_TARGET), always_inline)) static inline

static int bp_avx512_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("fma");
}
#else
#define BP_LEVELS 1
#define BP_LEVEL_ATTR_0 static
static int bp_cpu_level(void) { return BP_LEVEL_BASE; }
#define BP_HAVE_AVX512 0
static int bp_avx512_usable(void) { return 0; }
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define BP_HAVE_AVX2 1
#include <immintrin.h>
#define BP_AVX2_TARGET "avx2,fma"
#define BP_AVX2 __attribute__((target(BP_AVX2_TARGET), noinline))
#define BP_AVX2_INLINE __attribute__((target(BP_AVX2_TARGET), always_inline)) static inline

/* __builtin_cpu_supports also checks that the OS saves the YMM registers. */
static int bp_avx2_usable(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define BP_HAVE_AVX2 0
static int bp_avx2_usable(void) { return 0; }
#endif

/* The level the portable loops run at: set by bp_select_level (dispatch.h),
 * never above bp_cpu_level(). */
static int bp_level = BP_LEVEL_BASE;

#if BP_LEVELS > 1
#define BP_AT(fn) (bp_level == BP_LEVEL_V4 ? BP_CAT(fn, _l2) : bp_level == BP_LEVEL_V3 ? BP_CAT(fn, _l1) : BP_CAT(fn, _l0))
#else
#define BP_AT(fn) BP_CAT(fn, _l0)
#endif

#define BP_LEVELED BP_CAT(BP_LEVEL_ATTR_, BP_LEVEL)
#define BP_LFN(name) BP_CAT(BP_FN(name), BP_CAT(_l, BP_LEVEL))

#endif
