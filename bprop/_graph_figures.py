"""The figures ``bprop graph`` draws: the book's two shopping graphs and the two-layer network's layers."""
import os
import sys

import numpy as np

from .graph import record
from .layers import AddLayer, MulLayer

FIGURES = ("apple", "apple-orange", "two-layer")

TITLES = {
    "apple": "Buying 2 apples at 100 each with tax 1.1 (book figure 5-16)",
    "apple-orange": "Buying 2 apples at 100 and 3 oranges at 150 with tax 1.1 (book figure 5-17)",
    "two-layer": "Two-layer network: one forward and backward on a batch of 3 (784-50-10)",
}


def apple():
    """Book 5.4.1: the graph of figure 5-16, recorded from bprop's MulLayer."""
    apple, apple_num, tax = 100, 2, 1.1
    mul_apple_layer, mul_tax_layer = MulLayer(), MulLayer()
    with record(inputs={"apple": apple, "apple_num": apple_num, "tax": tax}) as g:
        apple_price = mul_apple_layer.forward(apple, apple_num)
        g.name(mul_tax_layer.forward(apple_price, tax), "price")
        dapple_price, dtax = mul_tax_layer.backward(1)
        mul_apple_layer.backward(dapple_price)
    return g


def apple_orange():
    """Book 5.4.2: the graph of figure 5-17, from bprop's MulLayer and AddLayer."""
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple_layer, mul_orange_layer = MulLayer(), MulLayer()
    add_apple_orange_layer, mul_tax_layer = AddLayer(), MulLayer()
    names = {"apple": apple, "apple_num": apple_num, "orange": orange, "orange_num": orange_num, "tax": tax}
    with record(inputs=names) as g:
        apple_price = mul_apple_layer.forward(apple, apple_num)
        orange_price = mul_orange_layer.forward(orange, orange_num)
        all_price = add_apple_orange_layer.forward(apple_price, orange_price)
        g.name(mul_tax_layer.forward(all_price, tax), "price")
        dall_price, dtax = mul_tax_layer.backward(1)
        dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
        mul_orange_layer.backward(dorange_price)
        mul_apple_layer.backward(dapple_price)
    return g


def two_layer(batch=3, seed=0):
    """The book's TwoLayerNet (784-50-10): one forward and backward through every layer.

    The input is ``batch`` random "images" with values in [0, 1) and
    random labels (seeded): the figure is about shapes, not about digits.
    """
    from .network import TwoLayerNet

    rng = np.random.default_rng(seed)
    x = rng.random((batch, 784))
    t = rng.integers(0, 10, size=batch)
    # TwoLayerNet draws its weights from NumPy's global generator, as the book
    # does: seed it for a reproducible figure, and leave the caller's state as it was.
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    finally:
        np.random.set_state(state)
    p = net.params
    with record(inputs={"x": x, "t": t, "W1": p["W1"], "b1": p["b1"], "W2": p["W2"], "b2": p["b2"]}) as g:
        g.name(net.loss(x, t), "loss")
        dout = net.lastLayer.backward(1)
        for layer in reversed(list(net.layers.values())):
            dout = layer.backward(dout)
    return g


BUILDERS = {"apple": apple, "apple-orange": apple_orange, "two-layer": two_layer}


def add_parser(subparsers):
    """Register ``bprop graph FIGURE [-o FILE]``."""
    p = subparsers.add_parser(
        "graph", help="draw a computational graph from bprop's layers (SVG; PNG with matplotlib)",
        description="Record a computation made of bprop's layers and draw it as the book's computational "
                    "graph: forward values above the edges, gradients below them in red. apple and "
                    "apple-orange are the book's figures 5-16 and 5-17; two-layer is the two-layer "
                    "network's layers after one forward and backward on a batch of 3.")
    p.add_argument("figure", choices=FIGURES, help="which graph to draw")
    p.add_argument("-o", "--output", metavar="FILE.svg",
                   help="where to write it: .svg, or .png when matplotlib is installed "
                        "(default graph-FIGURE.svg in the current folder)")
    p.set_defaults(func=run)
    return p


def _fail(msg):
    print(f"bprop graph: error: {msg}", file=sys.stderr)
    return 2


def run(args):
    """Draw ``args.figure`` to ``args.output``; returns the exit status."""
    path = args.output or f"graph-{args.figure}.svg"
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".svg", ".png"):
        return _fail(f"-o/--output must end in .svg or .png, got {path!r}")
    if suffix == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("-o/--output: PNG needs matplotlib, which is not installed: pip install matplotlib, "
                         "or write .svg")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return _fail(f"-o/--output: folder {folder!r} does not exist")
    if os.path.isdir(path) or not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        return _fail(f"-o/--output: cannot write {path!r}")
    graph = BUILDERS[args.figure]()
    try:
        graph.save(path, title=TITLES[args.figure])
    except OSError as exc:
        return _fail(f"-o/--output: cannot write {path!r}: {exc.strerror or exc}")
    print(f"wrote {path}")
    return 0
