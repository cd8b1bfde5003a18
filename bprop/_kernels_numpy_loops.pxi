# NumPy's loops under the portable sigmoid and softmax forwards
# (src/numpy_loops.h): found, checked and installed at import.

from libc.stdint cimport intptr_t

cdef extern from "src/dispatch.h" nogil:
    ctypedef void (*bp_ufunc_loop)(char** args, const intptr_t* dims, const intptr_t* steps, void* data)
    enum:
        BP_NP_NEGATIVE
        BP_NP_EXP
        BP_NP_ADD
        BP_NP_DIVIDE
    void bp_np_install(int op, int index, bp_ufunc_loop loop, void* data)
    int bp_np_select(int want)
    int bp_np_selected()
    int bp_np_exp_flags_overflow(int index)

import numpy as _np

cnp.import_ufunc()

# Values over the SIMD body and remainder of a loop: both signs, zeros,
# infinities, NaN, and exp's overflow and underflow edges.
_PROBE = _np.concatenate([[0.0, -0.0, _np.inf, -_np.inf, _np.nan, -745.2, -708.4, -103.9, -87.4, 88.8, 710.0],
                          -_np.geomspace(1e-30, 800.0, 45), _np.geomspace(1e-30, 800.0, 44)])


cdef bp_ufunc_loop _ufunc_loop(cnp.ufunc uf, int typenum, void** data):
    """The loop uf runs when every operand is typenum (NULL if none), and its data."""
    cdef int i, k
    if uf.functions == NULL:
        return NULL
    for i in range(uf.ntypes):
        for k in range(uf.nargs):
            if uf.types[i * uf.nargs + k] != typenum:
                break
        else:
            if uf.functions[i] == NULL:
                return NULL
            data[0] = uf.data[i] if uf.data != NULL else NULL
            return <bp_ufunc_loop>uf.functions[i]
    return NULL


cdef bint _gives_ufunc_results(bp_ufunc_loop loop, void* data, object uf, tuple operands):
    """True when loop, called as the C loops call it (a 0-d operand is a scalar, step 0), gives
    uf's results on operands bit for bit."""
    cdef cnp.ndarray out = _np.empty(_np.broadcast(*operands).shape, operands[0].dtype)
    cdef char* args[3]
    cdef intptr_t steps[3]
    cdef intptr_t dims[1]
    cdef cnp.ndarray a
    cdef int k
    for k, a in enumerate([*operands, out]):
        args[k] = <char*>cnp.PyArray_DATA(a)
        steps[k] = cnp.PyArray_ITEMSIZE(a) if cnp.PyArray_NDIM(a) else 0
    dims[0] = cnp.PyArray_SIZE(out)
    with _np.errstate(all="ignore"):
        loop(args, dims, steps, data)
        return out.tobytes() == uf(*operands).tobytes()


cdef _install_numpy_loops():
    cdef void* data = NULL
    cdef bp_ufunc_loop loop
    cdef int index, op
    for index, typenum, dtype in [(0, cnp.NPY_DOUBLE, _np.float64), (1, cnp.NPY_FLOAT, _np.float32)]:
        x = _PROBE.astype(dtype)
        one = _np.array(1, dtype)
        for op, uf, operands in [(BP_NP_NEGATIVE, _np.negative, (x,)), (BP_NP_EXP, _np.exp, (x,)),
                                 (BP_NP_ADD, _np.add, (x, one)), (BP_NP_DIVIDE, _np.divide, (one, x))]:
            loop = _ufunc_loop(uf, typenum, &data)
            if loop != NULL and _gives_ufunc_results(loop, data, uf, operands):
                bp_np_install(op, index, loop, data)
        if not bp_np_exp_flags_overflow(index):
            bp_np_install(BP_NP_EXP, index, NULL, NULL)
    bp_np_select(-1)


_install_numpy_loops()


def exp_source():
    """Where the exp of sigmoid_forward and the softmax kernels comes from.

    "numpy": NumPy's own loops, called on blocks of the data from the
    portable loops (by default in x86-64 builds without per-CPU versions, whose
    baseline code loses to NumPy's per-CPU loops); "bprop": bprop's own
    (``src/exp.h``), vectorised at the level the loops run at.
    """
    return "numpy" if bp_np_selected() and not bp_avx512_selected() else "bprop"


def _numpy_loops(on=None):
    """Tests only: with on True the portable loops take NumPy's (where all were found), with
    False their own. Returns whether they took NumPy's before."""
    cdef bint before = bp_np_selected()
    if on is not None:
        bp_np_select(bool(on))
    return before
