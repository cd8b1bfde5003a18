# Convolution and pooling kernels (included at the end of _kernels.pyx; the
# loops are in src/conv.h, which states the geometry and the layouts).
#
# Every entry point checks, before any work, the dtype, byte order,
# alignment and C-contiguity of each array, that outputs are writeable, and
# every size the loops index: the window geometry (stride >= 1, pad >= 0,
# a window that fits the padded input) and each array's full shape.

from cython.parallel cimport prange

# Each name calls its version for the level the portable loops run at
# (BP_AT, src/platform.h).
cdef extern from "src/conv.h" nogil:
    void bp_im2col_kp_f64 "BP_AT(bp_im2col_kp_f64)"(const double* x, double* col, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_im2col_kp_f32 "BP_AT(bp_im2col_kp_f32)"(const float* x, float* col, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_col2im_kp_f64 "BP_AT(bp_col2im_kp_f64)"(const double* col, double* img, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_col2im_kp_f32 "BP_AT(bp_col2im_kp_f32)"(const float* col, float* img, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_im2col_rows_f64 "BP_AT(bp_im2col_rows_f64)"(const double* x, double* col, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_im2col_rows_f32 "BP_AT(bp_im2col_rows_f32)"(const float* x, float* col, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_col2im_rows_f64 "BP_AT(bp_col2im_rows_f64)"(const double* col, double* img, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_col2im_rows_f32 "BP_AT(bp_col2im_rows_f32)"(const float* col, float* img, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_pool_fwd_f64 "BP_POOL_FWD_F64"(const double* x, double* out, uint8_t* arg, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_pool_fwd_f32 "BP_POOL_FWD_F32"(const float* x, float* out, uint8_t* arg, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t oh, Py_ssize_t ow)
    void bp_pool_bwd_f64 "BP_AT(bp_pool_bwd_f64)"(const double* dout, const uint8_t* arg, double* dx, Py_ssize_t planes, Py_ssize_t H,
                         Py_ssize_t W, Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad,
                         Py_ssize_t oh, Py_ssize_t ow)
    void bp_pool_bwd_f32 "BP_AT(bp_pool_bwd_f32)"(const float* dout, const uint8_t* arg, float* dx, Py_ssize_t planes, Py_ssize_t H,
                         Py_ssize_t W, Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t s, Py_ssize_t pad,
                         Py_ssize_t oh, Py_ssize_t ow)
    void bp_conv_bias_f64 "BP_AT(bp_conv_bias_f64)"(double* y, const double* b, Py_ssize_t N, Py_ssize_t F, Py_ssize_t p)
    void bp_conv_bias_f32 "BP_AT(bp_conv_bias_f32)"(float* y, const float* b, Py_ssize_t N, Py_ssize_t F, Py_ssize_t p)
    void bp_conv_bias_grad_f64 "BP_AT(bp_conv_bias_grad_f64)"(const double* dout, double* db, Py_ssize_t N, Py_ssize_t F, Py_ssize_t p)
    void bp_conv_bias_grad_f32 "BP_AT(bp_conv_bias_grad_f32)"(const float* dout, float* db, Py_ssize_t N, Py_ssize_t F, Py_ssize_t p)
    void bp_conv_gemm_f64 "bp_conv_product_f64"(const double* A, Py_ssize_t ars, Py_ssize_t acs, const double* B, double* C,
                          const double* bias, Py_ssize_t M, Py_ssize_t Kd, Py_ssize_t P)
    void bp_conv_gemm_f32 "bp_conv_product_f32"(const float* A, Py_ssize_t ars, Py_ssize_t acs, const float* B, float* C,
                          const float* bias, Py_ssize_t M, Py_ssize_t Kd, Py_ssize_t P)


#: The window argmax is kept as one byte per output: windows up to 256 cells.
POOL_MAX_WINDOW = 256


cdef struct _Geom:
    Py_ssize_t n, c, h, w, fh, fw, s, pad, oh, ow


cdef int _geometry(str fn, _Geom* g, Py_ssize_t n, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                   Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t stride, Py_ssize_t pad) except -1:
    """Check a window geometry and fill g with it and its output size."""
    if stride < 1:
        raise _RefusedValue(f"{fn}: stride must be >= 1, got {stride}")
    if pad < 0:
        raise _RefusedValue(f"{fn}: pad must be >= 0, got {pad}")
    if fh < 1 or fw < 1:
        raise _RefusedValue(f"{fn}: the window must be at least 1 x 1, got {fh} x {fw}")
    if fh > h + 2 * pad or fw > w + 2 * pad:
        raise _RefusedValue(f"{fn}: a {fh} x {fw} window does not fit a {h} x {w} input padded by {pad}")
    g.n, g.c, g.h, g.w, g.fh, g.fw, g.s, g.pad = n, c, h, w, fh, fw, stride, pad
    g.oh = (h + 2 * pad - fh) // stride + 1
    g.ow = (w + 2 * pad - fw) // stride + 1
    return 0


cdef int _shape(str fn, str name, cnp.ndarray a, tuple shape) except -1:
    cdef int nd = len(shape), i
    if cnp.PyArray_NDIM(a) != nd:
        raise _RefusedValue(f"{fn}: {name} must have shape {shape}, got {(<object>a).shape}")
    for i in range(nd):
        if a.shape[i] != <Py_ssize_t>shape[i]:
            raise _RefusedValue(f"{fn}: {name} must have shape {shape}, got {(<object>a).shape}")
    return 0


cdef int _image(str fn, str name, cnp.ndarray a) except -1:
    if cnp.PyArray_NDIM(a) != 4:
        raise _RefusedValue(f"{fn}: {name} must be 4-D (N, C, H, W), got shape {(<object>a).shape}")
    return 0


cdef inline cnp.ndarray _new_shape(tuple shape, int typenum):
    cdef cnp.npy_intp dims[4]
    cdef int i, nd = len(shape)
    for i in range(nd):
        dims[i] = shape[i]
    return cnp.PyArray_EMPTY(nd, dims, typenum, 0)


cdef inline int _chunked(Py_ssize_t items, Py_ssize_t work_per_item) noexcept nogil:
    """Threads for a loop over `items` independent items."""
    cdef int nt = _threads_for(items * work_per_item)
    return <int>min(<Py_ssize_t>nt, items) if items > 0 else 1


def im2col_rows(cnp.ndarray x not None, Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t stride, Py_ssize_t pad,
                cnp.ndarray col):
    """The book's im2col: col (N oh ow, C fh fw) of x (N, C, H, W). Returns col; None is allocated."""
    cdef str fn = "im2col_rows"
    cdef int t = _arg(fn, "x", x, -1, _IN)
    _image(fn, "x", x)
    cdef _Geom g
    _geometry(fn, &g, x.shape[0], x.shape[1], x.shape[2], x.shape[3], fh, fw, stride, pad)
    cdef tuple shape = (g.n * g.oh * g.ow, g.c * g.fh * g.fw)
    if col is None:
        col = _new_shape(shape, t)
    _arg(fn, "col", col, t, _OUT)
    _shape(fn, "col", col, shape)
    _disjoint(fn, "col", col, x, "x")
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* cp = cnp.PyArray_DATA(col)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bp_im2col_rows_f64(<double*>xp, <double*>cp, g.n, g.c, g.h, g.w, g.fh, g.fw, g.s, g.pad, g.oh, g.ow)
        else:
            bp_im2col_rows_f32(<float*>xp, <float*>cp, g.n, g.c, g.h, g.w, g.fh, g.fw, g.s, g.pad, g.oh, g.ow)
    return col


def col2im_rows(cnp.ndarray col not None, Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t stride, Py_ssize_t pad,
                cnp.ndarray img not None):
    """The book's col2im: img (N, C, H, W) = the windows of col (N oh ow, C fh fw) added in the
    book's order. Returns img."""
    cdef str fn = "col2im_rows"
    cdef int t = _arg(fn, "col", col, -1, _IN)
    _arg(fn, "img", img, t, _OUT)
    _image(fn, "img", img)
    cdef _Geom g
    _geometry(fn, &g, img.shape[0], img.shape[1], img.shape[2], img.shape[3], fh, fw, stride, pad)
    _shape(fn, "col", col, (g.n * g.oh * g.ow, g.c * g.fh * g.fw))
    _disjoint(fn, "img", img, col, "col")
    cdef void* cp = cnp.PyArray_DATA(col)
    cdef void* ip = cnp.PyArray_DATA(img)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bp_col2im_rows_f64(<double*>cp, <double*>ip, g.n, g.c, g.h, g.w, g.fh, g.fw, g.s, g.pad, g.oh, g.ow)
        else:
            bp_col2im_rows_f32(<float*>cp, <float*>ip, g.n, g.c, g.h, g.w, g.fh, g.fw, g.s, g.pad, g.oh, g.ow)
    return img


def im2col_kp(cnp.ndarray x not None, Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t stride, Py_ssize_t pad,
              cnp.ndarray col):
    """Per-sample im2col: col (N, C fh fw, oh ow) of x (N, C, H, W), so that W (F, C fh fw) @ col[n]
    is sample n's (F, oh ow) output. Returns col; None is allocated."""
    cdef str fn = "im2col_kp"
    cdef int t = _arg(fn, "x", x, -1, _IN)
    _image(fn, "x", x)
    cdef _Geom g
    _geometry(fn, &g, x.shape[0], x.shape[1], x.shape[2], x.shape[3], fh, fw, stride, pad)
    cdef tuple shape = (g.n, g.c * g.fh * g.fw, g.oh * g.ow)
    if col is None:
        col = _new_shape(shape, t)
    _arg(fn, "col", col, t, _OUT)
    _shape(fn, "col", col, shape)
    _disjoint(fn, "col", col, x, "x")
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* cp = <char*>cnp.PyArray_DATA(col)
    cdef Py_ssize_t n, xs = g.c * g.h * g.w, cs = shape[1] * shape[2]
    cdef int nt = _chunked(g.n, cs)
    with nogil:
        for n in prange(g.n, schedule="static", num_threads=nt):
            if t == cnp.NPY_DOUBLE:
                bp_im2col_kp_f64(<double*>xp + n * xs, <double*>cp + n * cs, g.c, g.h, g.w, g.fh, g.fw,
                                 g.s, g.pad, g.oh, g.ow)
            else:
                bp_im2col_kp_f32(<float*>xp + n * xs, <float*>cp + n * cs, g.c, g.h, g.w, g.fh, g.fw,
                                 g.s, g.pad, g.oh, g.ow)
    return col


def col2im_kp(cnp.ndarray col not None, Py_ssize_t fh, Py_ssize_t fw, Py_ssize_t stride, Py_ssize_t pad,
              cnp.ndarray img not None):
    """img (N, C, H, W) = the windows of the per-sample col (N, C fh fw, oh ow) added in the book's
    order. Returns img."""
    cdef str fn = "col2im_kp"
    cdef int t = _arg(fn, "col", col, -1, _IN)
    _arg(fn, "img", img, t, _OUT)
    _image(fn, "img", img)
    cdef _Geom g
    _geometry(fn, &g, img.shape[0], img.shape[1], img.shape[2], img.shape[3], fh, fw, stride, pad)
    _shape(fn, "col", col, (g.n, g.c * g.fh * g.fw, g.oh * g.ow))
    _disjoint(fn, "img", img, col, "col")
    cdef char* cp = <char*>cnp.PyArray_DATA(col)
    cdef char* ip = <char*>cnp.PyArray_DATA(img)
    cdef Py_ssize_t n, xs = g.c * g.h * g.w, cs = g.c * g.fh * g.fw * g.oh * g.ow
    cdef int nt = _chunked(g.n, cs)
    with nogil:
        for n in prange(g.n, schedule="static", num_threads=nt):
            if t == cnp.NPY_DOUBLE:
                bp_col2im_kp_f64(<double*>cp + n * cs, <double*>ip + n * xs, g.c, g.h, g.w, g.fh, g.fw,
                                 g.s, g.pad, g.oh, g.ow)
            else:
                bp_col2im_kp_f32(<float*>cp + n * cs, <float*>ip + n * xs, g.c, g.h, g.w, g.fh, g.fw,
                                 g.s, g.pad, g.oh, g.ow)
    return img


cdef int _pool_geometry(str fn, _Geom* g, cnp.ndarray x, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride,
                        Py_ssize_t pad) except -1:
    _image(fn, "x", x)
    _geometry(fn, g, x.shape[0], x.shape[1], x.shape[2], x.shape[3], ph, pw, stride, pad)
    if ph * pw > POOL_MAX_WINDOW:
        raise _RefusedValue(f"{fn}: a {ph} x {pw} window has more than {POOL_MAX_WINDOW} cells")
    if pad >= ph or pad >= pw:
        raise _RefusedValue(f"{fn}: pad {pad} must be smaller than the {ph} x {pw} window")
    return 0


def pool_forward(cnp.ndarray x not None, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, Py_ssize_t pad,
                 cnp.ndarray out, cnp.ndarray arg):
    """Max pooling of x (N, C, H, W): out (N, C, oh, ow) and arg (uint8, same shape), the winner's
    offset ky * pw + kx in its window (the first maximum; padding never wins).
    Returns (out, arg); None outputs are allocated."""
    cdef str fn = "pool_forward"
    cdef int t = _arg(fn, "x", x, -1, _IN)
    cdef _Geom g
    _pool_geometry(fn, &g, x, ph, pw, stride, pad)
    cdef tuple shape = (g.n, g.c, g.oh, g.ow)
    if out is None:
        out = _new_shape(shape, t)
    if arg is None:
        arg = _new_shape(shape, cnp.NPY_UINT8)
    _arg(fn, "out", out, t, _OUT)
    _arg(fn, "arg", arg, cnp.NPY_UINT8, _OUT)
    _shape(fn, "out", out, shape)
    _shape(fn, "arg", arg, shape)
    _disjoint(fn, "out", out, x, "x")
    _disjoint(fn, "arg", arg, x, "x")
    _disjoint(fn, "arg", arg, out, "out")
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* op = <char*>cnp.PyArray_DATA(out)
    cdef uint8_t* ap = <uint8_t*>cnp.PyArray_DATA(arg)
    cdef Py_ssize_t planes = g.n * g.c, ins = g.h * g.w, outs = g.oh * g.ow, c, lo, chunk
    cdef int nt = _chunked(planes, ins)
    if planes == 0 or outs == 0:
        return out, arg
    chunk = (planes + nt - 1) // nt
    with nogil:
        for c in prange(nt, schedule="static", num_threads=nt):
            lo = c * chunk
            if lo < planes:
                if t == cnp.NPY_DOUBLE:
                    bp_pool_fwd_f64(<double*>xp + lo * ins, <double*>op + lo * outs, ap + lo * outs,
                                    min(chunk, planes - lo), g.h, g.w, g.fh, g.fw, g.s, g.pad, g.oh, g.ow)
                else:
                    bp_pool_fwd_f32(<float*>xp + lo * ins, <float*>op + lo * outs, ap + lo * outs,
                                    min(chunk, planes - lo), g.h, g.w, g.fh, g.fw, g.s, g.pad, g.oh, g.ow)
    return out, arg


def pool_backward(cnp.ndarray dout not None, cnp.ndarray arg not None, Py_ssize_t ph, Py_ssize_t pw,
                  Py_ssize_t stride, Py_ssize_t pad, cnp.ndarray dx not None):
    """dx (N, C, H, W): each dout (N, C, oh, ow) added to its window's winner arg (as from
    pool_forward; offsets must be < ph * pw). Returns dx."""
    cdef str fn = "pool_backward"
    cdef int t = _arg(fn, "dout", dout, -1, _IN)
    _arg(fn, "arg", arg, cnp.NPY_UINT8, _IN)
    _arg(fn, "dx", dx, t, _OUT)
    cdef _Geom g
    _pool_geometry(fn, &g, dx, ph, pw, stride, pad)
    cdef tuple shape = (g.n, g.c, g.oh, g.ow)
    _shape(fn, "dout", dout, shape)
    _shape(fn, "arg", arg, shape)
    _disjoint(fn, "dx", dx, dout, "dout")
    _disjoint(fn, "dx", dx, arg, "arg")
    cdef char* dp = <char*>cnp.PyArray_DATA(dout)
    cdef char* xp = <char*>cnp.PyArray_DATA(dx)
    cdef uint8_t* ap = <uint8_t*>cnp.PyArray_DATA(arg)
    cdef Py_ssize_t planes = g.n * g.c, ins = g.h * g.w, outs = g.oh * g.ow, c, lo, chunk, i
    # An offset outside the window would write outside dx (or into padding).
    cdef Py_ssize_t size = planes * outs
    cdef uint8_t top = 0
    with nogil:
        # A max, not a search with an early exit: it vectorises.
        for i in range(size):
            top = max(top, ap[i])
    if top >= ph * pw:
        raise _RefusedValue(f"{fn}: arg holds offset {top}, outside the {ph} x {pw} window")
    if pad:
        _pool_arg_inside(fn, ap, &g)
    cdef int nt = _chunked(planes, ins)
    if planes == 0:
        return dx
    chunk = (planes + nt - 1) // nt
    with nogil:
        for c in prange(nt, schedule="static", num_threads=nt):
            lo = c * chunk
            if lo < planes:
                if t == cnp.NPY_DOUBLE:
                    bp_pool_bwd_f64(<double*>dp + lo * outs, ap + lo * outs, <double*>xp + lo * ins,
                                    min(chunk, planes - lo), g.h, g.w, g.fh, g.fw, g.s, g.pad, g.oh, g.ow)
                else:
                    bp_pool_bwd_f32(<float*>dp + lo * outs, ap + lo * outs, <float*>xp + lo * ins,
                                    min(chunk, planes - lo), g.h, g.w, g.fh, g.fw, g.s, g.pad, g.oh, g.ow)
    return dx


cdef int _pool_arg_inside(str fn, const uint8_t* ap, _Geom* g) except -1:
    """With padding, an offset may point at a padded cell: refuse it (it would write outside dx)."""
    cdef Py_ssize_t pl, i, j, r, q, k
    for pl in range(g.n * g.c):
        for i in range(g.oh):
            for j in range(g.ow):
                k = ap[(pl * g.oh + i) * g.ow + j]
                r = i * g.s - g.pad + k // g.fw
                q = j * g.s - g.pad + k % g.fw
                if r < 0 or r >= g.h or q < 0 or q >= g.w:
                    raise _RefusedValue(f"{fn}: arg points window ({i}, {j}) at a padded cell")
    return 0


def conv_bias_add(cnp.ndarray y not None, cnp.ndarray b not None):
    """y (N, F, oh, ow) += b (F,) per channel, in place."""
    cdef str fn = "conv_bias_add"
    cdef int t = _arg(fn, "y", y, -1, _OUT)
    _arg(fn, "b", b, t, _IN)
    _image(fn, "y", y)
    cdef Py_ssize_t n = y.shape[0], f = y.shape[1], p = y.shape[2] * y.shape[3]
    _vector(fn, "b", b, f)
    _disjoint(fn, "y", y, b, "b")
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* bp = cnp.PyArray_DATA(b)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bp_conv_bias_f64(<double*>yp, <double*>bp, n, f, p)
        else:
            bp_conv_bias_f32(<float*>yp, <float*>bp, n, f, p)


def conv_bias_grad(cnp.ndarray dout not None, cnp.ndarray db):
    """db (F,) = dout (N, F, oh, ow) summed over all but the channel axis (in double).
    Returns db; None is allocated."""
    cdef str fn = "conv_bias_grad"
    cdef int t = _arg(fn, "dout", dout, -1, _IN)
    _image(fn, "dout", dout)
    cdef Py_ssize_t n = dout.shape[0], f = dout.shape[1], p = dout.shape[2] * dout.shape[3]
    if db is None:
        db = _new_shape((f,), t)
    _arg(fn, "db", db, t, _OUT)
    _vector(fn, "db", db, f)
    _disjoint(fn, "db", db, dout, "dout")
    cdef void* dp = cnp.PyArray_DATA(dout)
    cdef void* bp = cnp.PyArray_DATA(db)
    with nogil:
        if t == cnp.NPY_DOUBLE:
            bp_conv_bias_grad_f64(<double*>dp, <double*>bp, n, f, p)
        else:
            bp_conv_bias_grad_f32(<float*>dp, <float*>bp, n, f, p)
    return db


cdef int _filters(str fn, cnp.ndarray W, int t, Py_ssize_t c, Py_ssize_t* f, Py_ssize_t* fh, Py_ssize_t* fw) except -1:
    _arg(fn, "W", W, t, _IN)
    if cnp.PyArray_NDIM(W) != 4 or W.shape[1] != c:
        raise _RefusedValue(f"{fn}: W must have shape (F, {c}, FH, FW), got {(<object>W).shape}")
    f[0], fh[0], fw[0] = W.shape[0], W.shape[2], W.shape[3]
    return 0


def conv_forward(cnp.ndarray x not None, cnp.ndarray W not None, cnp.ndarray b not None, Py_ssize_t stride,
                 Py_ssize_t pad, cnp.ndarray col, cnp.ndarray out):
    """Convolution of x (N, C, H, W) with W (F, C, FH, FW) plus b (F,), sample by sample:
    col[n] = im2col (C FH FW, OH OW), out[n] = W (F, C FH FW) @ col[n] + b, each element summed
    over C FH FW in order from zero, then b added. Returns (col, out); None outputs are allocated."""
    cdef str fn = "conv_forward"
    cdef int t = _arg(fn, "x", x, -1, _IN)
    _image(fn, "x", x)
    cdef Py_ssize_t f, fh, fw
    _filters(fn, W, t, x.shape[1], &f, &fh, &fw)
    _arg(fn, "b", b, t, _IN)
    _vector(fn, "b", b, f)
    cdef _Geom g
    _geometry(fn, &g, x.shape[0], x.shape[1], x.shape[2], x.shape[3], fh, fw, stride, pad)
    cdef Py_ssize_t k = g.c * fh * fw, p = g.oh * g.ow
    cdef tuple col_shape = (g.n, k, p), out_shape = (g.n, f, g.oh, g.ow)
    if col is None:
        col = _new_shape(col_shape, t)
    if out is None:
        out = _new_shape(out_shape, t)
    _arg(fn, "col", col, t, _OUT)
    _arg(fn, "out", out, t, _OUT)
    _shape(fn, "col", col, col_shape)
    _shape(fn, "out", out, out_shape)
    for a, name in ((x, "x"), (W, "W"), (b, "b")):
        _disjoint(fn, "col", col, a, name)
        _disjoint(fn, "out", out, a, name)
    _disjoint(fn, "out", out, col, "col")
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* wp = <char*>cnp.PyArray_DATA(W)
    cdef char* bp = <char*>cnp.PyArray_DATA(b)
    cdef char* cp = <char*>cnp.PyArray_DATA(col)
    cdef char* op = <char*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t n, xs = g.c * g.h * g.w, os_ = f * p
    cdef int nt = _chunked(g.n, k * p + f * k * p)
    with nogil:
        for n in prange(g.n, schedule="static", num_threads=nt):
            if t == cnp.NPY_DOUBLE:
                bp_im2col_kp_f64(<double*>xp + n * xs, <double*>cp + n * k * p, g.c, g.h, g.w, fh, fw,
                                 g.s, g.pad, g.oh, g.ow)
                bp_conv_gemm_f64(<double*>wp, k, 1, <double*>cp + n * k * p, <double*>op + n * os_,
                                 <double*>bp, f, k, p)
            else:
                bp_im2col_kp_f32(<float*>xp + n * xs, <float*>cp + n * k * p, g.c, g.h, g.w, fh, fw,
                                 g.s, g.pad, g.oh, g.ow)
                bp_conv_gemm_f32(<float*>wp, k, 1, <float*>cp + n * k * p, <float*>op + n * os_,
                                 <float*>bp, f, k, p)
    return col, out


def conv_backward_data(cnp.ndarray dout not None, cnp.ndarray W not None, Py_ssize_t stride, Py_ssize_t pad,
                       cnp.ndarray dx not None):
    """dx (N, C, H, W) = col2im of W.T (C FH FW, F) @ dout[n] (F, OH OW), sample by sample through a
    scratch buffer of one sample's columns. Returns dx."""
    cdef str fn = "conv_backward_data"
    cdef int t = _arg(fn, "dout", dout, -1, _IN)
    _arg(fn, "dx", dx, t, _OUT)
    _image(fn, "dx", dx)
    _image(fn, "dout", dout)
    cdef Py_ssize_t f, fh, fw
    _filters(fn, W, t, dx.shape[1], &f, &fh, &fw)
    cdef _Geom g
    _geometry(fn, &g, dx.shape[0], dx.shape[1], dx.shape[2], dx.shape[3], fh, fw, stride, pad)
    _shape(fn, "dout", dout, (g.n, f, g.oh, g.ow))
    _disjoint(fn, "dx", dx, dout, "dout")
    _disjoint(fn, "dx", dx, W, "W")
    cdef Py_ssize_t k = g.c * fh * fw, p = g.oh * g.ow
    cdef int nt = _chunked(g.n, 2 * f * k * p)
    cdef size_t itemsize = 8 if t == cnp.NPY_DOUBLE else 4
    cdef char* scratch = NULL
    if g.n and k * p:
        scratch = <char*>malloc(nt * k * p * itemsize)
        if scratch == NULL:
            raise MemoryError(f"{fn}: no memory for {nt} scratch buffers of ({k}, {p})")
    cdef char* dp = <char*>cnp.PyArray_DATA(dout)
    cdef char* wp = <char*>cnp.PyArray_DATA(W)
    cdef char* xp = <char*>cnp.PyArray_DATA(dx)
    cdef Py_ssize_t n, chunk, lo, i, xs = g.c * g.h * g.w
    cdef char* mine
    if g.n == 0:
        free(scratch)
        return dx
    chunk = (g.n + nt - 1) // nt
    with nogil:
        for i in prange(nt, schedule="static", num_threads=nt):
            mine = scratch + i * k * p * itemsize
            for n in range(i * chunk, min(g.n, (i + 1) * chunk)):
                if t == cnp.NPY_DOUBLE:
                    bp_conv_gemm_f64(<double*>wp, 1, k, <double*>dp + n * f * p, <double*>mine, NULL, k, f, p)
                    bp_col2im_kp_f64(<double*>mine, <double*>xp + n * xs, g.c, g.h, g.w, fh, fw, g.s, g.pad,
                                     g.oh, g.ow)
                else:
                    bp_conv_gemm_f32(<float*>wp, 1, k, <float*>dp + n * f * p, <float*>mine, NULL, k, f, p)
                    bp_col2im_kp_f32(<float*>mine, <float*>xp + n * xs, g.c, g.h, g.w, fh, fw, g.s, g.pad,
                                     g.oh, g.ow)
    free(scratch)
    return dx
