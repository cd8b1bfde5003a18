"""Chapters 6 and 8 benchmarks (pytest-benchmark): Adam, BatchNormalization, the DeepConvNet step.

Run from the repository root::

    pytest bench/test_bench_ch6_ch8.py --benchmark-only --benchmark-group-by=group

One group per case (the rows of :data:`bprop._bench_ch6_ch8.CASES`), with
``book`` (the book's own code, from a clone of its repository:
``$BPROP_BOOK_DIR``, else ``../shared/book`` beside the project), ``bprop``
and ``torch`` side by side; an implementation that is not available is
skipped with the reason. Before timing, bprop's and the book's results are
compared once per case. Everything runs on one thread
(``bprop bench --layers ch6,ch8`` prints the same comparison as a table).
"""
import numpy as np
import pytest
from conftest import BOOK_DIR, CHAPTER_IMPLS

from bprop import _bench_ch6_ch8 as B
from bprop import _bench_conv as C
from bprop import _book_code


@pytest.fixture(scope="module")
def calls():
    with C.one_thread():
        yield B.make_calls(BOOK_DIR)


@pytest.mark.parametrize("case", B.CASES, ids=[f"{c}-{d}" for c, d in B.CASES])
@pytest.mark.parametrize("impl", CHAPTER_IMPLS)
def test_ch6_ch8(time_chapter_case, calls, case, impl):
    time_chapter_case(calls, case, impl, _book_code.book_dir(BOOK_DIR) is not None)


def test_bprop_agrees_with_the_book_on_the_timed_work():
    root = _book_code.book_dir(BOOK_DIR)
    if root is None:
        pytest.skip(f"the book's code is not at {BOOK_DIR}")
    import bprop
    from bprop.optimizer import Adam

    book_layers = _book_code.load(root, "common/layers.py")
    book_optimizer = _book_code.load(root, "common/optimizer.py")
    book_deep = _book_code.load(root, "ch08/deep_convnet.py")
    rng = np.random.default_rng(0)

    x, dout = rng.standard_normal((100, 4320)) * 3 + 1, rng.standard_normal((100, 4320))
    ref = book_layers.BatchNormalization(np.ones(4320), np.zeros(4320))
    ours = bprop.BatchNormalization(np.ones(4320), np.zeros(4320))
    np.testing.assert_allclose(ours.forward(x, train_flg=True), ref.forward(x, train_flg=True), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dout), ref.backward(dout), rtol=1e-7, atol=1e-12)

    params = {"W": rng.standard_normal((30, 1, 5, 5)), "b": rng.standard_normal(30)}
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    mine, theirs = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
    opt, ref_opt = Adam(), book_optimizer.Adam()
    for _ in range(5):
        opt.update(mine, grads)
        ref_opt.update(theirs, grads)
    for k in params:
        np.testing.assert_array_equal(mine[k], theirs[k])

    xb, tb = rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)
    np.random.seed(0)
    net = bprop.DeepConvNet()
    np.random.seed(0)
    ref_net = book_deep.DeepConvNet()
    np.random.seed(1)
    g = net.gradient(xb, tb)
    np.random.seed(1)
    ref_g = ref_net.gradient(xb, tb)
    for k in ref_g:
        np.testing.assert_allclose(g[k], ref_g[k], rtol=1e-6, atol=1e-10, err_msg=k)
