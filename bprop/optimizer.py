"""The book's optimizers (``common/optimizer.py``), each parameter updated in one fused pass.

``update(params, grads)`` changes the arrays in ``params`` in place, as the
book's does (the layers hold references to them). On the compiled backend a
contiguous float32/float64 parameter and its gradient go to one kernel that
evaluates the book's NumPy expression element by element in NumPy's order
and precision, so the results are the book's to the last bit; anything else
(views, mixed dtypes, float16) runs the book's NumPy expression itself.
"""
import numbers

import numpy as np

from . import _backend
from . import _numpy_kernels as _twin
from ._errors import KernelArgumentError

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]

#: NumPy before 2 demotes Adam's float64 rate to float32 for float32 arrays
#: (value-based casting); the float32 loop follows NumPy 2, so there the
#: book's own expression runs instead.
_NUMPY2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


def _is_scalar(v):
    return isinstance(v, (numbers.Real, np.number)) and not isinstance(v, (bool, np.bool_)) and np.isrealobj(v)


def _checked(where, params, grads):
    """Check every (param, grad) pair before anything is updated; returns the keys in order.

    A parameter is a floating-point array, updated in place, or a real scalar
    (the book's chapter-6 examples optimise plain floats), which is rebound.
    """
    if not hasattr(params, "keys") or not hasattr(grads, "keys"):
        raise TypeError(f"{where}: params and grads must be dicts of arrays; got "
                        f"{type(params).__name__} and {type(grads).__name__}")
    keys = list(params.keys())
    for key in keys:
        p = params[key]
        if key not in grads:
            raise KeyError(f"{where}: grads has no {key!r} (params has {', '.join(map(repr, keys))})")
        g = grads[key]
        if isinstance(p, np.ndarray):
            if p.dtype.kind != "f":
                raise TypeError(f"{where}: params[{key!r}] must be a floating-point ndarray (updated in place) "
                                f"or a real scalar; got an ndarray of dtype {p.dtype}")
            if not p.flags.writeable:
                raise ValueError(f"{where}: params[{key!r}] is read-only, but it is updated in place")
        elif not _is_scalar(p):
            raise TypeError(f"{where}: params[{key!r}] must be a floating-point ndarray (updated in place) "
                            f"or a real scalar; got {type(p).__name__}")
        if _is_scalar(g):
            continue
        if not isinstance(g, np.ndarray) or g.dtype.kind not in "fiu":
            raise TypeError(f"{where}: grads[{key!r}] must be a real ndarray or scalar; got {type(g).__name__}")
        if g.shape != np.shape(p):
            raise ValueError(f"{where}: grads[{key!r}] has shape {g.shape} but params[{key!r}] has {np.shape(p)}")
    return keys


def _update(name, params, key, g, *rest):
    """Kernel ``name`` on ``params[key]``: in place for an array; a scalar is rebound, as the book's ``-=`` does."""
    p = params[key]
    if type(p) is np.ndarray:
        # The checked kernels, where they have this one (the NumPy backend's
        # entry-checked twin covers only the layers' kernels).
        fast = getattr(_backend.checked, name, None)
        if fast is not None and type(g) is np.ndarray:
            try:
                return fast(p, g, *rest)
            except KernelArgumentError:
                pass
        return getattr(_twin, name)(p, g, *rest)
    if isinstance(p, np.ndarray):  # a subclass: NumPy's in-place arithmetic on it, as the book's
        return getattr(_twin, name)(p, g, *rest)
    box = np.array(p, dtype=np.result_type(p, 0.0))
    getattr(_twin, name)(box, g, *rest)
    params[key] = box[()]
    return None


def _state(store, params, keys):
    """The book's zero state per parameter, created on first use (also for keys added later)."""
    if store is None:
        store = {}
    for key in keys:
        if key not in store:
            store[key] = np.zeros_like(params[key])
    return store


class _Optimizer:
    """The book's update loop: per-parameter state created on first use, then one kernel per parameter.

    Subclasses name their kernel, their state dicts (attributes holding one
    array per parameter, e.g. ``h``) and the scalars passed after them.
    """

    _kernel = None
    _states = ()
    #: The attributes passed to the kernel after the state arrays.
    _hyper = ("lr",)

    def _scalars(self):
        """The kernel's scalar arguments for this update (called once per update)."""
        return tuple(getattr(self, name) for name in self._hyper)

    def _apply(self, params, key, grad, states, scalars):
        _update(self._kernel, params, key, grad, *states, *scalars)

    def update(self, params, grads):
        """Update each array of ``params`` (and the optimizer's state) in place from ``grads``.

        Parameters
        ----------
        params : dict of ndarray or float
            Floating-point arrays, changed in place (layers hold references
            to them), or plain numbers, which are rebound as the book's
            ``-=`` does.
        grads : dict
            The same keys, each an array of its parameter's shape or a number.
        """
        keys = _checked(f"{type(self).__name__}.update", params, grads)
        for name in self._states:
            setattr(self, name, _state(getattr(self, name), params, keys))
        scalars = self._scalars()
        for key in keys:
            self._apply(params, key, grads[key], [getattr(self, name)[key] for name in self._states], scalars)


class SGD(_Optimizer):
    """Stochastic gradient descent: ``p -= lr * g``.

    Parameters
    ----------
    lr : float
    """

    _kernel = "sgd_update"

    def __init__(self, lr=0.01):
        self.lr = lr


class Momentum(_Optimizer):
    """Momentum SGD: ``v = momentum * v - lr * g; p += v``; ``v`` is a new array each step, as in the book.

    Parameters
    ----------
    lr, momentum : float
    """

    _kernel = "momentum_update"
    _states = ("v",)
    _hyper = ("lr", "momentum")

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def _apply(self, params, key, grad, states, scalars):
        (v,) = states
        # The book's v_new = momentum * v - lr * g takes the promoted dtype.
        v_new = np.empty_like(v, dtype=np.result_type(v, grad))
        _update(self._kernel, params, key, grad, v, v_new, *scalars)
        self.v[key] = v_new


class Nesterov(_Optimizer):
    """Nesterov's accelerated gradient, in the book's form (arXiv:1212.0901).

    Parameters
    ----------
    lr, momentum : float
    """

    _kernel = "nesterov_update"
    _states = ("v",)
    _hyper = ("lr", "momentum")

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None


class AdaGrad(_Optimizer):
    """AdaGrad: ``h += g * g; p -= lr * g / (sqrt(h) + 1e-7)``.

    Parameters
    ----------
    lr : float
    """

    _kernel = "adagrad_update"
    _states = ("h",)

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None


class RMSprop(_Optimizer):
    """RMSprop: ``h = decay_rate * h + (1 - decay_rate) * g * g; p -= lr * g / (sqrt(h) + 1e-7)``.

    Parameters
    ----------
    lr, decay_rate : float
    """

    _kernel = "rmsprop_update"
    _states = ("h",)
    _hyper = ("lr", "decay_rate")

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None


class Adam(_Optimizer):
    """Adam (arXiv:1412.6980), in the book's form with the bias-corrected rate ``lr_t``.

    Parameters
    ----------
    lr, beta1, beta2 : float

    Attributes
    ----------
    iter : int
        Updates made so far.
    m, v : dict of ndarray
        First and second moment estimates, per parameter.
    """

    _kernel = "adam_update"
    _states = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def _scalars(self):
        self.iter += 1
        # As the book computes it: np.sqrt makes lr_t a NumPy float64.
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        return (float(lr_t), self.beta1, self.beta2)

    def _apply(self, params, key, grad, states, scalars):
        if np.result_type(params[key]) == np.float32 and not _NUMPY2:
            _twin.adam_update(params[key], grad, *states, *scalars)
        else:
            _update(self._kernel, params, key, grad, *states, *scalars)
