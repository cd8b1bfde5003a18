"""The book's ``Dropout`` layer (chapter 6)."""
import numpy as np

from ._validate import array, require_forward, same_shape

__all__ = ["Dropout"]


class Dropout:
    """Dropout (Srivastava et al.), exactly as the book's: not inverted.

    Training keeps each activation with probability ``1 - dropout_ratio``
    (``mask = np.random.rand(*x.shape) > dropout_ratio``, so a seed of
    NumPy's global generator gives the book's masks); evaluation scales by
    ``1 - dropout_ratio`` instead.

    Parameters
    ----------
    dropout_ratio : float
        The probability of dropping an activation, in [0, 1].

    Attributes
    ----------
    mask : ndarray of bool or None
        Which activations the last training forward kept.
    """

    def __init__(self, dropout_ratio=0.5):
        ratio = float(dropout_ratio)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"Dropout: dropout_ratio must lie in [0, 1]; got {dropout_ratio!r}")
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        """Return ``x * mask`` (training) or ``x * (1 - dropout_ratio)``; ``x`` is not modified."""
        x = array("Dropout.forward", "x", x)
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        """Return ``dout * mask`` for the last training forward's mask."""
        require_forward("Dropout.backward", self.mask)
        dout = array("Dropout.backward", "dout", dout)
        same_shape("Dropout.backward", "dout", dout, "the last training forward's x", self.mask.shape)
        return dout * self.mask
