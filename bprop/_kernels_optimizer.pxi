# The optimizers' update kernels; included into _kernels.pyx, whose argument
# checks (_arg, _same_size, _disjoint) they use. Each updates its parameter
# (and state) arrays in place, as the book's NumPy updates do.

# Each name calls its version for the level the portable loops run at
# (BP_AT, src/platform.h).
cdef extern from "src/optimizer.h" nogil:
    void bp_sgd_f64 "BP_AT(bp_sgd_f64)"(double* p, const double* g, Py_ssize_t n, double lr)
    void bp_sgd_f32 "BP_AT(bp_sgd_f32)"(float* p, const float* g, Py_ssize_t n, double lr)
    void bp_momentum_f64 "BP_AT(bp_momentum_f64)"(double* p, const double* g, const double* v, double* v_new, Py_ssize_t n,
                         double lr, double momentum)
    void bp_momentum_f32 "BP_AT(bp_momentum_f32)"(float* p, const float* g, const float* v, float* v_new, Py_ssize_t n,
                         double lr, double momentum)
    void bp_nesterov_f64 "BP_AT(bp_nesterov_f64)"(double* p, const double* g, double* v, Py_ssize_t n, double lr, double momentum)
    void bp_nesterov_f32 "BP_AT(bp_nesterov_f32)"(float* p, const float* g, float* v, Py_ssize_t n, double lr, double momentum)
    void bp_adagrad_f64 "BP_AT(bp_adagrad_f64)"(double* p, const double* g, double* h, Py_ssize_t n, double lr)
    void bp_adagrad_f32 "BP_AT(bp_adagrad_f32)"(float* p, const float* g, float* h, Py_ssize_t n, double lr)
    void bp_rmsprop_f64 "BP_AT(bp_rmsprop_f64)"(double* p, const double* g, double* h, Py_ssize_t n, double lr, double decay)
    void bp_rmsprop_f32 "BP_AT(bp_rmsprop_f32)"(float* p, const float* g, float* h, Py_ssize_t n, double lr, double decay)
    void bp_adam_f64 "BP_AT(bp_adam_f64)"(double* p, const double* g, double* m, double* v, Py_ssize_t n,
                     double lr_t, double beta1, double beta2)
    void bp_adam_f32 "BP_AT(bp_adam_f32)"(float* p, const float* g, float* m, float* v, Py_ssize_t n,
                     double lr_t, double beta1, double beta2)


cdef int _update_args(str fn, cnp.ndarray p, cnp.ndarray g, list state, tuple names, int first_out=0) except -1:
    """Check p (written), g (read) and the state arrays (read before first_out, written from
    it): one dtype, one size, no overlap (the loops read each element once through restrict
    pointers). Returns the type."""
    cdef int dtype = _arg(fn, "p", p, -1, _OUT)
    _arg(fn, "g", g, dtype, _IN)
    _same_size(fn, p, g)
    _disjoint(fn, "p", p, g, "g")
    cdef int i, j
    for i in range(len(state)):
        _arg(fn, names[i], state[i], dtype, _OUT if i >= first_out else _IN)
        _same_size(fn, p, state[i])
        _disjoint(fn, names[i], state[i], p, "p")
        _disjoint(fn, names[i], state[i], g, "g")
        for j in range(i):
            _disjoint(fn, names[i], state[i], state[j], names[j])
    return dtype


def sgd_update(cnp.ndarray p not None, cnp.ndarray g not None, double lr):
    """p -= lr * g, in place."""
    cdef int dtype = _update_args("sgd_update", p, g, [], ())
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_sgd_f64(<double*>pp, <double*>gp, n, lr)
        else:
            bp_sgd_f32(<float*>pp, <float*>gp, n, lr)


def momentum_update(cnp.ndarray p not None, cnp.ndarray g not None, cnp.ndarray v not None,
                    cnp.ndarray v_new not None, double lr, double momentum):
    """v_new = momentum * v - lr * g; p += v_new, in place."""
    cdef int dtype = _update_args("momentum_update", p, g, [v, v_new], ("v", "v_new"), 1)
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* vp = cnp.PyArray_DATA(v)
    cdef void* wp = cnp.PyArray_DATA(v_new)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_momentum_f64(<double*>pp, <double*>gp, <double*>vp, <double*>wp, n, lr, momentum)
        else:
            bp_momentum_f32(<float*>pp, <float*>gp, <float*>vp, <float*>wp, n, lr, momentum)


def nesterov_update(cnp.ndarray p not None, cnp.ndarray g not None, cnp.ndarray v not None,
                    double lr, double momentum):
    """The book's Nesterov step on p and v, in place."""
    cdef int dtype = _update_args("nesterov_update", p, g, [v], ("v",))
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* vp = cnp.PyArray_DATA(v)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_nesterov_f64(<double*>pp, <double*>gp, <double*>vp, n, lr, momentum)
        else:
            bp_nesterov_f32(<float*>pp, <float*>gp, <float*>vp, n, lr, momentum)


def adagrad_update(cnp.ndarray p not None, cnp.ndarray g not None, cnp.ndarray h not None, double lr):
    """h += g * g; p -= lr * g / (sqrt(h) + 1e-7), in place."""
    cdef int dtype = _update_args("adagrad_update", p, g, [h], ("h",))
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* hp = cnp.PyArray_DATA(h)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_adagrad_f64(<double*>pp, <double*>gp, <double*>hp, n, lr)
        else:
            bp_adagrad_f32(<float*>pp, <float*>gp, <float*>hp, n, lr)


def rmsprop_update(cnp.ndarray p not None, cnp.ndarray g not None, cnp.ndarray h not None,
                   double lr, double decay):
    """h = decay * h + (1 - decay) * g * g; p -= lr * g / (sqrt(h) + 1e-7), in place."""
    cdef int dtype = _update_args("rmsprop_update", p, g, [h], ("h",))
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* hp = cnp.PyArray_DATA(h)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_rmsprop_f64(<double*>pp, <double*>gp, <double*>hp, n, lr, decay)
        else:
            bp_rmsprop_f32(<float*>pp, <float*>gp, <float*>hp, n, lr, decay)


def adam_update(cnp.ndarray p not None, cnp.ndarray g not None, cnp.ndarray m not None,
                cnp.ndarray v not None, double lr_t, double beta1, double beta2):
    """The book's Adam step on p, m and v with the bias-corrected rate lr_t, in place."""
    cdef int dtype = _update_args("adam_update", p, g, [m, v], ("m", "v"))
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* mp = cnp.PyArray_DATA(m)
    cdef void* vp = cnp.PyArray_DATA(v)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    with nogil:
        if dtype == cnp.NPY_DOUBLE:
            bp_adam_f64(<double*>pp, <double*>gp, <double*>mp, <double*>vp, n, lr_t, beta1, beta2)
        else:
            bp_adam_f32(<float*>pp, <float*>gp, <float*>mp, <float*>vp, n, lr_t, beta1, beta2)
