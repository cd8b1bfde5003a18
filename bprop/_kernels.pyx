# cython: language_level=3
"""Typed kernels behind bprop's layers (compiled twin of ``_numpy_kernels``).

Design
------
Three layers, as in scikit-learn's loss module:

1. scalar ``cdef inline ... noexcept nogil`` helpers (``_sigmoid``);
2. loops over raw pointers, one pass per kernel, no temporaries, GIL released;
3. the ``def`` entry points the Python layer calls, one per kernel and dtype
   pair (fused ``floating``), with caller-allocated outputs.

Every entry point checks at entry that the buffers it is handed have the
sizes it indexes, so even a direct call with bad shapes raises instead of
reading out of bounds: bounds checks are off inside the loops (see setup.py).
The Python layer (``bprop.layers``) does the user-facing validation before it
gets here; these checks are the last line, not the error messages users see.

Labels are ``int64`` (``np.int64`` arrays); masks are NumPy ``bool`` arrays,
which Cython accepts as ``uint8_t`` buffers.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.math cimport log

cdef extern from "_kernels_math.h" nogil:
    # exp/expf re-declared with GCC's ``simd`` attribute so that loops calling
    # them vectorise into glibc's vector math library without -ffast-math.
    double bp_exp(double x)
    float bp_expf(float x)
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

# Threads pay off only where a kernel's work dwarfs OpenMP's fork/join
# (1-2 us measured here); below this many elements kernels stay serial.
cdef Py_ssize_t _PARALLEL_MIN = 1 << 18
cdef int _num_threads = 1


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


cdef inline int _threads_for(Py_ssize_t n) noexcept nogil:
    return _num_threads if n >= _PARALLEL_MIN else 1


cdef inline void _need(bint ok, str what) except *:
    if not ok:
        raise ValueError(what)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return bp_expf(x)
    else:
        return bp_exp(x)


# --- ReLU -------------------------------------------------------------------

def relu_forward(const floating[::1] x, floating[::1] out, uint8_t[::1] mask):
    """mask = x <= 0; out = 0 where mask else x."""
    cdef Py_ssize_t i, n = x.shape[0]
    _need(out.shape[0] == n and mask.shape[0] == n, "relu_forward: size mismatch")
    cdef const floating* xp = &x[0] if n else NULL
    cdef floating* op = &out[0] if n else NULL
    cdef uint8_t* mp = &mask[0] if n else NULL
    cdef floating v
    cdef int nt = _threads_for(n)
    if nt > 1:
        for i in prange(n, nogil=True, schedule="static", num_threads=nt):
            v = xp[i]
            mp[i] = v <= 0
            op[i] = 0 if v <= 0 else v
    else:
        with nogil:
            # Branch-free select: the compiler vectorises it, and NaN (which
            # compares False) passes through as in the book's code.
            for i in range(n):
                v = xp[i]
                mp[i] = v <= 0
                op[i] = 0 if v <= 0 else v


def relu_backward(const floating[::1] dout, const uint8_t[::1] mask, floating[::1] dx):
    """dx = 0 where mask else dout."""
    cdef Py_ssize_t i, n = dout.shape[0]
    _need(mask.shape[0] == n and dx.shape[0] == n, "relu_backward: size mismatch")
    cdef const floating* dp = &dout[0] if n else NULL
    cdef const uint8_t* mp = &mask[0] if n else NULL
    cdef floating* op = &dx[0] if n else NULL
    cdef int nt = _threads_for(n)
    if nt > 1:
        for i in prange(n, nogil=True, schedule="static", num_threads=nt):
            op[i] = 0 if mp[i] else dp[i]
    else:
        with nogil:
            for i in range(n):
                op[i] = 0 if mp[i] else dp[i]


# --- Sigmoid ----------------------------------------------------------------

cdef inline floating _sigmoid(floating x) noexcept nogil:
    # exp(-|x|) never overflows: for x >= 0, 1/(1+e); for x < 0, e/(1+e).
    # Both branches are computed and selected, so the loop vectorises.
    cdef floating e = _exp(-x if x >= 0 else x)
    cdef floating r = 1 / (1 + e)
    return r if x >= 0 else e * r


def sigmoid_forward(const floating[::1] x, floating[::1] out):
    """out = 1 / (1 + exp(-x)), overflow-free."""
    cdef Py_ssize_t i, n = x.shape[0]
    _need(out.shape[0] == n, "sigmoid_forward: size mismatch")
    cdef const floating* xp = &x[0] if n else NULL
    cdef floating* op = &out[0] if n else NULL
    cdef int nt = _threads_for(n // 8)
    if nt > 1:
        for i in prange(n, nogil=True, schedule="static", num_threads=nt):
            op[i] = _sigmoid(xp[i])
    else:
        with nogil:
            for i in range(n):
                op[i] = _sigmoid(xp[i])


def sigmoid_backward(const floating[::1] dout, const floating[::1] out, floating[::1] dx):
    """dx = dout * (1 - out) * out."""
    cdef Py_ssize_t i, n = dout.shape[0]
    _need(out.shape[0] == n and dx.shape[0] == n, "sigmoid_backward: size mismatch")
    cdef const floating* dp = &dout[0] if n else NULL
    cdef const floating* yp = &out[0] if n else NULL
    cdef floating* op = &dx[0] if n else NULL
    cdef int nt = _threads_for(n)
    if nt > 1:
        for i in prange(n, nogil=True, schedule="static", num_threads=nt):
            op[i] = dp[i] * (1 - yp[i]) * yp[i]
    else:
        with nogil:
            for i in range(n):
                op[i] = dp[i] * (1 - yp[i]) * yp[i]


# --- Affine: what BLAS does not do -------------------------------------------

def add_bias(floating[:, ::1] y, const floating[::1] b):
    """y += b, row by row (in place, after y = x @ W)."""
    cdef Py_ssize_t i, j, n = y.shape[0], m = y.shape[1]
    _need(b.shape[0] == m, "add_bias: size mismatch")
    if n == 0 or m == 0:
        return
    cdef floating* yp = &y[0, 0]
    cdef const floating* bp = &b[0]
    cdef floating* row
    with nogil:
        for i in range(n):
            row = yp + i * m
            for j in range(m):
                row[j] = row[j] + bp[j]


def column_sum(const floating[:, ::1] a, floating[::1] out):
    """out[j] = sum_i a[i, j], rows added in order (as NumPy's axis-0 sum)."""
    cdef Py_ssize_t i, j, n = a.shape[0], m = a.shape[1]
    _need(out.shape[0] == m, "column_sum: size mismatch")
    if m == 0:
        return
    cdef floating* op = &out[0]
    cdef const floating* row
    for j in range(m):
        op[j] = 0
    if n == 0:
        return
    row = &a[0, 0]
    with nogil:
        for i in range(n):
            for j in range(m):
                op[j] = op[j] + row[j]
            row = row + m


# --- Softmax and cross-entropy -------------------------------------------------

cdef inline double _softmax_row(const floating* x, floating* y, Py_ssize_t c) noexcept nogil:
    """y = softmax(x) over one row; returns log(sum(exp(x - max)))."""
    cdef Py_ssize_t j
    cdef floating mx = x[0]
    cdef floating e
    cdef double s = 0
    for j in range(1, c):
        # A NaN anywhere must make the whole row NaN, as in the book.
        if x[j] > mx or x[j] != x[j]:
            mx = x[j]
    for j in range(c):
        e = _exp(x[j] - mx)
        y[j] = e
        s += e
    for j in range(c):
        y[j] = <floating>(y[j] / s)
    return log(s) + mx


def softmax_forward(const floating[:, ::1] x, floating[:, ::1] y):
    """y = softmax(x) row-wise, with the row max subtracted first."""
    cdef Py_ssize_t i, n = x.shape[0], c = x.shape[1]
    _need(y.shape[0] == n and y.shape[1] == c, "softmax_forward: size mismatch")
    if n == 0 or c == 0:
        return
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    with nogil:
        for i in range(n):
            _softmax_row(xp + i * c, yp + i * c, c)


cdef inline Py_ssize_t _first_bad_label(const int64_t* t, Py_ssize_t n, Py_ssize_t c) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if t[i] < 0 or t[i] >= c:
            return i
    return -1


def softmax_xent_labels_forward(const floating[:, ::1] x, const int64_t[::1] t, floating[:, ::1] y):
    """y = softmax(x); returns mean_i (logsumexp(x_i) - x_i[t_i]) as a float."""
    cdef Py_ssize_t i, n = x.shape[0], c = x.shape[1]
    _need(y.shape[0] == n and y.shape[1] == c and t.shape[0] == n,
          "softmax_xent_labels_forward: size mismatch")
    if n == 0:
        return float("nan")
    cdef const int64_t* tp = &t[0]
    cdef Py_ssize_t bad = _first_bad_label(tp, n, c)
    if bad >= 0:
        raise ValueError(f"softmax_xent_labels_forward: label {t[bad]} out of range [0, {c})")
    cdef const floating* xp = &x[0, 0]
    cdef floating* yp = &y[0, 0]
    cdef double total = 0
    with nogil:
        for i in range(n):
            total += _softmax_row(xp + i * c, yp + i * c, c) - xp[i * c + tp[i]]
    return total / n


def softmax_xent_onehot_forward(const floating[:, ::1] x, const floating[:, ::1] t, floating[:, ::1] y):
    """y = softmax(x); returns mean_i sum_j t_ij (logsumexp(x_i) - x_ij)."""
    cdef Py_ssize_t i, j, n = x.shape[0], c = x.shape[1]
    _need(y.shape[0] == n and y.shape[1] == c and t.shape[0] == n and t.shape[1] == c,
          "softmax_xent_onehot_forward: size mismatch")
    if n == 0:
        return float("nan")
    _need(c > 0, "softmax_xent_onehot_forward: no classes")
    cdef const floating* xp = &x[0, 0]
    cdef const floating* tp = &t[0, 0]
    cdef floating* yp = &y[0, 0]
    cdef double total = 0, lse, tj
    with nogil:
        for i in range(n):
            lse = _softmax_row(xp + i * c, yp + i * c, c)
            for j in range(c):
                tj = tp[i * c + j]
                # Skip zero targets: 0 * (lse - (-inf)) would be NaN.
                if tj != 0:
                    total += tj * (lse - xp[i * c + j])
    return total / n


def softmax_xent_labels_backward(const floating[:, ::1] y, const int64_t[::1] t, floating[:, ::1] dx):
    """dx = (y - onehot(t)) / N."""
    cdef Py_ssize_t i, j, n = y.shape[0], c = y.shape[1]
    _need(dx.shape[0] == n and dx.shape[1] == c and t.shape[0] == n,
          "softmax_xent_labels_backward: size mismatch")
    if n == 0 or c == 0:
        return
    cdef const int64_t* tp = &t[0]
    cdef Py_ssize_t bad = _first_bad_label(tp, n, c)
    if bad >= 0:
        raise ValueError(f"softmax_xent_labels_backward: label {t[bad]} out of range [0, {c})")
    cdef const floating* yp = &y[0, 0]
    cdef floating* op = &dx[0, 0]
    cdef floating nb = <floating>n
    with nogil:
        for i in range(n):
            for j in range(c):
                op[i * c + j] = yp[i * c + j] / nb
            # Subtract 1 before dividing, as the book does.
            op[i * c + tp[i]] = (yp[i * c + tp[i]] - 1) / nb


def softmax_xent_onehot_backward(const floating[:, ::1] y, const floating[:, ::1] t, floating[:, ::1] dx):
    """dx = (y - t) / N."""
    cdef Py_ssize_t i, n = y.shape[0], c = y.shape[1]
    _need(dx.shape[0] == n and dx.shape[1] == c and t.shape[0] == n and t.shape[1] == c,
          "softmax_xent_onehot_backward: size mismatch")
    if n == 0 or c == 0:
        return
    cdef Py_ssize_t total = n * c
    cdef const floating* yp = &y[0, 0]
    cdef const floating* tp = &t[0, 0]
    cdef floating* op = &dx[0, 0]
    cdef floating nb = <floating>n
    with nogil:
        for i in range(total):
            op[i] = (yp[i] - tp[i]) / nb
