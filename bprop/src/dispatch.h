/* The one header _kernels.pyx includes. It decides which loop runs, and
 * gives each kernel a chunk function (split.h) that _kernels.pyx hands to
 * bp_split:
 *
 * - the AVX-512 loops (avx512.h) when bp_use_avx512 is set, else the
 *   portable ones (portable.h) at level bp_level (platform.h);
 *   bp_select_avx512 and bp_select_level set them, once at import and
 *   again only through set_simd;
 * - streaming stores when a call's whole result is at least
 *   bp_stream_min_bytes (bp_stream_for, decided once per call, so that an
 *   array streams or not whatever the thread count). 32 MiB is at or above
 *   the last-level cache of common CPUs: a result that size has mostly
 *   left the cache by the time the next layer reads it, so the line reads
 *   of regular stores buy nothing, while a smaller one is usually read back
 *   from cache, and streaming it would make that read a miss.
 *
 * The chunk functions are written once below the #else and instantiated
 * per type; bp_<kernel>_chunks[dtype] picks one, [0] float64, [1] float32.
 */
#ifndef BP_T
#ifndef BP_DISPATCH_H
#define BP_DISPATCH_H
#include <stddef.h>
#include <stdint.h>
#include "platform.h"
#include "split.h"
#include "portable.h"
#include "avx512.h"
#include "gemm.h"

static int bp_use_avx512 = 0;
/* Changed only by the tests (_kernels._stream_min_bytes). */
static ptrdiff_t bp_stream_min_bytes = (ptrdiff_t)32 << 20;

static int bp_stream_for(ptrdiff_t bytes) { return bytes >= bp_stream_min_bytes; }
static int bp_avx512_available(void) { return BP_HAVE_AVX512 && bp_avx512_usable(); }
static int bp_avx512_selected(void) { return bp_use_avx512; }

static int bp_select_avx512(int want)
{
    bp_use_avx512 = want && bp_avx512_available();
    return bp_use_avx512;
}

/* AVX2 + FMA code may run: the build compiled it and the CPU has it. */

/* Run the portable loops at level `want` (platform.h's BP_LEVEL_*), or at
 * the best this CPU has if that is lower; returns the level chosen. */
static int bp_select_level(int want)
{
    const int top = bp_cpu_level();
    bp_level = want < top ? want : top;
    return bp_level;
}
static int bp_level_selected(void) { return bp_level; }
static int bp_level_available(void) { return bp_cpu_level(); }

/* The loop `name` for the selected path. _STREAM: with `stream` set, the
 * AVX-512 loop with streaming stores. _STREAM_ONLY: for kernels whose only
 * AVX-512 loop is the streaming one. */
#if BP_HAVE_AVX512
#define BP_PICK(name, ...) \
    (bp_use_avx512 ? BP_FN(name##_avx512)(__VA_ARGS__) : BP_AT(BP_FN(name##_portable))(__VA_ARGS__))
#define BP_PICK_STREAM(name, stream, ...) \
    ((stream) && bp_use_avx512 ? BP_FN(name##_avx512_stream)(__VA_ARGS__) : BP_PICK(name, __VA_ARGS__))
#define BP_PICK_STREAM_ONLY(name, stream, ...) \
    ((stream) && bp_use_avx512 ? BP_FN(name##_avx512_stream)(__VA_ARGS__) : BP_AT(BP_FN(name##_portable))(__VA_ARGS__))
#else
#define BP_PICK(name, ...) BP_AT(BP_FN(name##_portable))(__VA_ARGS__)
#define BP_PICK_STREAM(name, stream, ...) ((void)(stream), BP_AT(BP_FN(name##_portable))(__VA_ARGS__))
#define BP_PICK_STREAM_ONLY BP_PICK_STREAM
#endif

#include "dtype_f64.h"
#include "dispatch.h"
#include "dtype_undef.h"
#include "dtype_f32.h"
#include "dispatch.h"
#include "dtype_undef.h"

#define BP_CHUNKS(kernel) static const bp_chunk_fn kernel##_chunks[2] = {kernel##_chunk_f64, kernel##_chunk_f32}
BP_CHUNKS(bp_relu_fwd);
BP_CHUNKS(bp_relu_bwd);
BP_CHUNKS(bp_sigmoid_fwd);
BP_CHUNKS(bp_sigmoid_bwd);
BP_CHUNKS(bp_add_bias);
BP_CHUNKS(bp_column_sum);
BP_CHUNKS(bp_softmax);
BP_CHUNKS(bp_xent_labels_fwd);
BP_CHUNKS(bp_xent_onehot_fwd);
BP_CHUNKS(bp_xent_labels_bwd);
BP_CHUNKS(bp_xent_onehot_bwd);
#undef BP_CHUNKS
#endif /* BP_DISPATCH_H */

#else /* the body, for one BP_T */

#define BP_SRC(a) ((const BP_T *)(a)->src)
#define BP_SRC2(a) ((const BP_T *)(a)->src2)
#define BP_DST(a) ((BP_T *)(a)->dst)

static inline double BP_FN(bp_softmax_row)(const BP_T *x, BP_T *y, ptrdiff_t c, BP_T *mx)
{
    return BP_PICK(bp_softmax_row, x, y, c, mx);
}

static inline void BP_FN(bp_gemm)(const BP_T *A, ptrdiff_t ars, ptrdiff_t acs, const BP_T *B, ptrdiff_t ldb,
                                  BP_T *C, ptrdiff_t ldc, const BP_T *bias, ptrdiff_t rows, ptrdiff_t cols,
                                  ptrdiff_t K)
{
    /* Not BP_PICK: bp_gemm_portable is one function that picks the AVX2 or
     * the leveled scalar loop itself (gemm.h). */
#if BP_HAVE_AVX512
    if (bp_use_avx512) {
        BP_FN(bp_gemm_avx512)(A, ars, acs, B, ldb, C, ldc, bias, rows, cols, K);
        return;
    }
#endif
    BP_FN(bp_gemm_portable)(A, ars, acs, B, ldb, C, ldc, bias, rows, cols, K);
}

/* Affine's backward for dout (n x m), x (n x d), W (d x m): dx = dout @ W.T
 * (skipped when dx is NULL; wt holds W.T, d x m elements, NULL only when
 * that is empty), dW = x.T @ dout and db = the column sums of dout. */
static void BP_FN(bp_affine_grads)(const BP_T *dout, const BP_T *x, const BP_T *W, BP_T *wt, BP_T *dx,
                                   BP_T *dW, BP_T *db, ptrdiff_t n, ptrdiff_t d, ptrdiff_t m)
{
    if (dx) {
        if (wt)
            BP_FN(bp_transpose)(W, wt, d, m);
        /* With m == 0 the product is zeros and never reads wt. */
        BP_FN(bp_gemm)(dout, m, 1, wt, d, dx, d, NULL, n, d, m);
    }
    BP_FN(bp_gemm)(x, 1, d, dout, m, dW, m, NULL, d, m, n);
    BP_AT(BP_FN(bp_column_sum))(dout, m, db, n, m);
}

/* Elementwise chunks: items are elements of src, src2, dst (and mask). */

/* src x, dst out, mask the mask. */

static double BP_FN(bp_relu_fwd_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    BP_PICK_STREAM(bp_relu_fwd, a->stream, BP_SRC(a) + lo, BP_DST(a) + lo, a->mask + lo, hi - lo);
    return 0;
}

/* src dout, src2 the mask. */
static double BP_FN(bp_relu_bwd_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    BP_PICK_STREAM(bp_relu_bwd, a->stream, BP_SRC(a) + lo, (const uint8_t *)a->src2 + lo, BP_DST(a) + lo, hi - lo);
    return 0;
}

static double BP_FN(bp_sigmoid_fwd_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    if (bp_np_on && !bp_use_avx512) {
        BP_AT(BP_FN(bp_sigmoid_fwd_numpy))(BP_SRC(a) + lo, BP_DST(a) + lo, hi - lo);
        return 0;
    }
    BP_PICK_STREAM(bp_sigmoid_fwd, a->stream, BP_SRC(a) + lo, BP_DST(a) + lo, hi - lo);
    return 0;
}

/* src dout, src2 y. */
static double BP_FN(bp_sigmoid_bwd_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    BP_PICK_STREAM_ONLY(bp_sigmoid_bwd, a->stream, BP_SRC(a) + lo, BP_SRC2(a) + lo, BP_DST(a) + lo, hi - lo);
    return 0;
}

/* dst = (y - t) / rows for src y, src2 t: the 1/rows rounded in BP_T. */
static double BP_FN(bp_xent_onehot_bwd_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    const BP_T inv = (BP_T)1 / (BP_T)a->rows;
    BP_PICK_STREAM_ONLY(bp_xent_onehot_bwd, a->stream, BP_SRC(a) + lo, BP_SRC2(a) + lo, BP_DST(a) + lo, hi - lo,
                        inv);
    return 0;
}

/* Row chunks: items are rows of `cols` elements. */

/* dst rows += bias src2. */
static double BP_FN(bp_add_bias_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    BP_AT(BP_FN(bp_add_bias))(BP_DST(a) + lo * a->cols, BP_SRC2(a), hi - lo, a->cols);
    return 0;
}

static double BP_FN(bp_softmax_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    const ptrdiff_t c = a->cols;
    BP_T mx;
    for (ptrdiff_t i = lo; i < hi; i++)
        BP_FN(bp_softmax_row)(BP_SRC(a) + i * c, BP_DST(a) + i * c, c, &mx);
    return 0;
}

/* Softmax of each row; returns the sum over the rows of
 * logsumexp(x_i) - x_i[label_i], added in row order. */
static double BP_FN(bp_xent_labels_fwd_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    const ptrdiff_t c = a->cols;
    const BP_T *x = BP_SRC(a);
    double total = 0;
    for (ptrdiff_t i = lo; i < hi; i++) {
        BP_T mx;
        double ls = BP_FN(bp_softmax_row)(x + i * c, BP_DST(a) + i * c, c, &mx);
        total += ((double)mx - (double)x[i * c + a->labels[i]]) + ls;
    }
    return total;
}

/* The same against targets src2: sum_j t_ij (logsumexp(x_i) - x_ij). */
static double BP_FN(bp_xent_onehot_fwd_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    const ptrdiff_t c = a->cols;
    const BP_T *x = BP_SRC(a), *t = BP_SRC2(a);
    double total = 0;
    for (ptrdiff_t i = lo; i < hi; i++) {
        BP_T mx;
        double ls = BP_FN(bp_softmax_row)(x + i * c, BP_DST(a) + i * c, c, &mx);
        for (ptrdiff_t j = i * c; j < i * c + c; j++) {
            double tj = (double)t[j];
            /* Zero targets are skipped: 0 * (max - (-inf)) would be NaN. */
            if (tj != 0)
                total += tj * (((double)mx - (double)x[j]) + ls);
        }
    }
    return total;
}

/* dst = (y - onehot(labels)) / rows for src y: every element scaled, then
 * each row's label element recomputed with 1 subtracted before scaling, as
 * the book does. */
static double BP_FN(bp_xent_labels_bwd_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    const ptrdiff_t c = a->cols;
    const BP_T *y = BP_SRC(a);
    BP_T *dx = BP_DST(a);
    const BP_T inv = (BP_T)1 / (BP_T)a->rows;
    BP_PICK_STREAM_ONLY(bp_scale, a->stream, y + lo * c, dx + lo * c, (hi - lo) * c, inv);
    for (ptrdiff_t i = lo; i < hi; i++) {
        const ptrdiff_t j = i * c + a->labels[i];
        dx[j] = (y[j] - (BP_T)1) * inv;
    }
    return 0;
}

/* Column chunks: items are columns of src (rows x cols). */
static double BP_FN(bp_column_sum_chunk)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi)
{
    BP_AT(BP_FN(bp_column_sum))(BP_SRC(a) + lo, a->cols, BP_DST(a) + lo, a->rows, hi - lo);
    return 0;
}

#undef BP_SRC
#undef BP_SRC2
#undef BP_DST

#endif
