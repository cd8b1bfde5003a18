/* What the loops may assume about the compiler and the CPU.
 *
 * BP_CLONES   in front of a portable loop: GCC compiles it for x86-64-v4,
 *             x86-64-v3 (AVX2 + FMA) and baseline x86-64 and picks one at
 *             load time (target_clones), so one build runs well on any
 *             x86-64 CPU. setup.py defines BPROP_CLONES when the compiler
 *             links a target_clones probe. Elsewhere a plain static function.
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

#if defined(BPROP_CLONES) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), noinline))
#else
#define BP_CLONES static
#endif

#if defined(BPROP_CLONES) && defined(__GNUC__) && defined(__x86_64__)
#define BP_HAVE_AVX512 1
#include <immintrin.h>
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

#endif
