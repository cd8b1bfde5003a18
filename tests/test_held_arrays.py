"""An array you hold is never rewritten by a later call.

A stateful property test: hypothesis drives one instance of every array layer
through random sequences of ``forward`` and ``backward`` calls, on either
backend and dtype, with shapes on both sides of every size threshold in the
package (result reuse, Affine's ``dx`` reuse, streaming stores, the small
matrix-product path). Like a caller, it keeps some of what it is handed: the
returned arrays, the arguments it passed, and the book's attributes it read
(``mask``, ``out``, ``x``, ``y``, ``t``, ``dW``, ``db``,
``xc``, ``xn``, ``std``, ``dgamma``, ``dbeta``); now and then it lets
some go, which is what allows a layer to reuse memory. After every call, each
array still held must equal the copy taken when it was handed out.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import bprop
from bprop import _backend
from bprop._buffers import AFFINE_DX_MIN_BYTES, BN_REUSE_MIN_BYTES, REUSE_MIN_BYTES

#: Rows of 64 columns just below and above the result-reuse threshold in
#: float64 (float32 arrays of the same shape are half as large).
_REUSE_ROWS = REUSE_MIN_BYTES // 8 // 64
#: Streaming stores are lowered to this many bytes while the machine runs, so
#: that shapes of a few MiB cross that threshold too (at its default, 32 MiB,
#: every example would move hundreds of MiB).
_STREAM_BYTES = 1 << 20

ELEMENTWISE_SHAPES = [(3, 5), (100, 50), (_REUSE_ROWS - 1, 64), (_REUSE_ROWS + 1, 64), (2 * _REUSE_ROWS + 3, 64)]
SOFTMAX_SHAPES = [(5, 3), (100, 10), (_REUSE_ROWS + 1, 64)]
#: Affine (D, M): (16, 10) takes the small-product kernels up to N = 819;
#: (300, 10) and (300, 3) take BLAS, and their dx passes the dx-reuse
#: threshold from N = AFFINE_DX_MIN_BYTES / (8 * 300) rows.
AFFINE_WEIGHTS = [(16, 10), (300, 10), (300, 3)]
AFFINE_ROWS = [1, 100, 1000]
#: BatchNormalization over 64 activations, (N, 64) or (N, 4, 4, 4): rows on
#: both sides of its reuse threshold in float64 and in float32.
_BN_ROWS = BN_REUSE_MIN_BYTES // 8 // 64
BN_ROWS = [1, 5, _BN_ROWS - 1, _BN_ROWS + 1, 2 * _BN_ROWS + 1]

assert any(n * 300 * 4 >= AFFINE_DX_MIN_BYTES for n in AFFINE_ROWS)
assert any(n * 16 * 10 <= 1 << 17 for n in AFFINE_ROWS)

SETTINGS = settings(
    max_examples=int(os.environ.get("BPROP_HYPOTHESIS_EXAMPLES", "40")),
    stateful_step_count=14,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class HeldArrays(RuleBasedStateMachine):
    """A caller that keeps some of what the layers hand it and checks it never changes."""

    @initialize(
        backend=st.sampled_from(["cython", "numpy"]),
        dtype=st.sampled_from([np.float64, np.float32]),
        seed=st.integers(0, 2**32 - 1),
    )
    def setup(self, backend, dtype, seed):
        if backend == "cython" and not _backend.compiled_available():
            backend = "numpy"
        self.previous_backend = bprop.backend()
        bprop.set_backend(backend)
        compiled = _backend.compiled_module()
        self.stream_bytes = None
        if compiled is not None:
            self.stream_bytes = compiled._stream_min_bytes(_STREAM_BYTES)
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.held = []  # (what, array, copy taken when handed out)
        self.relu, self.sigmoid, self.loss = bprop.Relu(), bprop.Sigmoid(), bprop.SoftmaxWithLoss()
        self.affines = [bprop.Affine(self.array((d, m)), self.array((m,))) for d, m in AFFINE_WEIGHTS]
        self.bn = bprop.BatchNormalization(self.array((64,)), self.array((64,)))
        for layer in self.affines:
            self.hold("W", layer.W)
            self.hold("b", layer.b)
        self.out_shape = {}

    def teardown(self):
        if getattr(self, "previous_backend", None) is None:
            return
        bprop.set_backend(self.previous_backend)
        if self.stream_bytes is not None:
            _backend.compiled_module()._stream_min_bytes(self.stream_bytes)

    def array(self, shape):
        return self.rng.standard_normal(shape).astype(self.dtype)

    def hold(self, what, a):
        if isinstance(a, np.ndarray):
            self.held.append((what, a, a.copy()))

    @invariant()
    def nothing_held_changed(self):
        for what, a, snapshot in getattr(self, "held", ()):
            assert np.array_equal(a, snapshot, equal_nan=True), f"{what} (shape {a.shape}) was rewritten"

    # -- forward -------------------------------------------------------------

    @rule(shape=st.sampled_from(ELEMENTWISE_SHAPES), keep=st.booleans(), read=st.booleans())
    def relu_forward(self, shape, keep, read):
        x = self.array(shape)
        out = self.relu.forward(x)
        self.out_shape[self.relu] = shape
        if keep:
            self.hold("Relu.forward result", out)
            self.hold("Relu.forward x", x)
        if read:
            self.hold("Relu.mask", self.relu.mask)

    @rule(shape=st.sampled_from(ELEMENTWISE_SHAPES), keep=st.booleans(), read=st.booleans())
    def sigmoid_forward(self, shape, keep, read):
        out = self.sigmoid.forward(self.array(shape))
        self.out_shape[self.sigmoid] = shape
        if keep:
            self.hold("Sigmoid.forward result", out)
        if read:
            self.hold("Sigmoid.out", self.sigmoid.out)

    @rule(which=st.integers(0, len(AFFINE_WEIGHTS) - 1), n=st.sampled_from(AFFINE_ROWS), keep=st.booleans(),
          read=st.booleans())
    def affine_forward(self, which, n, keep, read):
        layer = self.affines[which]
        d, m = AFFINE_WEIGHTS[which]
        x = self.array((n, d) if d != 16 else (n, 4, 4))
        out = layer.forward(x)
        self.out_shape[layer] = (n, m)
        if keep:
            self.hold("Affine.forward result", out)
            self.hold("Affine.forward x", x)
        if read:
            self.hold("Affine.x", layer.x)

    @rule(n=st.sampled_from(BN_ROWS), image=st.booleans(), keep=st.booleans(), read=st.booleans())
    def batchnorm_forward(self, n, image, keep, read):
        x = self.array((n, 4, 4, 4) if image else (n, 64))
        out = self.bn.forward(x)
        self.out_shape[self.bn] = x.shape
        if keep:
            self.hold("BatchNormalization.forward result", out)
            self.hold("BatchNormalization.forward x", x)
        if read:
            self.hold("BatchNormalization.xc", self.bn.xc)
            self.hold("BatchNormalization.xn", self.bn.xn)
            self.hold("BatchNormalization.std", self.bn.std)

    @rule(shape=st.sampled_from(SOFTMAX_SHAPES), one_hot=st.booleans(), read=st.booleans())
    def loss_forward(self, shape, one_hot, read):
        n, c = shape
        labels = self.rng.integers(0, c, n)
        t = np.eye(c, dtype=self.dtype)[labels] if one_hot else labels
        self.loss.forward(self.array(shape), t)
        self.out_shape[self.loss] = shape
        self.hold("SoftmaxWithLoss.forward t", t)
        if read:
            self.hold("SoftmaxWithLoss.y", self.loss.y)

    # -- backward ------------------------------------------------------------

    def _backward(self, layer, name, keep, *args):
        dout = self.array(self.out_shape[layer])
        dx = layer.backward(dout, *args)
        if keep:
            self.hold(f"{name}.backward result", dx)
            self.hold(f"{name}.backward dout", dout)

    @precondition(lambda self: self.relu in self.out_shape)
    @rule(keep=st.booleans())
    def relu_backward(self, keep):
        self._backward(self.relu, "Relu", keep)

    @precondition(lambda self: self.sigmoid in self.out_shape)
    @rule(keep=st.booleans())
    def sigmoid_backward(self, keep):
        self._backward(self.sigmoid, "Sigmoid", keep)

    @rule(which=st.integers(0, len(AFFINE_WEIGHTS) - 1), keep=st.booleans(), read=st.booleans(),
          input_grad=st.booleans())
    def affine_backward(self, which, keep, read, input_grad):
        layer = self.affines[which]
        if layer not in self.out_shape:
            return
        dout = self.array(self.out_shape[layer])
        dx = layer.backward(dout, input_grad=input_grad)
        if keep:
            self.hold("Affine.backward result", dx)
            self.hold("Affine.backward dout", dout)
        if read:
            self.hold("Affine.dW", layer.dW)
            self.hold("Affine.db", layer.db)

    @precondition(lambda self: self.bn in self.out_shape)
    @rule(keep=st.booleans(), read=st.booleans())
    def batchnorm_backward(self, keep, read):
        self._backward(self.bn, "BatchNormalization", keep)
        if read:
            self.hold("BatchNormalization.dgamma", self.bn.dgamma)
            self.hold("BatchNormalization.dbeta", self.bn.dbeta)

    @precondition(lambda self: self.loss in self.out_shape)
    @rule(keep=st.booleans())
    def loss_backward(self, keep):
        dx = self.loss.backward()
        if keep:
            self.hold("SoftmaxWithLoss.backward result", dx)

    # -- letting go ----------------------------------------------------------

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def let_go(self, data):
        """Drop some held arrays, so that the layers may reuse their memory."""
        keep = data.draw(st.lists(st.booleans(), min_size=len(self.held), max_size=len(self.held)))
        self.held = [h for h, k in zip(self.held, keep) if k]


HeldArrays.TestCase.settings = SETTINGS
TestHeldArrays = pytest.mark.filterwarnings("ignore::bprop.BackendWarning")(HeldArrays.TestCase)


def test_the_issue_snippet_every_layer(backend):
    """A large call, a small call, then a large call of the same shape (found by the machine above)."""
    big, small = np.full((2048, 2048), -1.0), np.ones((10, 10))

    def run(call, read):
        kept = read(call(big))
        snap = kept.copy()
        call(small)
        call(big + 5)
        return np.array_equal(kept, snap)

    s, r, loss = bprop.Sigmoid(), bprop.Relu(), bprop.SoftmaxWithLoss()
    labels_big, labels_small = np.zeros(2048, dtype=np.int64), np.zeros(10, dtype=np.int64)
    assert run(s.forward, lambda out: out)
    assert run(r.forward, lambda out: r.mask)
    assert run(lambda x: loss.forward(x, labels_big if len(x) == 2048 else labels_small), lambda _: loss.y)
