/* Innermost loops of bprop's kernels, called from _kernels.pyx.
 *
 * Why C and not Cython loops: Cython cannot say `restrict`, and without it
 * GCC did not vectorise the float64 ReLU loop (the uint8 mask may alias
 * anything), which then ran branchy at 3-6 ns/element instead of ~0.3.
 * Cython also cannot ask for per-CPU clones: BP_CLONES compiles each loop
 * for x86-64-v4, x86-64-v3 (AVX2 + FMA) and baseline x86-64 and picks one
 * at load time (GCC target_clones), so one wheel runs on any x86-64 CPU.
 * ReLU, sigmoid, the softmax rows and the cross-entropy gradients also
 * have hand-written AVX-512 loops (_kernels_avx512.h), some only to write
 * big results with streaming stores; the names at the end of this file
 * pick between the two sets. Affine's small matrix products are in
 * _kernels_gemm.h. Each loop is one pass, no temporaries; the Cython layer
 * checks sizes, releases the GIL and splits work between threads.
 */
#ifndef BPROP_KERNELS_LOOPS_H
#define BPROP_KERNELS_LOOPS_H
#include <stddef.h>
#include <stdint.h>
#include "_kernels_math.h"
#include "_kernels_avx512.h"

/* 1 while the hand-written AVX-512 loops run instead of the portable ones
 * (bp_select_avx512; set once at import, changed only by set_simd). */
static int bp_use_avx512 = 0;

/* Results of at least this many bytes (everything one call writes, over
 * all its threads) are written with streaming stores by the AVX-512 loops.
 * 32 MiB is at or above the last-level cache of common CPUs (a Zen 4 CCD's
 * L3 is 32 MiB, desktop Intel parts have 24-36 MiB): a result that size
 * has mostly left the cache by the time the next layer reads it, so the
 * line reads that regular stores pay (read-for-ownership) buy nothing. A
 * smaller result is usually read back from cache by the next layer, and
 * streaming it to memory would make that read a miss. Changed only by
 * the tests (_kernels._stream_min_bytes). */
static ptrdiff_t bp_stream_min_bytes = (ptrdiff_t)32 << 20;

static int bp_stream_for(ptrdiff_t bytes) { return bytes >= bp_stream_min_bytes; }

static int bp_avx512_available(void) { return BPROP_HAVE_AVX512_PATH && bp_avx512_usable(); }
static int bp_avx512_selected(void) { return bp_use_avx512; }

static int bp_select_avx512(int want)
{
    bp_use_avx512 = want && bp_avx512_available();
    return bp_use_avx512;
}

#if defined(BPROP_CLONES) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define BP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), noinline))
#else
#define BP_CLONES static
#endif

#define BP_ELEMENTWISE(T, S, EXP)                                                                 \
BP_CLONES void bp_relu_fwd_##S##_portable(const T *restrict x, T *restrict out, uint8_t *restrict mask,   \
                               ptrdiff_t n)                                                       \
{                                                                                                 \
    /* Select, not branch: vectorises; NaN compares false and passes through. */                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                                           \
        T v = x[i];                                                                               \
        int m = v <= 0;                                                                           \
        mask[i] = (uint8_t)m;                                                                     \
        out[i] = m ? (T)0 : v;                                                                    \
    }                                                                                             \
}                                                                                                 \
BP_CLONES void bp_relu_bwd_##S##_portable(const T *restrict dout, const uint8_t *restrict mask,           \
                               T *restrict dx, ptrdiff_t n)                                       \
{                                                                                                 \
    for (ptrdiff_t i = 0; i < n; i++)                                                             \
        dx[i] = mask[i] ? (T)0 : dout[i];                                                         \
}                                                                                                 \
BP_CLONES void bp_sigmoid_fwd_##S##_portable(const T *restrict x, T *restrict out, ptrdiff_t n)           \
{                                                                                                 \
    /* exp(-|x|) never overflows: x >= 0 gives 1/(1+e), x < 0 gives e/(1+e). */                  \
    for (ptrdiff_t i = 0; i < n; i++) {                                                           \
        T v = x[i];                                                                               \
        T e = EXP(v >= 0 ? -v : v);                                                               \
        T r = (T)1 / ((T)1 + e);                                                                  \
        out[i] = v >= 0 ? r : e * r;                                                              \
    }                                                                                             \
}                                                                                                 \
BP_CLONES void bp_sigmoid_bwd_##S##_portable(const T *restrict dout, const T *restrict y,       \
                                           T *restrict dx, ptrdiff_t n)                           \
{                                                                                                 \
    for (ptrdiff_t i = 0; i < n; i++)                                                             \
        dx[i] = dout[i] * ((T)1 - y[i]) * y[i];                                                   \
}                                                                                                 \
BP_CLONES void bp_add_bias_##S(T *restrict y, const T *restrict b, ptrdiff_t n, ptrdiff_t m)   \
{                                                                                                 \
    for (ptrdiff_t i = 0; i < n; i++) {                                                           \
        T *restrict row = y + i * m;                                                              \
        for (ptrdiff_t j = 0; j < m; j++)                                                         \
            row[j] += b[j];                                                                       \
    }                                                                                             \
}                                                                                                 \
BP_CLONES void bp_column_sum_##S(const T *restrict a, T *restrict out, ptrdiff_t n, ptrdiff_t m)\
{                                                                                                 \
    /* Rows added in order, as NumPy's axis-0 sum does for C-ordered input. */                   \
    for (ptrdiff_t j = 0; j < m; j++)                                                             \
        out[j] = 0;                                                                               \
    for (ptrdiff_t i = 0; i < n; i++) {                                                           \
        const T *restrict row = a + i * m;                                                        \
        for (ptrdiff_t j = 0; j < m; j++)                                                         \
            out[j] += row[j];                                                                     \
    }                                                                                             \
}                                                                                                 \
BP_CLONES double bp_softmax_row_##S##_portable(const T *restrict x, T *restrict y, ptrdiff_t c, T *mx_out)\
{                                                                                                 \
    /* y = softmax(x); returns log(sum(exp(x - max))) and stores max in       \
     * *mx_out: callers form (max - x_j) + log(sum), which keeps a loss of    \
     * log 2 exact next to scores of 1e20. A NaN in                           \
     * the row makes the sum NaN and so the whole row, as in the book. */                        \
    /* Eight running maxima so the loop vectorises; NaN is never selected   \
     * here, but exp(NaN - mx) below still turns the row into NaN. */                             \
    T m8[8];                                                                                      \
    for (int k = 0; k < 8; k++)                                                                   \
        m8[k] = x[0];                                                                             \
    ptrdiff_t j8 = 0;                                                                             \
    for (; j8 + 8 <= c; j8 += 8)                                                                  \
        for (int k = 0; k < 8; k++)                                                               \
            m8[k] = x[j8 + k] > m8[k] ? x[j8 + k] : m8[k];                                        \
    T mx = m8[0];                                                                                 \
    for (int k = 1; k < 8; k++)                                                                   \
        mx = m8[k] > mx ? m8[k] : mx;                                                             \
    for (; j8 < c; j8++)                                                                          \
        mx = x[j8] > mx ? x[j8] : mx;                                                             \
    for (ptrdiff_t j = 0; j < c; j++)                                                             \
        y[j] = EXP(x[j] - mx);                                                                    \
    /* Eight partial sums in double: vectorisable without -ffast-math, and a   \
     * float32 row keeps float64 accuracy in its normaliser. */                                   \
    double s8[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                      \
    ptrdiff_t j = 0;                                                                              \
    for (; j + 8 <= c; j += 8)                                                                    \
        for (int k = 0; k < 8; k++)                                                               \
            s8[k] += (double)y[j + k];                                                            \
    double s = ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7]));         \
    for (; j < c; j++)                                                                            \
        s += (double)y[j];                                                                        \
    double inv = 1.0 / s;                                                                         \
    for (ptrdiff_t k = 0; k < c; k++)                                                             \
        y[k] = (T)((double)y[k] * inv);                                                           \
    *mx_out = mx;                                                                                 \
    return log(s);                                                                                \
}                                                                                                 \
/* Gradients scale by 1/N: a multiply, because a vector divide made the     \
 * backward pass divide-bound (26 us at (100, 784) against 8 us). */                               \
BP_CLONES void bp_xent_onehot_bwd_##S##_portable(const T *restrict y, const T *restrict t,     \
                                               T *restrict dx, ptrdiff_t n, T inv)                \
{                                                                                                 \
    for (ptrdiff_t i = 0; i < n; i++)                                                             \
        dx[i] = (y[i] - t[i]) * inv;                                                              \
}                                                                                                 \
BP_CLONES void bp_scale_##S##_portable(const T *restrict y, T *restrict dx, ptrdiff_t n, T inv)  \
{                                                                                                 \
    for (ptrdiff_t i = 0; i < n; i++)                                                             \
        dx[i] = y[i] * inv;                                                                       \
}

BP_ELEMENTWISE(double, f64, bp_exp_neg)
BP_ELEMENTWISE(float, f32, bp_expf_neg)

/* The names _kernels.pyx calls: the AVX-512 loop when selected, else the
 * portable one. With `stream` set (the caller found the result too big for
 * the cache), the AVX-512 loop with streaming stores instead; where there
 * is none but that one (BP_PICK_STREAM_ONLY), the portable loop otherwise. */
#if BPROP_HAVE_AVX512_PATH
#define BP_PICK(name, ...) (bp_use_avx512 ? name##_avx512(__VA_ARGS__) : name##_portable(__VA_ARGS__))
#define BP_PICK_STREAM(name, stream, ...) \
    ((stream) && bp_use_avx512 ? name##_avx512_stream(__VA_ARGS__) : BP_PICK(name, __VA_ARGS__))
#define BP_PICK_STREAM_ONLY(name, stream, ...) \
    ((stream) && bp_use_avx512 ? name##_avx512_stream(__VA_ARGS__) : name##_portable(__VA_ARGS__))
#else
#define BP_PICK(name, ...) name##_portable(__VA_ARGS__)
#define BP_PICK_STREAM(name, stream, ...) ((void)(stream), name##_portable(__VA_ARGS__))
#define BP_PICK_STREAM_ONLY BP_PICK_STREAM
#endif

#define BP_DISPATCH(T, S)                                                                         \
static inline void bp_relu_fwd_##S(const T *x, T *out, uint8_t *mask, ptrdiff_t n, int stream)  \
{ BP_PICK_STREAM(bp_relu_fwd_##S, stream, x, out, mask, n); }                                     \
static inline void bp_relu_bwd_##S(const T *dout, const uint8_t *mask, T *dx, ptrdiff_t n,       \
                                   int stream)                                                    \
{ BP_PICK_STREAM(bp_relu_bwd_##S, stream, dout, mask, dx, n); }                                   \
static inline void bp_sigmoid_fwd_##S(const T *x, T *out, ptrdiff_t n, int stream)               \
{ BP_PICK_STREAM(bp_sigmoid_fwd_##S, stream, x, out, n); }                                        \
static inline void bp_sigmoid_bwd_##S(const T *dout, const T *y, T *dx, ptrdiff_t n, int stream) \
{ BP_PICK_STREAM_ONLY(bp_sigmoid_bwd_##S, stream, dout, y, dx, n); }                              \
static inline void bp_xent_onehot_bwd_##S(const T *y, const T *t, T *dx, ptrdiff_t n, T inv,     \
                                          int stream)                                             \
{ BP_PICK_STREAM_ONLY(bp_xent_onehot_bwd_##S, stream, y, t, dx, n, inv); }                        \
static inline void bp_scale_##S(const T *y, T *dx, ptrdiff_t n, T inv, int stream)               \
{ BP_PICK_STREAM_ONLY(bp_scale_##S, stream, y, dx, n, inv); }                                     \
static inline double bp_softmax_row_##S(const T *x, T *y, ptrdiff_t c, T *mx_out)                \
{ return BP_PICK(bp_softmax_row_##S, x, y, c, mx_out); }

BP_DISPATCH(double, f64)
BP_DISPATCH(float, f32)

#include "_kernels_gemm.h"

#endif
