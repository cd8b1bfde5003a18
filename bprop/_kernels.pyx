# cython: language_level=3
"""Typed kernels behind bprop's layers (compiled twin of ``_numpy_kernels``).

Design (docs/DESIGN.md follows one call through)
------
Two layers:

1. the loops, in C under ``bprop/src`` (``dispatch.h`` is the one header
   included here; it picks between the portable and the AVX-512 loops and
   gives each kernel a chunk function);
2. the ``def`` entry points here, one per kernel: they check every array
   they are handed, fill a ``bp_args`` and hand the kernel's chunk function
   to ``_split``, which releases the GIL and splits large calls between
   OpenMP threads. (Affine's products are single calls.)

Arrays are read through the NumPy C-API rather than typed memoryviews:
acquiring a memoryview and a fused-type ``def``'s dispatch each cost more
than the arithmetic at the book's sizes (100 x 50); ``_arg`` checks an array
in a few nanoseconds instead.

Every entry point checks at entry that the arrays it is handed are C-ordered,
aligned, native float32/float64 (int64 labels, bool masks) of the sizes it
indexes, so even a direct call with bad arguments raises (KernelTypeError or
KernelValueError, both KernelArgumentError) instead of reading out of bounds.
The Python layer (``bprop.layers``) does the user-facing validation; these
checks are the last line. Elementwise kernels take arrays of any shape and
treat them as flat. ``dtype`` is always the NumPy type number of the float
arrays; ``t`` is always a target (labels or one-hot).
"""
import os

# Refusals are their own types so that callers can tell them from real failures.
from bprop._errors import KernelTypeError as _RefusedType, KernelValueError as _RefusedValue

cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cnp.import_array()

cdef extern from "src/dispatch.h" nogil:
    int BP_HAVE_OPENMP
    int bp_omp_max_threads()
    int bp_select_avx512(int want)
    int bp_avx512_available()
    int bp_avx512_selected()
    int BP_LEVELS
    int bp_select_level(int want)
    int bp_level_selected()
    int bp_level_available()
    int bp_gemm_select_avx2(int want)
    Py_ssize_t bp_stream_min_bytes
    int bp_stream_for(Py_ssize_t nbytes)

    ctypedef struct bp_args:
        const void* src
        const void* src2
        void* dst
        uint8_t* mask
        const int64_t* labels
        Py_ssize_t cols
        Py_ssize_t rows
        int stream
    ctypedef double (*bp_chunk_fn)(const bp_args* a, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil
    double bp_split(bp_chunk_fn f, const bp_args* a, Py_ssize_t n, Py_ssize_t grain, int threads)

    # Chunk functions by dtype: [0] float64, [1] float32 (_chunk_fn).
    const bp_chunk_fn bp_relu_fwd_chunks[2]
    const bp_chunk_fn bp_relu_bwd_chunks[2]
    const bp_chunk_fn bp_sigmoid_fwd_chunks[2]
    const bp_chunk_fn bp_sigmoid_bwd_chunks[2]
    const bp_chunk_fn bp_add_bias_chunks[2]
    const bp_chunk_fn bp_column_sum_chunks[2]
    const bp_chunk_fn bp_softmax_chunks[2]
    const bp_chunk_fn bp_xent_labels_fwd_chunks[2]
    const bp_chunk_fn bp_xent_onehot_fwd_chunks[2]
    const bp_chunk_fn bp_xent_labels_bwd_chunks[2]
    const bp_chunk_fn bp_xent_onehot_bwd_chunks[2]

    void bp_gemm_f64(const double* A, Py_ssize_t ars, Py_ssize_t acs, const double* B, Py_ssize_t ldb,
                     double* C, Py_ssize_t ldc, const double* bias, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t K)
    void bp_gemm_f32(const float* A, Py_ssize_t ars, Py_ssize_t acs, const float* B, Py_ssize_t ldb,
                     float* C, Py_ssize_t ldc, const float* bias, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t K)
    void bp_affine_grads_f64(const double* dout, const double* x, const double* W, double* wt, double* dx,
                             double* dW, double* db, Py_ssize_t n, Py_ssize_t d, Py_ssize_t m)
    void bp_affine_grads_f32(const float* dout, const float* x, const float* W, float* wt, float* dx,
                             float* dW, float* db, Py_ssize_t n, Py_ssize_t d, Py_ssize_t m)

# Threads pay off only where a kernel's work dwarfs OpenMP's fork/join (a
# few microseconds, far more when another core is busy), so kernels stay
# serial below this many element-operations; the book's (100, 784) ReLU,
# 78,400 elements, is just above it and gains from a second free core.
cdef Py_ssize_t _PARALLEL_MIN = 1 << 16
# One thread unless OMP_NUM_THREADS asks for more: on a shared machine a
# second thread that has to wait for a busy core makes a call many times slower.
cdef int _num_threads = bp_omp_max_threads() if (BP_HAVE_OPENMP and os.environ.get("OMP_NUM_THREADS")) else 1


#: The levels the portable loops are compiled at, by number (platform.h's
#: BP_LEVEL_*); a build without per-CPU versions has only the first.
LEVELS = ("baseline", "x86-64-v3", "x86-64-v4")
SIMD_PATHS = ("auto", "avx512", "portable") + LEVELS[::-1]


def set_simd(str name):
    """Pick the loops the kernels run.

    Parameters
    ----------
    name : str
        "auto": the hand-written AVX-512 loops where the CPU has AVX-512,
        else the portable ones at the best level this CPU has;
        "avx512": the AVX-512 loops (ValueError where they cannot run);
        "portable": the portable loops at the best level this CPU has;
        "x86-64-v4", "x86-64-v3", "baseline": the portable loops at that
        level (ValueError where this CPU or build has not got it).
    """
    if name not in SIMD_PATHS:
        raise ValueError(f"set_simd: unknown path {name!r}; choose one of {', '.join(SIMD_PATHS)}")
    if name == "avx512" and not bp_avx512_available():
        raise ValueError("set_simd: this CPU (or this build) has no AVX-512 path; use 'portable' or 'auto'")
    # Without a level named, the best this CPU and build have (baseline only,
    # in a build without per-CPU versions).
    want = LEVELS.index(name) if name in LEVELS else bp_level_available()
    if want > bp_level_available():
        raise ValueError(f"set_simd: this CPU (or this build) cannot run the {name} loops; "
                         f"the best it has is {LEVELS[bp_level_available()]}")
    bp_select_avx512(name in ("auto", "avx512"))
    bp_select_level(want)
    # Affine's AVX2 small products run at x86-64-v3 and above; a build
    # without per-CPU versions still takes them where the CPU has AVX2 and
    # FMA (they are checked at run time, and the baseline has no small-product
    # loop that beats BLAS at the book's sizes).
    bp_gemm_select_avx2(want >= 1 or BP_LEVELS == 1)


def get_simd():
    """The loops in use: "avx512" (the hand-written ones) or "portable"."""
    return "avx512" if bp_avx512_selected() else "portable"


def simd_level():
    """The level the portable loops run at: "x86-64-v4", "x86-64-v3" or "baseline"."""
    return LEVELS[bp_level_selected()]


def per_cpu_versions():
    """True when the build compiled the portable loops per CPU level (False: baseline code only)."""
    return BP_LEVELS > 1


# AVX-512 where it runs; bprop._backend then applies BPROP_SIMD, where a bad
# value is a warning rather than a failed import.
set_simd("auto")


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(BP_HAVE_OPENMP)


def get_num_threads():
    """Threads the kernels use for arrays above the parallel threshold."""
    return _num_threads


def set_num_threads(int n):
    """Set the kernels' thread count (clamped to 1 without OpenMP)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = n if BP_HAVE_OPENMP else 1


def default_num_threads():
    """OpenMP's default thread count (OMP_NUM_THREADS or the CPU count)."""
    return bp_omp_max_threads() if BP_HAVE_OPENMP else 1


cdef inline int _threads_for(Py_ssize_t work) noexcept nogil:
    # OpenMP's own limit (omp_set_num_threads, as threadpoolctl uses) caps ours.
    if work < _PARALLEL_MIN or _num_threads == 1:
        return 1
    return min(_num_threads, bp_omp_max_threads())


# What a kernel's chunk function counts in bp_split: elements, whose chunks
# start on multiples of 64 so that no two threads write one cache line, or
# rows (columns for column_sum), split as evenly as they go.
cdef enum:
    _ELEMENTS = 64
    _ROWS = 1


cdef inline bp_args _args(cnp.ndarray src, cnp.ndarray src2, cnp.ndarray dst, Py_ssize_t rows,
                          Py_ssize_t cols) noexcept:
    """A chunk function's arguments: the arrays' data (NULL for None), the row count and length.
    The kernel entry sets the other fields its chunk function reads; they start zero."""
    cdef bp_args a
    memset(&a, 0, sizeof(a))
    a.src = cnp.PyArray_DATA(src)
    a.src2 = cnp.PyArray_DATA(src2) if src2 is not None else NULL
    a.dst = cnp.PyArray_DATA(dst)
    a.rows = rows
    a.cols = cols
    return a


cdef inline double _split(const bp_chunk_fn* chunks, int dtype, bp_args* a, Py_ssize_t n,
                          Py_ssize_t grain, Py_ssize_t work) noexcept:
    """Run the kernel of ``chunks`` (one chunk function per dtype) over its n items, on as many
    threads as ``work`` element-operations pay for; returns the sum of the chunks' results."""
    cdef bp_chunk_fn f = chunks[dtype == cnp.NPY_FLOAT]
    cdef int nt = _threads_for(work)
    cdef double total
    with nogil:
        # Serial calls go to f directly: bp_split inlined here would put its
        # OpenMP set-up on the serial path of every entry.
        if nt == 1:
            total = f(a, 0, n)
        else:
            total = bp_split(f, a, n, grain, nt)
    return total


def _stream_min_bytes(n=None):
    """Tests only: the result size (bytes) from which the AVX-512 loops stream
    their stores; sets it to n when given. Returns the previous value."""
    global bp_stream_min_bytes
    cdef Py_ssize_t old = bp_stream_min_bytes
    if n is not None:
        if n < 0:
            raise ValueError(f"_stream_min_bytes: n must be >= 0, got {n}")
        bp_stream_min_bytes = n
    return old


# Whether to stream is decided here, once per call, on everything the call
# writes, not in the loops on each thread's chunk: what matters is whether
# the whole result still fits in the cache for the next layer, and deciding
# per chunk would make the same array stream or not with the thread count.
cdef inline int _stream(cnp.ndarray a) noexcept:
    return bp_stream_for(cnp.PyArray_NBYTES(a))


cdef enum:
    _IN = 0
    _OUT = 1

cdef int _REQUIRED = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED


cdef int _arg(str fn, str name, cnp.ndarray a, int typenum, int out) except -1:
    """Check one array; returns its type number. typenum -1 means float32 or float64."""
    cdef int flags = cnp.PyArray_FLAGS(a)
    cdef int dtype = cnp.PyArray_TYPE(a)
    if (flags & _REQUIRED) != _REQUIRED:
        raise _RefusedValue(f"{fn}: {name} must be C-contiguous and aligned")
    if out and not (flags & cnp.NPY_ARRAY_WRITEABLE):
        raise _RefusedValue(f"{fn}: {name} is an output and must be writeable")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise _RefusedType(f"{fn}: {name} must be in native byte order, got dtype {a.dtype}")
    if typenum == -1:
        if dtype != cnp.NPY_DOUBLE and dtype != cnp.NPY_FLOAT:
            raise _RefusedType(f"{fn}: {name} must be float32 or float64, got dtype {a.dtype}")
    elif dtype != typenum and not (typenum == cnp.NPY_UINT8 and dtype == cnp.NPY_BOOL):
        raise _RefusedType(f"{fn}: {name} has dtype {a.dtype}; expected {cnp.PyArray_DescrFromType(typenum)}")
    return dtype


cdef inline cnp.ndarray _new_like(cnp.ndarray a, int typenum):
    # C-level allocation: less than half of np.empty's cost from Python, which
    # is a noticeable part of a layer call at the book's (100, 50).
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a), typenum, 0)


cdef inline int _same_size(str fn, cnp.ndarray a, cnp.ndarray b) except -1:
    if cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(b):
        raise _RefusedValue(f"{fn}: size mismatch ({(<object>a).size} vs {(<object>b).size} elements)")
    return 0


cdef inline int _matrix(str fn, str name, cnp.ndarray a, Py_ssize_t n, Py_ssize_t c) except -1:
    if cnp.PyArray_NDIM(a) != 2 or a.shape[0] != n or a.shape[1] != c:
        raise _RefusedValue(f"{fn}: {name} must have shape ({n}, {c}), got {(<object>a).shape}")
    return 0


cdef inline int _vector(str fn, str name, cnp.ndarray a, Py_ssize_t m) except -1:
    if cnp.PyArray_NDIM(a) != 1 or a.shape[0] != m:
        raise _RefusedValue(f"{fn}: {name} must have shape ({m},), got {(<object>a).shape}")
    return 0


cdef inline int _rows(str fn, str name, cnp.ndarray a) except -1:
    if cnp.PyArray_NDIM(a) != 2:
        raise _RefusedValue(f"{fn}: {name} must be 2-D, got shape {(<object>a).shape}")
    return 0


# --- Elementwise: ReLU and sigmoid -------------------------------------------

cdef enum:
    _SAME = -2  # _map: src2 has src's dtype


cdef cnp.ndarray _map(str fn, const bp_chunk_fn* chunks, Py_ssize_t cost, str src_name, cnp.ndarray src,
                      str src2_name, cnp.ndarray src2, int src2_type, str dst_name, cnp.ndarray dst):
    """dst = f(src[, src2]) elementwise, for the kernels of that shape: checks the arrays (src
    float32 or float64; src2, unless None, of type src2_type; dst, allocated when None, of src's
    type; all of one size), then runs ``chunks`` over the elements, each costing ``cost``
    element-operations. Returns dst."""
    cdef int dtype = _arg(fn, src_name, src, -1, _IN)
    if dst is None:
        dst = _new_like(src, dtype)
    if src2 is not None:
        _arg(fn, src2_name, src2, dtype if src2_type == _SAME else src2_type, _IN)
    _arg(fn, dst_name, dst, dtype, _OUT)
    if src2 is not None:
        _same_size(fn, src, src2)
    _same_size(fn, src, dst)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(src)
    if n == 0:
        return dst
    cdef bp_args a = _args(src, src2, dst, 0, 0)
    a.stream = _stream(dst)
    _split(chunks, dtype, &a, n, _ELEMENTS, cost * n)
    return dst


def relu_forward(cnp.ndarray x not None, cnp.ndarray out, cnp.ndarray mask):
    """mask = x <= 0; out = 0 where mask else x. Returns (out, mask); None outputs are allocated."""
    cdef str fn = "relu_forward"
    cdef int dtype = _arg(fn, "x", x, -1, _IN)
    if out is None:
        out = _new_like(x, dtype)
    if mask is None:
        mask = _new_like(x, cnp.NPY_BOOL)
    _arg(fn, "out", out, dtype, _OUT)
    _arg(fn, "mask", mask, cnp.NPY_UINT8, _OUT)
    _same_size(fn, x, out)
    _same_size(fn, x, mask)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    if n == 0:
        return out, mask
    cdef bp_args a = _args(x, None, out, 0, 0)
    a.mask = <uint8_t*>cnp.PyArray_DATA(mask)
    a.stream = bp_stream_for(cnp.PyArray_NBYTES(out) + cnp.PyArray_NBYTES(mask))
    _split(bp_relu_fwd_chunks, dtype, &a, n, _ELEMENTS, n)
    return out, mask


def relu_backward(cnp.ndarray dout not None, cnp.ndarray mask not None, cnp.ndarray dx):
    """dx = 0 where mask else dout. Returns dx; None is allocated."""
    return _map("relu_backward", bp_relu_bwd_chunks, 1, "dout", dout, "mask", mask, cnp.NPY_UINT8, "dx", dx)


def sigmoid_forward(cnp.ndarray x not None, cnp.ndarray out):
    """out = 1 / (1 + exp(-x)), overflow-free. Returns out; None is allocated."""
    # exp makes an element cost about 8 copies' worth: threads pay off sooner.
    return _map("sigmoid_forward", bp_sigmoid_fwd_chunks, 8, "x", x, None, None, 0, "out", out)


def sigmoid_backward(cnp.ndarray dout not None, cnp.ndarray out not None, cnp.ndarray dx):
    """dx = dout * (1 - out) * out. Returns dx; None is allocated."""
    return _map("sigmoid_backward", bp_sigmoid_bwd_chunks, 1, "dout", dout, "out", out, _SAME, "dx", dx)


# --- Affine: bias and column sums; whole small products (src/gemm.h) ----------

cdef extern from "src/dispatch.h" nogil:
    int bp_gemm_loops(int avx512_selected)

# set_simd chose whether the AVX2 products run (at x86-64-v3 and above).
_GEMM_LOOPS = ("portable", "avx2", "avx512")


def small_product_loops():
    """The loops under affine_forward and affine_backward: "avx512" or "avx2" (register-blocked,
    faster than a BLAS call through NumPy at the book's sizes) or "portable" (a plain loop)."""
    return _GEMM_LOOPS[bp_gemm_loops(bp_avx512_selected())]


def _avx2_products(on=None):
    """Tests only: with on False the products leave the AVX2 loops for the plain one (unless the
    AVX-512 loops are selected); on True takes them back where this CPU has them. Returns whether
    they were in use."""
    cdef int before = bp_gemm_loops(0) == 1
    if on is not None:
        bp_gemm_select_avx2(bool(on))
    return bool(before)


cdef int _rows_and_vector(str fn, str a_name, cnp.ndarray a, int a_out, str v_name, cnp.ndarray v,
                          int v_out) except -1:
    """Check a (N, M), float32 or float64, and v (M,) of a's type; returns the type."""
    cdef int dtype = _arg(fn, a_name, a, -1, a_out)
    _arg(fn, v_name, v, dtype, v_out)
    _rows(fn, a_name, a)
    _vector(fn, v_name, v, a.shape[1])
    return dtype


def add_bias(cnp.ndarray y not None, cnp.ndarray b not None):
    """y += b, row by row (in place, after y = x @ W)."""
    cdef int dtype = _rows_and_vector("add_bias", "y", y, _OUT, "b", b, _IN)
    cdef Py_ssize_t n = y.shape[0], m = y.shape[1]
    if n == 0 or m == 0:
        return
    cdef bp_args a = _args(y, b, y, n, m)
    _split(bp_add_bias_chunks, dtype, &a, n, _ROWS, n * m)


def column_sum(cnp.ndarray a not None, cnp.ndarray out not None):
    """out[j] = sum_i a[i, j], rows added in order (as NumPy's axis-0 sum)."""
    cdef int dtype = _rows_and_vector("column_sum", "a", a, _IN, "out", out, _OUT)
    cdef Py_ssize_t n = a.shape[0], m = a.shape[1]
    if m == 0:
        return
    # n == 0 leaves the zero-filled sums, as np.sum does.
    cdef bp_args args = _args(a, None, out, n, m)
    # Split by columns, so that each sum still adds its rows in order.
    _split(bp_column_sum_chunks, dtype, &args, m, _ELEMENTS, n * m)


cdef inline cnp.ndarray _new_array(int nd, Py_ssize_t d0, Py_ssize_t d1, int typenum):
    """An uninitialised C array of shape (d0,) or (d0, d1)."""
    cdef cnp.npy_intp dims[2]
    dims[0] = d0
    dims[1] = d1
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


cdef inline int _disjoint(str fn, str name, cnp.ndarray out, cnp.ndarray a, str a_name) except -1:
    # The products read their inputs after writing parts of out: an output
    # overlapping an input would give wrong numbers, so it is refused.
    cdef char* o = <char*>cnp.PyArray_DATA(out)
    cdef char* p = <char*>cnp.PyArray_DATA(a)
    if o < p + cnp.PyArray_NBYTES(a) and p < o + cnp.PyArray_NBYTES(out):
        raise _RefusedValue(f"{fn}: {name} overlaps {a_name} in memory")
    return 0


cdef int _affine_args(str fn, int dtype, cnp.ndarray x, cnp.ndarray W,
                      Py_ssize_t* n, Py_ssize_t* d, Py_ssize_t* m) except -1:
    """Check x (N, D) and W (D, M) of type dtype (-1: x's, float32 or float64); set N, D and M.
    Returns the type."""
    dtype = _arg(fn, "x", x, dtype, _IN)
    _arg(fn, "W", W, dtype, _IN)
    _rows(fn, "x", x)
    _rows(fn, "W", W)
    n[0], d[0], m[0] = x.shape[0], x.shape[1], W.shape[1]
    _matrix(fn, "W", W, d[0], m[0])
    return dtype


def affine_forward(cnp.ndarray x not None, cnp.ndarray W not None, cnp.ndarray b not None, cnp.ndarray out):
    """out = x @ W + b for x (N, D), W (D, M), b (M,): each element summed over D in order from
    zero, then b added, as x @ W + b rounds. Returns out; None is allocated."""
    cdef str fn = "affine_forward"
    cdef Py_ssize_t n, d, m
    cdef int dtype = _affine_args(fn, -1, x, W, &n, &d, &m)
    _arg(fn, "b", b, dtype, _IN)
    _vector(fn, "b", b, m)
    if out is None:
        out = _new_array(2, n, m, dtype)
    else:
        _arg(fn, "out", out, dtype, _OUT)
        _matrix(fn, "out", out, n, m)
        _disjoint(fn, "out", out, x, "x")
        _disjoint(fn, "out", out, W, "W")
        _disjoint(fn, "out", out, b, "b")
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* wp = cnp.PyArray_DATA(W)
    cdef void* bp = cnp.PyArray_DATA(b)
    cdef void* op = cnp.PyArray_DATA(out)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_gemm_f64(<double*>xp, d, 1, <double*>wp, m, <double*>op, m, <double*>bp, n, m, d)
        else:
            bp_gemm_f32(<float*>xp, d, 1, <float*>wp, m, <float*>op, m, <float*>bp, n, m, d)
    return out


def affine_backward(cnp.ndarray dout not None, cnp.ndarray x not None, cnp.ndarray W not None,
                    bint input_grad):
    """Affine's gradients for x (N, D), W (D, M), dout (N, M): returns (dx, dW, db) with
    dx = dout @ W.T (None unless input_grad), dW = x.T @ dout, db = dout summed over rows
    (each summed in order from zero), all newly allocated."""
    cdef str fn = "affine_backward"
    cdef int dtype = _arg(fn, "dout", dout, -1, _IN)
    cdef Py_ssize_t n, d, m
    _affine_args(fn, dtype, x, W, &n, &d, &m)
    _matrix(fn, "dout", dout, n, m)
    cdef cnp.ndarray dW = _new_array(2, d, m, dtype)
    cdef cnp.ndarray db = _new_array(1, m, 0, dtype)
    cdef cnp.ndarray dx = _new_array(2, n, d, dtype) if input_grad else None
    cdef size_t itemsize = 8 if dtype == cnp.NPY_DOUBLE else 4
    # dx's product needs W.T row by row: a transposed copy, d * m elements.
    cdef void* wt = NULL
    if input_grad and d * m:
        wt = malloc(d * m * itemsize)
        if wt == NULL:
            raise MemoryError(f"{fn}: no memory for a ({m}, {d}) copy of W.T")
    cdef void* gp = cnp.PyArray_DATA(dout)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* wp = cnp.PyArray_DATA(W)
    cdef void* xgp = cnp.PyArray_DATA(dx) if input_grad else NULL
    cdef void* wgp = cnp.PyArray_DATA(dW)
    cdef void* bgp = cnp.PyArray_DATA(db)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_affine_grads_f64(<double*>gp, <double*>xp, <double*>wp, <double*>wt, <double*>xgp,
                                <double*>wgp, <double*>bgp, n, d, m)
        else:
            bp_affine_grads_f32(<float*>gp, <float*>xp, <float*>wp, <float*>wt, <float*>xgp,
                                <float*>wgp, <float*>bgp, n, d, m)
    free(wt)
    return dx, dW, db


# --- Softmax and cross-entropy: row kernels -------------------------------------

cdef int _softmax_args(str fn, cnp.ndarray x, cnp.ndarray y) except -1:
    """Check x (N, C), float32 or float64, and the output y of x's type and shape; returns the type."""
    cdef int dtype = _arg(fn, "x", x, -1, _IN)
    _arg(fn, "y", y, dtype, _OUT)
    _rows(fn, "x", x)
    _matrix(fn, "y", y, x.shape[0], x.shape[1])
    return dtype


def softmax_forward(cnp.ndarray x not None, cnp.ndarray y not None):
    """y = softmax(x) row-wise, with the row max subtracted first."""
    cdef int dtype = _softmax_args("softmax_forward", x, y)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1]
    if n == 0 or c == 0:
        return
    cdef bp_args a = _args(x, None, y, n, c)
    _split(bp_softmax_chunks, dtype, &a, n, _ROWS, 8 * n * c)


cdef inline Py_ssize_t _first_bad_label(const int64_t* labels, Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if labels[i] < 0 or labels[i] >= c:
            return i
    return -1


cdef int _labels(str fn, cnp.ndarray t, Py_ssize_t n, Py_ssize_t c) except -1:
    """Check labels t (N,), int64, each in [0, c)."""
    _arg(fn, "t", t, cnp.NPY_INT64, _IN)
    if cnp.PyArray_NDIM(t) != 1 or t.shape[0] != n:
        raise _RefusedValue(f"{fn}: t must have shape ({n},), got {(<object>t).shape}")
    cdef Py_ssize_t bad = _first_bad_label(<int64_t*>cnp.PyArray_DATA(t), n, c)
    if bad >= 0:
        raise _RefusedValue(f"{fn}: label {t[bad]} out of range [0, {c})")
    return 0


def softmax_xent_labels_forward(cnp.ndarray x not None, cnp.ndarray t not None, cnp.ndarray y not None):
    """y = softmax(x); returns mean_i (logsumexp(x_i) - x_i[t_i]) as a float."""
    cdef str fn = "softmax_xent_labels_forward"
    cdef int dtype = _softmax_args(fn, x, y)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1]
    _labels(fn, t, n, c)
    if n == 0:
        return float("nan")
    cdef bp_args a = _args(x, None, y, n, c)
    a.labels = <int64_t*>cnp.PyArray_DATA(t)
    return _split(bp_xent_labels_fwd_chunks, dtype, &a, n, _ROWS, 8 * n * c) / n


def softmax_xent_onehot_forward(cnp.ndarray x not None, cnp.ndarray t not None, cnp.ndarray y not None):
    """y = softmax(x); returns mean_i sum_j t_ij (logsumexp(x_i) - x_ij)."""
    cdef str fn = "softmax_xent_onehot_forward"
    cdef int dtype = _arg(fn, "x", x, -1, _IN)
    _arg(fn, "t", t, dtype, _IN)
    _arg(fn, "y", y, dtype, _OUT)
    _rows(fn, "x", x)
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1]
    _matrix(fn, "t", t, n, c)
    _matrix(fn, "y", y, n, c)
    if n == 0:
        return float("nan")
    if c == 0:
        raise _RefusedValue(f"{fn}: x has no classes (shape {(<object>x).shape})")
    cdef bp_args a = _args(x, t, y, n, c)
    return _split(bp_xent_onehot_fwd_chunks, dtype, &a, n, _ROWS, 8 * n * c) / n


cdef cnp.ndarray _xent_backward(str fn, cnp.ndarray y, cnp.ndarray t, cnp.ndarray dx, bint labels):
    """dx = (y - T) / N for y (N, C), with T the one-hot of labels t (N,) or t (N, C) itself;
    dx is allocated when None. Returns dx."""
    cdef int dtype = _arg(fn, "y", y, -1, _IN)
    if dx is None:
        dx = _new_like(y, dtype)
    _arg(fn, "dx", dx, dtype, _OUT)
    _rows(fn, "y", y)
    cdef Py_ssize_t n = y.shape[0], c = y.shape[1]
    _matrix(fn, "dx", dx, n, c)
    if labels:
        _labels(fn, t, n, c)
    else:
        _arg(fn, "t", t, dtype, _IN)
        _matrix(fn, "t", t, n, c)
    if n == 0 or c == 0:
        return dx
    cdef bp_args a = _args(y, None if labels else t, dx, n, c)
    a.stream = _stream(dx)
    if labels:
        a.labels = <int64_t*>cnp.PyArray_DATA(t)
        _split(bp_xent_labels_bwd_chunks, dtype, &a, n, _ROWS, n * c)
    else:
        _split(bp_xent_onehot_bwd_chunks, dtype, &a, n * c, _ELEMENTS, n * c)
    return dx


def softmax_xent_labels_backward(cnp.ndarray y not None, cnp.ndarray t not None, cnp.ndarray dx):
    """dx = (y - onehot(t)) / N. Returns dx; None is allocated."""
    return _xent_backward("softmax_xent_labels_backward", y, t, dx, True)


def softmax_xent_onehot_backward(cnp.ndarray y not None, cnp.ndarray t not None, cnp.ndarray dx):
    """dx = (y - t) / N. Returns dx; None is allocated."""
    return _xent_backward("softmax_xent_onehot_backward", y, t, dx, False)


include "_kernels_numpy_loops.pxi"
include "_kernels_batchnorm.pxi"
include "_kernels_optimizer.pxi"
include "_kernels_conv.pxi"
