"""NumPy twins of the compiled optimizer updates (same names and signatures).

Each is the book's NumPy expression, in place, so for any dtype and layout
(views included) it gives the book's numbers; the compiled loops reproduce
them for contiguous float32/float64 arrays.
"""
import numpy as np

__all__ = ["sgd_update", "momentum_update", "nesterov_update", "adagrad_update", "rmsprop_update", "adam_update"]


def sgd_update(p, g, lr):
    """p -= lr * g, in place."""
    p -= lr * g


def momentum_update(p, g, v, v_new, lr, momentum):
    """v_new = momentum * v - lr * g; p += v_new, in place."""
    v_new[...] = momentum * v - lr * g
    p += v_new


def nesterov_update(p, g, v, lr, momentum):
    """The book's Nesterov step on p and v, in place."""
    p += momentum * momentum * v
    p -= (1 + momentum) * lr * g
    v *= momentum
    v -= lr * g


def adagrad_update(p, g, h, lr):
    """h += g * g; p -= lr * g / (sqrt(h) + 1e-7), in place."""
    h += g * g
    p -= lr * g / (np.sqrt(h) + 1e-7)


def rmsprop_update(p, g, h, lr, decay):
    """h = decay * h + (1 - decay) * g * g; p -= lr * g / (sqrt(h) + 1e-7), in place."""
    h *= decay
    h += (1 - decay) * g * g
    p -= lr * g / (np.sqrt(h) + 1e-7)


def adam_update(p, g, m, v, lr_t, beta1, beta2):
    """The book's Adam step with the bias-corrected rate ``lr_t`` (a NumPy float64, as in the book)."""
    m += (1 - beta1) * (g - m)
    v += (1 - beta2) * (g**2 - v)
    p -= np.float64(lr_t) * m / (np.sqrt(v) + 1e-7)
