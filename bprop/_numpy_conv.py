"""NumPy twin of the convolution and pooling kernels (``bprop/_kernels_conv.pxi``).

Same names, signatures and results: im2col and pooling copy and compare
values, and col2im adds each input cell's contributions in the order of the
window offset (ky, kx), starting from +0.0, as the compiled loops and the
book do, so those agree bit for bit. Only ``conv_bias_grad`` sums in a
different order (both in float64).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "POOL_MAX_WINDOW", "im2col_rows", "col2im_rows", "im2col_kp", "col2im_kp",
    "pool_forward", "pool_backward", "conv_bias_add", "conv_bias_grad", "conv_forward", "conv_backward_data",
]

#: Windows up to this many cells keep their argmax in one byte (uint8).
POOL_MAX_WINDOW = 256


def _out_size(h, w, fh, fw, stride, pad):
    return (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1


def _windows(x, fh, fw, stride, pad, fill=0):
    """A (N, C, fh, fw, oh, ow) view of x padded by ``fill``: [.., ky, kx, i, j] is the cell
    offset (ky, kx) in window (i, j)."""
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, fh, fw, stride, pad)
    if pad:
        padded = np.full((n, c, h + 2 * pad, w + 2 * pad), fill, x.dtype)
        padded[:, :, pad:pad + h, pad:pad + w] = x
    else:
        padded = np.ascontiguousarray(x)
    sn, sc, sh, sw = padded.strides
    return as_strided(padded, (n, c, fh, fw, oh, ow), (sn, sc, sh, sw, sh * stride, sw * stride), writeable=False)


def im2col_rows(x, fh, fw, stride, pad, col):
    """The book's im2col: col (N oh ow, C fh fw) of x (N, C, H, W). Returns col; None is allocated."""
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, fh, fw, stride, pad)
    if col is None:
        col = np.empty((n * oh * ow, c * fh * fw), x.dtype)
    col.reshape(n, oh, ow, c, fh, fw)[...] = _windows(x, fh, fw, stride, pad).transpose(0, 4, 5, 1, 2, 3)
    return col


def im2col_kp(x, fh, fw, stride, pad, col):
    """Per-sample im2col: col (N, C fh fw, oh ow) of x (N, C, H, W). Returns col; None is allocated."""
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, fh, fw, stride, pad)
    if col is None:
        col = np.empty((n, c * fh * fw, oh * ow), x.dtype)
    col.reshape(n, c, fh, fw, oh, ow)[...] = _windows(x, fh, fw, stride, pad)
    return col


def _scatter(windows, img, fh, fw, stride, pad):
    """img = the sum of windows[n, c, ky, kx, i, j] over the cells they cover, offsets in order."""
    n, c, h, w = img.shape
    oh, ow = windows.shape[4:]
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), img.dtype)
    with np.errstate(all="ignore"):
        for ky in range(fh):
            for kx in range(fw):
                padded[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride] += windows[:, :, ky, kx]
    img[...] = padded[:, :, pad:pad + h, pad:pad + w]
    return img


def col2im_rows(col, fh, fw, stride, pad, img):
    """The book's col2im: img (N, C, H, W) = the windows of col (N oh ow, C fh fw) added. Returns img."""
    n, c, h, w = img.shape
    oh, ow = _out_size(h, w, fh, fw, stride, pad)
    windows = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    return _scatter(windows, img, fh, fw, stride, pad)


def col2im_kp(col, fh, fw, stride, pad, img):
    """img (N, C, H, W) = the windows of the per-sample col (N, C fh fw, oh ow) added. Returns img."""
    n, c, h, w = img.shape
    oh, ow = _out_size(h, w, fh, fw, stride, pad)
    return _scatter(col.reshape(n, c, fh, fw, oh, ow), img, fh, fw, stride, pad)


def _inside(h, w, fh, fw, stride, pad):
    """(fh, fw, oh, ow) bool: whether offset (ky, kx) of window (i, j) is an input cell, not padding."""
    oh, ow = _out_size(h, w, fh, fw, stride, pad)
    rows = np.arange(oh)[None, :] * stride + np.arange(fh)[:, None] - pad
    cols = np.arange(ow)[None, :] * stride + np.arange(fw)[:, None] - pad
    return (((rows >= 0) & (rows < h))[:, None, :, None]) & (((cols >= 0) & (cols < w))[None, :, None, :])


def pool_forward(x, ph, pw, stride, pad, out, arg):
    """Max pooling of x (N, C, H, W): out (N, C, oh, ow) and arg, the winner's offset
    ky * pw + kx in its window (the first maximum; padding never wins). Returns (out, arg);
    None outputs are allocated (arg uint8 for windows up to 256 cells, else intp)."""
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, ph, pw, stride, pad)
    if out is None:
        out = np.empty((n, c, oh, ow), x.dtype)
    if arg is None:
        arg = np.empty((n, c, oh, ow), np.uint8 if ph * pw <= POOL_MAX_WINDOW else np.intp)
    # (N, C, oh, ow, ph * pw): each window's cells in offset order.
    cells = _windows(x, ph, pw, stride, pad).transpose(0, 1, 4, 5, 2, 3).reshape(n, c, oh, ow, ph * pw)
    inside = _inside(h, w, ph, pw, stride, pad).transpose(2, 3, 0, 1).reshape(oh, ow, ph * pw)
    with np.errstate(all="ignore"):
        top = np.max(np.where(inside, cells, -np.inf), axis=-1, keepdims=True) if cells.size else cells[..., :1]
        hit = (cells == top) | (np.isnan(cells) & np.isnan(top))
    first = np.argmax(hit & inside, axis=-1) if cells.size else np.zeros((n, c, oh, ow), np.intp)
    if cells.size:
        out[...] = np.take_along_axis(cells, first[..., None], axis=-1)[..., 0]
    arg[...] = first
    return out, arg


def pool_backward(dout, arg, ph, pw, stride, pad, dx):
    """dx (N, C, H, W): each dout (N, C, oh, ow) added to its window's winner arg. Returns dx."""
    n, c, h, w = dx.shape
    oh, ow = _out_size(h, w, ph, pw, stride, pad)
    windows = np.zeros((n, c, ph, pw, oh, ow), dx.dtype)
    for ky in range(ph):
        for kx in range(pw):
            windows[:, :, ky, kx] = np.where(arg == ky * pw + kx, dout, 0)
    return _scatter(windows, dx, ph, pw, stride, pad)


def conv_bias_add(y, b):
    """y (N, F, oh, ow) += b (F,) per channel, in place."""
    with np.errstate(all="ignore"):
        y += b[None, :, None, None]


def conv_bias_grad(dout, db):
    """db (F,) = dout (N, F, oh, ow) summed over all but the channel axis (in float64).
    Returns db; None is allocated."""
    if db is None:
        db = np.empty(dout.shape[1], dout.dtype)
    with np.errstate(all="ignore"):
        db[...] = np.sum(dout, axis=(0, 2, 3), dtype=np.float64)
    return db


def conv_forward(x, W, b, stride, pad, col, out):
    """Convolution of x (N, C, H, W) with W (F, C, FH, FW) plus b (F,): col[n] = im2col
    (C FH FW, OH OW), out[n] = W (F, C FH FW) @ col[n] + b. Returns (col, out); None outputs
    are allocated."""
    f, c, fh, fw = W.shape
    col = im2col_kp(x, fh, fw, stride, pad, col)
    n, oh, ow = x.shape[0], *_out_size(x.shape[2], x.shape[3], fh, fw, stride, pad)
    if out is None:
        out = np.empty((n, f, oh, ow), x.dtype)
    with np.errstate(all="ignore"):
        np.matmul(W.reshape(f, c * fh * fw), col, out=out.reshape(n, f, oh * ow))
    conv_bias_add(out, b)
    return col, out


def conv_backward_data(dout, W, stride, pad, dx):
    """dx (N, C, H, W) = col2im of W.T (C FH FW, F) @ dout[n] (F, OH OW). Returns dx."""
    f, c, fh, fw = W.shape
    n, p = dout.shape[0], dout.shape[2] * dout.shape[3]
    with np.errstate(all="ignore"):
        dcol = np.matmul(W.reshape(f, c * fh * fw).T, dout.reshape(n, f, p))
    return col2im_kp(dcol, fh, fw, stride, pad, dx)
