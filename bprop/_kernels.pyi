"""Type stub for the compiled kernels (bprop/_kernels.pyx).

Arrays must be C-contiguous, aligned, native float32 or float64 (one dtype
per call); labels int64; masks bool. Outputs are written in place; where
an output may be None the kernel allocates it and returns it. Refused
arguments raise bprop._errors.KernelTypeError (dtype, byte order) or
KernelValueError (layout, size, label range), subclasses of TypeError and
ValueError and of KernelArgumentError; nothing is computed then. The NumPy twin,
bprop._numpy_kernels, has the same names and signatures.
"""
import numpy as np
import numpy.typing as npt

_Float = np.floating
_FloatArray = npt.NDArray[np.floating]

SIMD_PATHS: tuple[str, ...]
LEVELS: tuple[str, ...]

def set_simd(name: str) -> None:
    """Loops to run: "avx512" (hand-written, needs AVX-512), "portable" (at the
    best level this CPU has), a level ("x86-64-v4", "x86-64-v3", "baseline")
    or "auto"."""

def get_simd() -> str:
    """The loops in use: "avx512" or "portable"."""

def small_product_loops() -> str:
    """The loops under affine_forward / affine_backward: "avx512", "avx2" (register-blocked)
    or "portable" (a plain loop); "numpy" in the NumPy twin."""

def _avx2_products(on: bool | None = None) -> bool:
    """Tests only: with on False the products leave the AVX2 loops for the plain one; True takes
    them back where the CPU has them. Returns whether they were in use."""
def simd_level() -> str:
    """The level the portable loops run at: "x86-64-v4", "x86-64-v3" or "baseline"."""

def per_cpu_versions() -> bool:
    """True when the portable loops were compiled per CPU level."""

def exp_source() -> str:
    """Where the exp of sigmoid_forward and the softmax kernels comes from: "numpy" (NumPy's
    own loops, called on blocks from the portable loops; by default in x86-64 builds without
    per-CPU versions) or "bprop" (bprop's own, vectorised per CPU level)."""

def _numpy_loops(on: bool | None = None) -> bool:
    """Tests only: with on True the portable loops take NumPy's loops (where all were found),
    with False their own. Returns whether they took NumPy's before."""

def _stream_min_bytes(n: int | None = None) -> int:
    """Tests only: results of at least this many bytes are written with streaming
    stores (AVX-512 loops); sets it to n when given. Returns the previous value."""

def openmp_enabled() -> bool: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def default_num_threads() -> int: ...

def relu_forward(
    x: _FloatArray, out: _FloatArray | None, mask: npt.NDArray[np.bool_] | None
) -> tuple[_FloatArray, npt.NDArray[np.bool_]]:
    """mask = x <= 0; out = 0 where mask else x (any shape, equal sizes).

    Returns (out, mask); an output given as None is allocated C-ordered in x's shape."""

def relu_backward(dout: _FloatArray, mask: npt.NDArray[np.bool_], dx: _FloatArray | None) -> _FloatArray:
    """dx = 0 where mask else dout. Returns dx (allocated when None)."""

def sigmoid_forward(x: _FloatArray, out: _FloatArray | None) -> _FloatArray:
    """out = 1 / (1 + exp(-x)), overflow-free. Returns out (allocated when None)."""

def sigmoid_backward(dout: _FloatArray, out: _FloatArray, dx: _FloatArray | None) -> _FloatArray:
    """dx = dout * (1 - out) * out. Returns dx (allocated when None)."""

def add_bias(y: _FloatArray, b: _FloatArray) -> None:
    """y (N, M) += b (M,), in place."""

def column_sum(a: _FloatArray, out: _FloatArray) -> None:
    """out (M,) = a (N, M).sum(axis=0), rows in order."""

def affine_forward(x: _FloatArray, W: _FloatArray, b: _FloatArray, out: _FloatArray | None) -> _FloatArray:
    """out (N, M) = x (N, D) @ W (D, M) + b (M,), summed over D in order, then b added.

    Returns out (allocated when None; must not overlap an input)."""

def affine_backward(
    dout: _FloatArray, x: _FloatArray, W: _FloatArray, input_grad: bool
) -> tuple[_FloatArray | None, _FloatArray, _FloatArray]:
    """(dout @ W.T or None unless input_grad, x.T @ dout, dout.sum(axis=0)), newly allocated."""

def softmax_forward(x: _FloatArray, y: _FloatArray) -> None:
    """y (N, C) = softmax(x (N, C)) row-wise."""

def softmax_xent_labels_forward(x: _FloatArray, t: npt.NDArray[np.int64], y: _FloatArray) -> float:
    """y = softmax(x); returns the mean cross-entropy against labels t (N,)."""

def softmax_xent_onehot_forward(x: _FloatArray, t: _FloatArray, y: _FloatArray) -> float:
    """y = softmax(x); returns the mean cross-entropy against one-hot t (N, C)."""

def softmax_xent_labels_backward(
    y: _FloatArray, t: npt.NDArray[np.int64], dx: _FloatArray | None
) -> _FloatArray:
    """dx = (y - onehot(t)) / N. Returns dx (allocated when None)."""

def softmax_xent_onehot_backward(y: _FloatArray, t: _FloatArray, dx: _FloatArray | None) -> _FloatArray:
    """dx = (y - t) / N. Returns dx (allocated when None)."""

def batchnorm_forward(
    x: _FloatArray, gamma: _FloatArray, beta: _FloatArray, eps: float, out: _FloatArray | None,
    xc: _FloatArray | None
) -> tuple[_FloatArray, _FloatArray, _FloatArray, _FloatArray, _FloatArray]:
    """Training forward over the rows of x (N, D), N >= 1, gamma and beta (D,):
    (out, xc, mu, var, std) with column statistics summed in double and
    out = gamma * (xc / std) + beta. out and xc (N, D) are written into when
    given (x's dtype, overlapping no other argument), else allocated."""

def batchnorm_backward(
    dout: _FloatArray, xc: _FloatArray, gamma: _FloatArray, std: _FloatArray, dx: _FloatArray | None
) -> tuple[_FloatArray, _FloatArray, _FloatArray]:
    """(dx, dgamma, dbeta) for dout and xc (N, D), N >= 1, gamma and std (D,);
    dx is written into when given (dout's dtype, overlapping no other
    argument), else allocated."""

# --- Convolution and pooling (bprop/_kernels_conv.pxi; loops in bprop/src/conv.h) ---------------
# Images are (N, C, H, W); a window of fh x fw moves by stride over the input padded by pad,
# giving oh = (H + 2 pad - fh) // stride + 1 rows (likewise ow). Refused: stride < 1, pad < 0,
# a window larger than the padded input, any array of another shape than stated.

POOL_MAX_WINDOW: int

def im2col_rows(x: _FloatArray, fh: int, fw: int, stride: int, pad: int, col: _FloatArray | None) -> _FloatArray:
    """The book's im2col: col (N oh ow, C fh fw). Returns col (allocated when None)."""

def col2im_rows(col: _FloatArray, fh: int, fw: int, stride: int, pad: int, img: _FloatArray) -> _FloatArray:
    """The book's col2im into img (N, C, H, W), added in the book's order. Returns img."""

def im2col_kp(x: _FloatArray, fh: int, fw: int, stride: int, pad: int, col: _FloatArray | None) -> _FloatArray:
    """Per-sample im2col: col (N, C fh fw, oh ow). Returns col (allocated when None)."""

def col2im_kp(col: _FloatArray, fh: int, fw: int, stride: int, pad: int, img: _FloatArray) -> _FloatArray:
    """img (N, C, H, W) from the per-sample col (N, C fh fw, oh ow). Returns img."""

def pool_forward(
    x: _FloatArray, ph: int, pw: int, stride: int, pad: int, out: _FloatArray | None,
    arg: npt.NDArray[np.uint8] | None,
) -> tuple[_FloatArray, npt.NDArray[np.uint8]]:
    """Max pooling: out (N, C, oh, ow) and arg, each window's first maximum as ky * pw + kx
    (padding never wins; pad < ph and pw; at most POOL_MAX_WINDOW cells). Returns (out, arg)."""

def pool_backward(
    dout: _FloatArray, arg: npt.NDArray[np.uint8], ph: int, pw: int, stride: int, pad: int, dx: _FloatArray
) -> _FloatArray:
    """dx (N, C, H, W): each dout at its window's winner (overlaps added in the book's order). Returns dx."""

def conv_bias_add(y: _FloatArray, b: _FloatArray) -> None:
    """y (N, F, oh, ow) += b (F,), in place."""

def conv_bias_grad(dout: _FloatArray, db: _FloatArray | None) -> _FloatArray:
    """db (F,) = dout (N, F, oh, ow) summed over all but axis 1, in double. Returns db."""

def conv_forward(
    x: _FloatArray, W: _FloatArray, b: _FloatArray, stride: int, pad: int, col: _FloatArray | None,
    out: _FloatArray | None,
) -> tuple[_FloatArray, _FloatArray]:
    """col (N, C fh fw, oh ow) = per-sample im2col of x; out (N, F, oh, ow) = W (F, C, fh, fw) @ col[n] + b.
    Returns (col, out) (allocated when None; must not overlap an input)."""

def conv_backward_data(dout: _FloatArray, W: _FloatArray, stride: int, pad: int, dx: _FloatArray) -> _FloatArray:
    """dx (N, C, H, W) = col2im of W.T @ dout[n] per sample. Returns dx."""
