# cython: language_level=3
"""Typed kernels behind bprop's layers (compiled twin of ``_numpy_kernels``).

Design
------
Two layers:

1. the innermost loops, one pass per kernel and no temporaries, in
   ``_kernels_loops.h`` (C, because they need ``restrict`` and per-CPU
   clones to vectorise; the header says why);
2. the ``def`` entry points here, one per kernel, with caller-allocated
   outputs: they check every array they are handed, release the GIL and
   split large arrays between OpenMP threads.

Arrays are read through the NumPy C-API rather than typed memoryviews:
acquiring a memoryview costs ~0.16 us per argument and a fused-type ``def``
adds ~0.3 us of dispatch, which at the book's sizes (100 x 50) was more than
the arithmetic; ``_arg`` checks an array in a few nanoseconds instead.

Every entry point checks at entry that the arrays it is handed are C-ordered,
aligned, native float32/float64 (int64 labels, bool masks) of the sizes it
indexes, so even a direct call with bad arguments raises instead of reading
out of bounds. The Python layer (``bprop.layers``) does the user-facing
validation before it gets here; these checks are the last line.
Elementwise kernels take arrays of any shape and treat them as flat.
"""
import os

# Refusals are their own types so that callers can tell them from real failures.
from bprop._errors import KernelTypeError as _RefusedType, KernelValueError as _RefusedValue

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "_kernels_math.h" nogil:
    int BPROP_HAVE_OPENMP

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int bp_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int bp_omp_max_threads(void) { return 1; }
    #endif
    """
    int bp_omp_max_threads() nogil

cdef extern from "_kernels_loops.h" nogil:
    int bp_select_avx512(int want)
    int bp_avx512_available()
    int bp_avx512_selected()
    Py_ssize_t bp_stream_min_bytes
    int bp_stream_for(Py_ssize_t nbytes)
    void bp_relu_fwd_f64(const double* x, double* out, uint8_t* mask, Py_ssize_t n, int stream)
    void bp_relu_fwd_f32(const float* x, float* out, uint8_t* mask, Py_ssize_t n, int stream)
    void bp_relu_bwd_f64(const double* dout, const uint8_t* mask, double* dx, Py_ssize_t n, int stream)
    void bp_relu_bwd_f32(const float* dout, const uint8_t* mask, float* dx, Py_ssize_t n, int stream)
    void bp_sigmoid_fwd_f64(const double* x, double* out, Py_ssize_t n, int stream)
    void bp_sigmoid_fwd_f32(const float* x, float* out, Py_ssize_t n, int stream)
    void bp_sigmoid_bwd_f64(const double* dout, const double* y, double* dx, Py_ssize_t n, int stream)
    void bp_sigmoid_bwd_f32(const float* dout, const float* y, float* dx, Py_ssize_t n, int stream)
    void bp_add_bias_f64(double* y, const double* b, Py_ssize_t n, Py_ssize_t m)
    void bp_add_bias_f32(float* y, const float* b, Py_ssize_t n, Py_ssize_t m)
    void bp_column_sum_f64(const double* a, double* out, Py_ssize_t n, Py_ssize_t m)
    void bp_column_sum_f32(const float* a, float* out, Py_ssize_t n, Py_ssize_t m)
    double bp_softmax_row_f64(const double* x, double* y, Py_ssize_t c, double* mx)
    double bp_softmax_row_f32(const float* x, float* y, Py_ssize_t c, float* mx)
    void bp_xent_onehot_bwd_f64(const double* y, const double* t, double* dx, Py_ssize_t n, double inv, int stream)
    void bp_xent_onehot_bwd_f32(const float* y, const float* t, float* dx, Py_ssize_t n, float inv, int stream)
    void bp_scale_f64(const double* y, double* dx, Py_ssize_t n, double inv, int stream)
    void bp_scale_f32(const float* y, float* dx, Py_ssize_t n, float inv, int stream)
    void bp_gemm_f64(const double* A, Py_ssize_t ars, Py_ssize_t acs, const double* B, Py_ssize_t ldb,
                     double* C, Py_ssize_t ldc, const double* bias, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t K)
    void bp_gemm_f32(const float* A, Py_ssize_t ars, Py_ssize_t acs, const float* B, Py_ssize_t ldb,
                     float* C, Py_ssize_t ldc, const float* bias, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t K)
    void bp_affine_grads_f64(const double* dout, const double* x, const double* W, double* wt, double* dx,
                             double* dW, double* db, Py_ssize_t n, Py_ssize_t d, Py_ssize_t m)
    void bp_affine_grads_f32(const float* dout, const float* x, const float* W, float* wt, float* dx,
                             float* dW, float* db, Py_ssize_t n, Py_ssize_t d, Py_ssize_t m)

# Threads pay off only where a kernel's work dwarfs OpenMP's fork/join
# (1-2 us measured here, and far worse when the other core is busy), so
# kernels stay serial below this many element-operations. At 2**16 the
# book's (100, 784) ReLU (78,400 elements, ~16 us serial) splits: 10 us on
# two free cores. At 2**18 it stayed serial and PyTorch's 2-thread ReLU won.
cdef Py_ssize_t _PARALLEL_MIN = 1 << 16
# One thread unless OMP_NUM_THREADS asks for more: on a shared machine a
# second thread that has to wait for a busy core made runs many times slower.
cdef int _num_threads = bp_omp_max_threads() if (BPROP_HAVE_OPENMP and os.environ.get("OMP_NUM_THREADS")) else 1


SIMD_PATHS = ("auto", "avx512", "portable")


def set_simd(str name):
    """Pick the loops: "avx512" (hand-written, where the CPU has AVX-512), "portable"
    (GCC-vectorised, per-CPU clones) or "auto" (avx512 when available)."""
    if name not in SIMD_PATHS:
        raise ValueError(f"set_simd: unknown path {name!r}; choose one of {', '.join(SIMD_PATHS)}")
    if name == "avx512" and not bp_avx512_available():
        raise ValueError("set_simd: this CPU (or this build) has no AVX-512 path; use 'portable' or 'auto'")
    bp_select_avx512(name != "portable")


def get_simd():
    """The loops in use: "avx512" or "portable"."""
    return "avx512" if bp_avx512_selected() else "portable"


# BPROP_SIMD=portable keeps the portable loops (to compare, or to rule the
# hand-written ones out); unset or "auto" takes AVX-512 where it runs.
set_simd(os.environ.get("BPROP_SIMD", "").strip().lower() or "auto")


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(BPROP_HAVE_OPENMP)


def get_num_threads():
    """Threads the kernels use for arrays above the parallel threshold."""
    return _num_threads


def set_num_threads(int n):
    """Set the kernels' thread count (clamped to 1 without OpenMP)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _num_threads = n if BPROP_HAVE_OPENMP else 1


def default_num_threads():
    """OpenMP's default thread count (OMP_NUM_THREADS or the CPU count)."""
    return bp_omp_max_threads() if BPROP_HAVE_OPENMP else 1


cdef inline int _threads_for(Py_ssize_t work) noexcept nogil:
    # OpenMP's own limit (omp_set_num_threads, as threadpoolctl uses) caps ours.
    if work < _PARALLEL_MIN or _num_threads == 1:
        return 1
    return min(_num_threads, bp_omp_max_threads())


# Elementwise work is split into contiguous chunks, one per thread; chunk
# boundaries are multiples of 64 elements so threads never share a cache line.
cdef inline Py_ssize_t _chunk(Py_ssize_t n, int nt) noexcept nogil:
    return ((n + nt - 1) // nt + 63) & ~(<Py_ssize_t>63)


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
    cdef int t = cnp.PyArray_TYPE(a)
    if (flags & _REQUIRED) != _REQUIRED:
        raise _RefusedValue(f"{fn}: {name} must be C-contiguous and aligned")
    if out and not (flags & cnp.NPY_ARRAY_WRITEABLE):
        raise _RefusedValue(f"{fn}: {name} is an output and must be writeable")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise _RefusedType(f"{fn}: {name} must be in native byte order, got dtype {a.dtype}")
    if typenum == -1:
        if t != cnp.NPY_DOUBLE and t != cnp.NPY_FLOAT:
            raise _RefusedType(f"{fn}: {name} must be float32 or float64, got dtype {a.dtype}")
    elif t != typenum and not (typenum == cnp.NPY_UINT8 and t == cnp.NPY_BOOL):
        raise _RefusedType(f"{fn}: {name} has dtype {a.dtype}; expected {cnp.PyArray_DescrFromType(typenum)}")
    return t


cdef inline cnp.ndarray _new_like(cnp.ndarray a, int typenum):
    # C-level allocation: ~0.1 us against ~0.25 us for np.empty from Python,
    # which at the book's (100, 50) is a tenth of a layer call.
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


# --- ReLU -------------------------------------------------------------------

def relu_forward(cnp.ndarray x not None, cnp.ndarray out, cnp.ndarray mask):
    """mask = x <= 0; out = 0 where mask else x. Returns (out, mask); None outputs are allocated."""
    cdef str fn = "relu_forward"
    cdef int t = _arg(fn, "x", x, -1, _IN)
    if out is None:
        out = _new_like(x, t)
    if mask is None:
        mask = _new_like(x, cnp.NPY_BOOL)
    _arg(fn, "out", out, t, _OUT)
    _arg(fn, "mask", mask, cnp.NPY_UINT8, _OUT)
    _same_size(fn, x, out)
    _same_size(fn, x, mask)
    cdef Py_ssize_t c, lo, n = cnp.PyArray_SIZE(x)
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* op = <char*>cnp.PyArray_DATA(out)
    cdef uint8_t* mp = <uint8_t*>cnp.PyArray_DATA(mask)
    cdef int nt = _threads_for(n)
    cdef Py_ssize_t chunk = _chunk(n, nt)
    cdef int st = bp_stream_for(cnp.PyArray_NBYTES(out) + cnp.PyArray_NBYTES(mask))
    if n == 0:
        return out, mask
    with nogil:
        # Even a one-thread OpenMP region costs ~1 us: stay out of it when serial.
        if nt == 1:
            if t == cnp.NPY_DOUBLE:
                bp_relu_fwd_f64(<double*>xp, <double*>op, mp, n, st)
            else:
                bp_relu_fwd_f32(<float*>xp, <float*>op, mp, n, st)
        else:
            for c in prange(nt, schedule="static", num_threads=nt):
                lo = c * chunk
                if lo < n:
                    if t == cnp.NPY_DOUBLE:
                        bp_relu_fwd_f64(<double*>xp + lo, <double*>op + lo, mp + lo, min(chunk, n - lo), st)
                    else:
                        bp_relu_fwd_f32(<float*>xp + lo, <float*>op + lo, mp + lo, min(chunk, n - lo), st)
    return out, mask


def relu_backward(cnp.ndarray dout not None, cnp.ndarray mask not None, cnp.ndarray dx):
    """dx = 0 where mask else dout. Returns dx; None is allocated."""
    cdef str fn = "relu_backward"
    cdef int t = _arg(fn, "dout", dout, -1, _IN)
    if dx is None:
        dx = _new_like(dout, t)
    _arg(fn, "mask", mask, cnp.NPY_UINT8, _IN)
    _arg(fn, "dx", dx, t, _OUT)
    _same_size(fn, dout, mask)
    _same_size(fn, dout, dx)
    cdef Py_ssize_t c, lo, n = cnp.PyArray_SIZE(dout)
    cdef char* dp = <char*>cnp.PyArray_DATA(dout)
    cdef char* op = <char*>cnp.PyArray_DATA(dx)
    cdef uint8_t* mp = <uint8_t*>cnp.PyArray_DATA(mask)
    cdef int nt = _threads_for(n)
    cdef Py_ssize_t chunk = _chunk(n, nt)
    cdef int st = _stream(dx)
    if n == 0:
        return dx
    with nogil:
        # Even a one-thread OpenMP region costs ~1 us: stay out of it when serial.
        if nt == 1:
            if t == cnp.NPY_DOUBLE:
                bp_relu_bwd_f64(<double*>dp, mp, <double*>op, n, st)
            else:
                bp_relu_bwd_f32(<float*>dp, mp, <float*>op, n, st)
        else:
            for c in prange(nt, schedule="static", num_threads=nt):
                lo = c * chunk
                if lo < n:
                    if t == cnp.NPY_DOUBLE:
                        bp_relu_bwd_f64(<double*>dp + lo, mp + lo, <double*>op + lo, min(chunk, n - lo), st)
                    else:
                        bp_relu_bwd_f32(<float*>dp + lo, mp + lo, <float*>op + lo, min(chunk, n - lo), st)
    return dx


# --- Sigmoid ----------------------------------------------------------------

def sigmoid_forward(cnp.ndarray x not None, cnp.ndarray out):
    """out = 1 / (1 + exp(-x)), overflow-free. Returns out; None is allocated."""
    cdef str fn = "sigmoid_forward"
    cdef int t = _arg(fn, "x", x, -1, _IN)
    if out is None:
        out = _new_like(x, t)
    _arg(fn, "out", out, t, _OUT)
    _same_size(fn, x, out)
    cdef Py_ssize_t c, lo, n = cnp.PyArray_SIZE(x)
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* op = <char*>cnp.PyArray_DATA(out)
    # exp makes an element cost about 8 copies' worth: threads pay off sooner.
    cdef int nt = _threads_for(8 * n)
    cdef Py_ssize_t chunk = _chunk(n, nt)
    cdef int st = _stream(out)
    if n == 0:
        return out
    with nogil:
        # Even a one-thread OpenMP region costs ~1 us: stay out of it when serial.
        if nt == 1:
            if t == cnp.NPY_DOUBLE:
                bp_sigmoid_fwd_f64(<double*>xp, <double*>op, n, st)
            else:
                bp_sigmoid_fwd_f32(<float*>xp, <float*>op, n, st)
        else:
            for c in prange(nt, schedule="static", num_threads=nt):
                lo = c * chunk
                if lo < n:
                    if t == cnp.NPY_DOUBLE:
                        bp_sigmoid_fwd_f64(<double*>xp + lo, <double*>op + lo, min(chunk, n - lo), st)
                    else:
                        bp_sigmoid_fwd_f32(<float*>xp + lo, <float*>op + lo, min(chunk, n - lo), st)
    return out


def sigmoid_backward(cnp.ndarray dout not None, cnp.ndarray out not None, cnp.ndarray dx):
    """dx = dout * (1 - out) * out. Returns dx; None is allocated."""
    cdef str fn = "sigmoid_backward"
    cdef int t = _arg(fn, "dout", dout, -1, _IN)
    if dx is None:
        dx = _new_like(dout, t)
    _arg(fn, "out", out, t, _IN)
    _arg(fn, "dx", dx, t, _OUT)
    _same_size(fn, dout, out)
    _same_size(fn, dout, dx)
    cdef Py_ssize_t c, lo, n = cnp.PyArray_SIZE(dout)
    cdef char* dp = <char*>cnp.PyArray_DATA(dout)
    cdef char* yp = <char*>cnp.PyArray_DATA(out)
    cdef char* op = <char*>cnp.PyArray_DATA(dx)
    cdef int nt = _threads_for(n)
    cdef Py_ssize_t chunk = _chunk(n, nt)
    cdef int st = _stream(dx)
    if n == 0:
        return dx
    with nogil:
        # Even a one-thread OpenMP region costs ~1 us: stay out of it when serial.
        if nt == 1:
            if t == cnp.NPY_DOUBLE:
                bp_sigmoid_bwd_f64(<double*>dp, <double*>yp, <double*>op, n, st)
            else:
                bp_sigmoid_bwd_f32(<float*>dp, <float*>yp, <float*>op, n, st)
        else:
            for c in prange(nt, schedule="static", num_threads=nt):
                lo = c * chunk
                if lo < n:
                    if t == cnp.NPY_DOUBLE:
                        bp_sigmoid_bwd_f64(<double*>dp + lo, <double*>yp + lo, <double*>op + lo, min(chunk, n - lo), st)
                    else:
                        bp_sigmoid_bwd_f32(<float*>dp + lo, <float*>yp + lo, <float*>op + lo, min(chunk, n - lo), st)
    return dx


# --- Affine: bias and column sums; whole small products (_kernels_gemm.h) -----

def add_bias(cnp.ndarray y not None, cnp.ndarray b not None):
    """y += b, row by row (in place, after y = x @ W)."""
    cdef str fn = "add_bias"
    cdef int t = _arg(fn, "y", y, -1, _OUT)
    _arg(fn, "b", b, t, _IN)
    _rows(fn, "y", y)
    cdef Py_ssize_t n = y.shape[0], m = y.shape[1]
    _vector(fn, "b", b, m)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* bp = cnp.PyArray_DATA(b)
    if n == 0 or m == 0:
        return
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bp_add_bias_f64(<double*>yp, <double*>bp, n, m)
        else:
            bp_add_bias_f32(<float*>yp, <float*>bp, n, m)


def column_sum(cnp.ndarray a not None, cnp.ndarray out not None):
    """out[j] = sum_i a[i, j], rows added in order (as NumPy's axis-0 sum)."""
    cdef str fn = "column_sum"
    cdef int t = _arg(fn, "a", a, -1, _IN)
    _arg(fn, "out", out, t, _OUT)
    _rows(fn, "a", a)
    cdef Py_ssize_t n = a.shape[0], m = a.shape[1]
    _vector(fn, "out", out, m)
    cdef void* ap = cnp.PyArray_DATA(a)
    cdef void* op = cnp.PyArray_DATA(out)
    if m == 0:
        return
    with nogil:
        # n == 0 leaves the zero-filled sums, as np.sum does.
        if t == cnp.NPY_DOUBLE:
            bp_column_sum_f64(<double*>ap, <double*>op, n, m)
        else:
            bp_column_sum_f32(<float*>ap, <float*>op, n, m)


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


cdef int _affine_args(str fn, int t, cnp.ndarray x, cnp.ndarray W,
                      Py_ssize_t* n, Py_ssize_t* d, Py_ssize_t* m) except -1:
    """Check x (N, D) and W (D, M) of type t (-1: x's, float32 or float64); set N, D and M.
    Returns the type."""
    t = _arg(fn, "x", x, t, _IN)
    _arg(fn, "W", W, t, _IN)
    _rows(fn, "x", x)
    _rows(fn, "W", W)
    n[0], d[0], m[0] = x.shape[0], x.shape[1], W.shape[1]
    _matrix(fn, "W", W, d[0], m[0])
    return t


def affine_forward(cnp.ndarray x not None, cnp.ndarray W not None, cnp.ndarray b not None, cnp.ndarray out):
    """out = x @ W + b for x (N, D), W (D, M), b (M,): each element summed over D in order from
    zero, then b added, as x @ W + b rounds. Returns out; None is allocated."""
    cdef str fn = "affine_forward"
    cdef Py_ssize_t n, d, m
    cdef int t = _affine_args(fn, -1, x, W, &n, &d, &m)
    _arg(fn, "b", b, t, _IN)
    _vector(fn, "b", b, m)
    if out is None:
        out = _new_array(2, n, m, t)
    else:
        _arg(fn, "out", out, t, _OUT)
        _matrix(fn, "out", out, n, m)
        _disjoint(fn, "out", out, x, "x")
        _disjoint(fn, "out", out, W, "W")
        _disjoint(fn, "out", out, b, "b")
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* wp = cnp.PyArray_DATA(W)
    cdef void* bp = cnp.PyArray_DATA(b)
    cdef void* op = cnp.PyArray_DATA(out)
    with nogil:
        if t == cnp.NPY_DOUBLE:
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
    cdef int t = _arg(fn, "dout", dout, -1, _IN)
    cdef Py_ssize_t n, d, m
    _affine_args(fn, t, x, W, &n, &d, &m)
    _matrix(fn, "dout", dout, n, m)
    cdef cnp.ndarray dW = _new_array(2, d, m, t)
    cdef cnp.ndarray db = _new_array(1, m, 0, t)
    cdef cnp.ndarray dx = _new_array(2, n, d, t) if input_grad else None
    cdef size_t itemsize = 8 if t == cnp.NPY_DOUBLE else 4
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
        if t == cnp.NPY_DOUBLE:
            bp_affine_grads_f64(<double*>gp, <double*>xp, <double*>wp, <double*>wt, <double*>xgp,
                                <double*>wgp, <double*>bgp, n, d, m)
        else:
            bp_affine_grads_f32(<float*>gp, <float*>xp, <float*>wp, <float*>wt, <float*>xgp,
                                <float*>wgp, <float*>bgp, n, d, m)
    free(wt)
    return dx, dW, db


# --- Softmax and cross-entropy -------------------------------------------------

cdef inline double _softmax_row(int t, char* x, char* y, Py_ssize_t i, Py_ssize_t c, double* mx) noexcept nogil:
    """y[i] = softmax(x[i]) for row i; returns log(sum(exp(x[i] - max))), sets *mx = max."""
    cdef double ls
    cdef float mx32
    if t == cnp.NPY_DOUBLE:
        return bp_softmax_row_f64(<double*>x + i * c, <double*>y + i * c, c, mx)
    ls = bp_softmax_row_f32(<float*>x + i * c, <float*>y + i * c, c, &mx32)
    mx[0] = mx32
    return ls


cdef inline double _at(int t, char* x, Py_ssize_t k) noexcept nogil:
    if t == cnp.NPY_DOUBLE:
        return (<double*>x)[k]
    return (<float*>x)[k]


def softmax_forward(cnp.ndarray x not None, cnp.ndarray y not None):
    """y = softmax(x) row-wise, with the row max subtracted first."""
    cdef str fn = "softmax_forward"
    cdef int t = _arg(fn, "x", x, -1, _IN)
    _arg(fn, "y", y, t, _OUT)
    _rows(fn, "x", x)
    cdef Py_ssize_t i, n = x.shape[0], c = x.shape[1]
    _matrix(fn, "y", y, n, c)
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* yp = <char*>cnp.PyArray_DATA(y)
    cdef int nt = _threads_for(8 * n * c)
    cdef double mx
    if n == 0 or c == 0:
        return
    with nogil:
        if nt == 1:
            for i in range(n):
                _softmax_row(t, xp, yp, i, c, &mx)
        else:
            for i in prange(n, schedule="static", num_threads=nt):
                # Assigned in the loop body, so each thread has its own mx.
                mx = 0
                _softmax_row(t, xp, yp, i, c, &mx)


cdef inline Py_ssize_t _first_bad_label(const int64_t* t, Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if t[i] < 0 or t[i] >= c:
            return i
    return -1


cdef int _labels(str fn, cnp.ndarray t, Py_ssize_t n, Py_ssize_t c) except -1:
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
    cdef int k = _arg(fn, "x", x, -1, _IN)
    _arg(fn, "y", y, k, _OUT)
    _rows(fn, "x", x)
    cdef Py_ssize_t i, n = x.shape[0], c = x.shape[1]
    _matrix(fn, "y", y, n, c)
    _labels(fn, t, n, c)
    if n == 0:
        return float("nan")
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* yp = <char*>cnp.PyArray_DATA(y)
    cdef int64_t* tp = <int64_t*>cnp.PyArray_DATA(t)
    cdef double total = 0, ls, mx
    cdef int nt = _threads_for(8 * n * c)
    with nogil:
        if nt == 1:
            for i in range(n):
                ls = _softmax_row(k, xp, yp, i, c, &mx)
                total += (mx - _at(k, xp, i * c + tp[i])) + ls
        else:
            for i in prange(n, schedule="static", num_threads=nt):
                # Assigned in the loop body, so each thread has its own mx.
                mx = 0
                ls = _softmax_row(k, xp, yp, i, c, &mx)
                total += (mx - _at(k, xp, i * c + tp[i])) + ls
    return total / n


def softmax_xent_onehot_forward(cnp.ndarray x not None, cnp.ndarray t not None, cnp.ndarray y not None):
    """y = softmax(x); returns mean_i sum_j t_ij (logsumexp(x_i) - x_ij)."""
    cdef str fn = "softmax_xent_onehot_forward"
    cdef int k = _arg(fn, "x", x, -1, _IN)
    _arg(fn, "t", t, k, _IN)
    _arg(fn, "y", y, k, _OUT)
    _rows(fn, "x", x)
    cdef Py_ssize_t i, j, n = x.shape[0], c = x.shape[1]
    _matrix(fn, "t", t, n, c)
    _matrix(fn, "y", y, n, c)
    if n == 0:
        return float("nan")
    if c == 0:
        raise _RefusedValue(f"{fn}: x has no classes (shape {(<object>x).shape})")
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* tp = <char*>cnp.PyArray_DATA(t)
    cdef char* yp = <char*>cnp.PyArray_DATA(y)
    cdef double total = 0, ls, mx, tj
    with nogil:
        for i in range(n):
            ls = _softmax_row(k, xp, yp, i, c, &mx)
            for j in range(i * c, i * c + c):
                tj = _at(k, tp, j)
                # Skip zero targets: 0 * (max - (-inf)) would be NaN.
                if tj != 0:
                    total += tj * ((mx - _at(k, xp, j)) + ls)
    return total / n


def softmax_xent_labels_backward(cnp.ndarray y not None, cnp.ndarray t not None, cnp.ndarray dx):
    """dx = (y - onehot(t)) / N. Returns dx; None is allocated."""
    cdef str fn = "softmax_xent_labels_backward"
    cdef int k = _arg(fn, "y", y, -1, _IN)
    if dx is None:
        dx = _new_like(y, k)
    _arg(fn, "dx", dx, k, _OUT)
    _rows(fn, "y", y)
    cdef Py_ssize_t i, j, n = y.shape[0], c = y.shape[1]
    _matrix(fn, "dx", dx, n, c)
    _labels(fn, t, n, c)
    if n == 0 or c == 0:
        return dx
    cdef char* yp = <char*>cnp.PyArray_DATA(y)
    cdef char* op = <char*>cnp.PyArray_DATA(dx)
    cdef int64_t* tp = <int64_t*>cnp.PyArray_DATA(t)
    cdef int st = _stream(dx)
    with nogil:
        if k == cnp.NPY_DOUBLE:
            bp_scale_f64(<double*>yp, <double*>op, n * c, 1.0 / n, st)
            for i in range(n):
                # Subtract 1 before scaling, as the book does.
                j = i * c + tp[i]
                (<double*>op)[j] = ((<double*>yp)[j] - 1) * (1.0 / n)
        else:
            bp_scale_f32(<float*>yp, <float*>op, n * c, <float>1 / <float>n, st)
            for i in range(n):
                j = i * c + tp[i]
                (<float*>op)[j] = ((<float*>yp)[j] - <float>1) * (<float>1 / <float>n)
    return dx


def softmax_xent_onehot_backward(cnp.ndarray y not None, cnp.ndarray t not None, cnp.ndarray dx):
    """dx = (y - t) / N. Returns dx; None is allocated."""
    cdef str fn = "softmax_xent_onehot_backward"
    cdef int k = _arg(fn, "y", y, -1, _IN)
    _arg(fn, "t", t, k, _IN)
    if dx is None:
        dx = _new_like(y, k)
    _arg(fn, "dx", dx, k, _OUT)
    _rows(fn, "y", y)
    cdef Py_ssize_t n = y.shape[0], c = y.shape[1]
    _matrix(fn, "t", t, n, c)
    _matrix(fn, "dx", dx, n, c)
    if n == 0 or c == 0:
        return dx
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* tp = cnp.PyArray_DATA(t)
    cdef void* op = cnp.PyArray_DATA(dx)
    cdef int st = _stream(dx)
    with nogil:
        if k == cnp.NPY_DOUBLE:
            bp_xent_onehot_bwd_f64(<double*>yp, <double*>tp, <double*>op, n * c, 1.0 / n, st)
        else:
            bp_xent_onehot_bwd_f32(<float*>yp, <float*>tp, <float*>op, n * c, <float>1 / <float>n, st)
    return dx


include "_kernels_batchnorm.pxi"
include "_kernels_optimizer.pxi"
include "_kernels_conv.pxi"
