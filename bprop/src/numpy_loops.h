/* NumPy's own loops for the sigmoid and softmax forwards: the portable
 * loops borrow NumPy's exp, and Sigmoid its negative, add and divide too.
 *
 * Why: a build without per-CPU versions (BP_LEVELS 1: BPROP_BASELINE_ONLY,
 * MSVC, other compilers) compiles the portable loops for the baseline only,
 * SSE2 on x86-64: there exp.h's exp takes several times as long as NumPy's
 * on an AVX-512 CPU, and even a plain pass over the data twice as long.
 * NumPy compiles these loops per CPU itself (AVX2, AVX-512) and picks them
 * at import. The book's sigmoid and softmax run on the same loops; called
 * on blocks that stay in L1, with no temporary array and no Python call
 * between them, they cost bprop less than the book's chain of ufuncs.
 *
 * How: _kernels.pyx finds each loop for float64 and float32 in its ufunc's
 * table of inner loops (the public PyUFuncObject's types/functions/data:
 * the loop NumPy itself runs on contiguous arrays of that type) and
 * installs it with bp_np_install, only after checking that it gives the
 * ufunc's results bit for bit, called as the loops here call it. bp_np_on
 * is whether the portable loops use them: by default in x86-64 builds without
 * per-CPU versions, and only when all were installed. The AVX-512 loops
 * never do: their own exp is faster than NumPy's.
 *
 * Calls: on memory the kernel owns or writes (blocks of BP_NP_BLOCK elements
 * on the stack, a softmax row of the output), a scalar operand with step 0,
 * from any thread, with the GIL released: NumPy's float loops are plain C
 * that touch no Python object. They raise floating-point status flags as
 * IEEE says (NumPy's errstate reads them); NumPy clears the flags before
 * each of its own ufunc calls, so the flags left here warn nobody.
 */
#ifndef BP_NUMPY_LOOPS_H
#define BP_NUMPY_LOOPS_H
#include <fenv.h>
#include <stddef.h>
#include <stdint.h>
#include "platform.h"

/* A NumPy ufunc inner loop (PyUFuncGenericFunction; npy_intp is intptr_t). */
typedef void (*bp_ufunc_loop)(char **args, const intptr_t *dims, const intptr_t *steps, void *data);

/* The borrowed loops by operation, then by dtype as BP_INDEX numbers them
 * ([0] float64, [1] float32). */
enum { BP_NP_NEGATIVE, BP_NP_EXP, BP_NP_ADD, BP_NP_DIVIDE, BP_NP_OPS };
static bp_ufunc_loop bp_np_loop[BP_NP_OPS][2];
static void *bp_np_data[BP_NP_OPS][2];
static int bp_np_on = 0;

/* Elements per block in the sigmoid loop: its three blocks of doubles (x,
 * the buffer, out) take 24 KiB, inside an L1 data cache; NumPy's cost per
 * call (its checks, the remainder loop) is a few percent of a block's time. */
#define BP_NP_BLOCK 1024

#if defined(__x86_64__) || defined(_M_X64)
#define BP_NP_DEFAULT (BP_LEVELS == 1)
#else
/* Elsewhere (aarch64: NEON is the baseline) the portable loops are
 * vectorised as wide as NumPy's, which has no per-CPU exp to gain from. */
#define BP_NP_DEFAULT 0
#endif

static int bp_np_complete(void)
{
    for (int op = 0; op < BP_NP_OPS; op++)
        for (int t = 0; t < 2; t++)
            if (!bp_np_loop[op][t])
                return 0;
    return 1;
}

/* Install one loop (NULL takes it back: then none runs). */
static void bp_np_install(int op, int index, bp_ufunc_loop loop, void *data)
{
    bp_np_loop[op][index] = loop;
    bp_np_data[op][index] = data;
    bp_np_on = 0;
}

/* Turn the loops on or off (on only when all four are installed); want < 0
 * asks for the default. Returns whether they are on. */
static int bp_np_select(int want)
{
    bp_np_on = (want < 0 ? BP_NP_DEFAULT : want) && bp_np_complete();
    return bp_np_on;
}

static int bp_np_selected(void) { return bp_np_on; }

/* out[i] = op(a[i]) for i < n, elements of `size` bytes and type `index`
 * (BP_INDEX). Only while bp_np_on. */
static inline void bp_np_unary(int op, int index, const void *a, void *out, ptrdiff_t n, ptrdiff_t size)
{
    char *args[2] = {(char *)a, (char *)out};
    const intptr_t dims[1] = {(intptr_t)n};
    const intptr_t steps[2] = {(intptr_t)size, (intptr_t)size};
    bp_np_loop[op][index](args, dims, steps, bp_np_data[op][index]);
}

/* out[i] = op(a[i], b[i]), as bp_np_unary; a_step and b_step are 0 for a
 * scalar operand, else `size`. */
static inline void bp_np_binary(int op, int index, const void *a, ptrdiff_t a_step, const void *b, ptrdiff_t b_step,
                                void *out, ptrdiff_t n, ptrdiff_t size)
{
    char *args[3] = {(char *)a, (char *)b, (char *)out};
    const intptr_t dims[1] = {(intptr_t)n};
    const intptr_t steps[3] = {(intptr_t)a_step, (intptr_t)b_step, (intptr_t)size};
    bp_np_loop[op][index](args, dims, steps, bp_np_data[op][index]);
}

/* Whether an exp loop of type `index` is installed and raises the overflow flag
 * where exp overflows, as the sigmoid loop relies on. */
static int bp_np_exp_flags_overflow(int index)
{
    double d[5] = {0, -1, 1000, 2, 3};
    float f[5] = {0, -1, 100, 2, 3};
    if (!bp_np_loop[BP_NP_EXP][index])
        return 0;
    feclearexcept(FE_OVERFLOW);
    if (index == 0)
        bp_np_unary(BP_NP_EXP, 0, d, d, 5, sizeof(double));
    else
        bp_np_unary(BP_NP_EXP, 1, f, f, 5, sizeof(float));
    return fetestexcept(FE_OVERFLOW) != 0;
}

#endif
