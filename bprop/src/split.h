/* One kernel call split between threads: the arguments every chunk
 * function takes, the chunk function's signature, and the split itself.
 * The OpenMP glue lives here and nowhere else.
 */
#ifndef BP_SPLIT_H
#define BP_SPLIT_H
#include <stddef.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#define BP_HAVE_OPENMP 1
static int bp_omp_max_threads(void) { return omp_get_max_threads(); }
#else
#define BP_HAVE_OPENMP 0
static int bp_omp_max_threads(void) { return 1; }
#endif

/* What one kernel call works on. Each chunk function (dispatch.h) says
 * which fields it reads; the caller has checked every size they imply. */
typedef struct {
    const void *src;        /* the first input: x, dout or y */
    const void *src2;       /* the second input: a mask, sigmoid's y, one-hot t, a bias */
    void *dst;              /* the output */
    uint8_t *mask;          /* ReLU's mask, an output */
    const int64_t *labels;  /* class labels, each in [0, cols) */
    ptrdiff_t cols;         /* the row length of 2-D arrays */
    ptrdiff_t rows;         /* their row count (the N of a 1/N) */
    int stream;             /* write dst with streaming stores (dispatch.h) */
} bp_args;

/* A kernel's work on items [lo, hi) of a call (elements, rows or columns,
 * as the kernel says), independent of every other chunk's. Returns the
 * chunk's part of a sum (the losses), else 0. */
typedef double (*bp_chunk_fn)(const bp_args *a, ptrdiff_t lo, ptrdiff_t hi);

/* f over items [0, n) in `threads` contiguous chunks, one per thread, whose
 * boundaries are multiples of `grain` (64 elements: no two threads write
 * one cache line); returns the sum of what the chunks return. One thread
 * calls f once, outside any OpenMP region: even a one-thread region costs
 * about a microsecond, as much as a whole kernel at the book's sizes. */
static double bp_split(bp_chunk_fn f, const bp_args *a, ptrdiff_t n, ptrdiff_t grain, int threads)
{
    if (threads <= 1)
        return f(a, 0, n);
    const ptrdiff_t chunk = ((n + threads - 1) / threads + grain - 1) / grain * grain;
    double total = 0;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
#endif
    for (int c = 0; c < threads; c++) {
        const ptrdiff_t lo = c * chunk;
        if (lo < n)
            total += f(a, lo, lo + chunk < n ? lo + chunk : n);
    }
    return total;
}

#endif
