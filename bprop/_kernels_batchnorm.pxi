# BatchNormalization's kernels; included into _kernels.pyx, whose argument
# checks (_arg, _rows, _vector, _matrix) and allocation helpers they use.

# Each name calls its version for the level the portable loops run at
# (BP_AT, src/platform.h).
cdef extern from "src/batchnorm.h" nogil:
    void bp_bn_forward_f64 "BP_AT(bp_bn_forward_f64)"(const double* x, Py_ssize_t n, Py_ssize_t d, const double* gamma,
                           const double* beta, double eps, double* mu, double* var, double* std,
                           double* xc, double* out, double* acc)
    void bp_bn_forward_f32 "BP_AT(bp_bn_forward_f32)"(const float* x, Py_ssize_t n, Py_ssize_t d, const float* gamma,
                           const float* beta, double eps, float* mu, float* var, float* std,
                           float* xc, float* out, double* acc)
    void bp_bn_backward_f64 "BP_AT(bp_bn_backward_f64)"(const double* dout, const double* xc, Py_ssize_t n, Py_ssize_t d,
                            const double* gamma, const double* std, double* dx, double* dgamma,
                            double* dbeta, double* acc)
    void bp_bn_backward_f32 "BP_AT(bp_bn_backward_f32)"(const float* dout, const float* xc, Py_ssize_t n, Py_ssize_t d,
                            const float* gamma, const float* std, float* dx, float* dgamma,
                            float* dbeta, double* acc)


cdef double* _scratch(str fn, Py_ssize_t count) except NULL:
    """count doubles (at least one) of scratch from malloc; the caller frees them."""
    cdef double* p = <double*>malloc(max(count, 1) * sizeof(double))
    if p == NULL:
        raise MemoryError(f"{fn}: no memory for {count} doubles of scratch")
    return p


cdef cnp.ndarray _bn_output(str fn, str name, cnp.ndarray a, int dtype, Py_ssize_t n, Py_ssize_t d):
    """An (n, d) output: a new array for None, else a checked one. The loops
    read their inputs after writing parts of the outputs, so an output must
    not overlap an input; the callers check that."""
    if a is None:
        return _new_array(2, n, d, dtype)
    _arg(fn, name, a, dtype, _OUT)
    _matrix(fn, name, a, n, d)
    return a


def batchnorm_forward(cnp.ndarray x not None, cnp.ndarray gamma not None, cnp.ndarray beta not None,
                      double eps, cnp.ndarray out, cnp.ndarray xc):
    """Training forward over the rows of x (N, D), N >= 1: returns (out, xc, mu, var, std)
    with mu and var the column mean and biased variance (summed in double), std = sqrt(var + eps),
    xc = x - mu and out = gamma * (xc / std) + beta. out and xc are written into when given
    ((N, D), x's dtype, overlapping no other argument), else allocated like mu, var and std."""
    cdef str fn = "batchnorm_forward"
    cdef int dtype = _arg(fn, "x", x, -1, _IN)
    _arg(fn, "gamma", gamma, dtype, _IN)
    _arg(fn, "beta", beta, dtype, _IN)
    _rows(fn, "x", x)
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    if n < 1:
        raise _RefusedValue(f"{fn}: x needs at least one row, got shape {(<object>x).shape}")
    _vector(fn, "gamma", gamma, d)
    _vector(fn, "beta", beta, d)
    out = _bn_output(fn, "out", out, dtype, n, d)
    xc = _bn_output(fn, "xc", xc, dtype, n, d)
    for name, a in (("out", out), ("xc", xc)):
        _disjoint(fn, name, a, x, "x")
        _disjoint(fn, name, a, gamma, "gamma")
        _disjoint(fn, name, a, beta, "beta")
    _disjoint(fn, "out", out, xc, "xc")
    cdef cnp.ndarray mu = _new_array(1, d, 0, dtype), var = _new_array(1, d, 0, dtype), std = _new_array(1, d, 0, dtype)
    cdef double* acc = _scratch(fn, d)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* gp = cnp.PyArray_DATA(gamma)
    cdef void* bp = cnp.PyArray_DATA(beta)
    cdef void* mp = cnp.PyArray_DATA(mu)
    cdef void* vp = cnp.PyArray_DATA(var)
    cdef void* sp = cnp.PyArray_DATA(std)
    cdef void* cp = cnp.PyArray_DATA(xc)
    cdef void* op = cnp.PyArray_DATA(out)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_bn_forward_f64(<double*>xp, n, d, <double*>gp, <double*>bp, eps, <double*>mp, <double*>vp,
                              <double*>sp, <double*>cp, <double*>op, acc)
        else:
            bp_bn_forward_f32(<float*>xp, n, d, <float*>gp, <float*>bp, eps, <float*>mp, <float*>vp,
                              <float*>sp, <float*>cp, <float*>op, acc)
    free(acc)
    return out, xc, mu, var, std


def batchnorm_backward(cnp.ndarray dout not None, cnp.ndarray xc not None, cnp.ndarray gamma not None,
                       cnp.ndarray std not None, cnp.ndarray dx):
    """Backward of batchnorm_forward for dout and xc (N, D), N >= 1, gamma and std (D,):
    returns (dx, dgamma, dbeta). dx is written into when given ((N, D), dout's dtype, overlapping
    no other argument), else allocated like dgamma and dbeta."""
    cdef str fn = "batchnorm_backward"
    cdef int dtype = _arg(fn, "dout", dout, -1, _IN)
    _arg(fn, "xc", xc, dtype, _IN)
    _arg(fn, "gamma", gamma, dtype, _IN)
    _arg(fn, "std", std, dtype, _IN)
    _rows(fn, "dout", dout)
    cdef Py_ssize_t n = dout.shape[0], d = dout.shape[1]
    if n < 1:
        raise _RefusedValue(f"{fn}: dout needs at least one row, got shape {(<object>dout).shape}")
    _matrix(fn, "xc", xc, n, d)
    _vector(fn, "gamma", gamma, d)
    _vector(fn, "std", std, d)
    dx = _bn_output(fn, "dx", dx, dtype, n, d)
    for name, a in (("dout", dout), ("xc", xc), ("gamma", gamma), ("std", std)):
        _disjoint(fn, "dx", dx, a, name)
    cdef cnp.ndarray dgamma = _new_array(1, d, 0, dtype), dbeta = _new_array(1, d, 0, dtype)
    cdef double* acc = _scratch(fn, 4 * d)
    cdef void* gp = cnp.PyArray_DATA(dout)
    cdef void* cp = cnp.PyArray_DATA(xc)
    cdef void* wp = cnp.PyArray_DATA(gamma)
    cdef void* sp = cnp.PyArray_DATA(std)
    cdef void* op = cnp.PyArray_DATA(dx)
    cdef void* dgp = cnp.PyArray_DATA(dgamma)
    cdef void* dbp = cnp.PyArray_DATA(dbeta)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_bn_backward_f64(<double*>gp, <double*>cp, n, d, <double*>wp, <double*>sp, <double*>op,
                               <double*>dgp, <double*>dbp, acc)
        else:
            bp_bn_backward_f32(<float*>gp, <float*>cp, n, d, <float*>wp, <float*>sp, <float*>op,
                               <float*>dgp, <float*>dbp, acc)
    free(acc)
    return dx, dgamma, dbeta
