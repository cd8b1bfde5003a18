"""bprop.graph: recording layer calls, linking values, the drawing's content and layout, the CLI.

The expected numbers of the shopping figures are the book's figures 5-16 and
5-17 (forward values above the edges, derivatives below them), which the
book derives from the same layer calls; they are written here as the book
prints them.
"""
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from bprop import (AddLayer, Affine, BatchNormalization, Dropout, MulLayer, Relu, Sigmoid, SoftmaxWithLoss,
                   StateError, cli)
from bprop import _graph_figures as figures
from bprop.graph import ArraySummary, format_number, record

SVG = "{http://www.w3.org/2000/svg}"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LAYERS = (MulLayer, AddLayer, Relu, Sigmoid, Affine, SoftmaxWithLoss, BatchNormalization, Dropout)


# -- numbers ------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (100 * 2 * 1.1, "220"),             # 220.00000000000003 in float arithmetic
    (2.2000000000000002, "2.2"),
    (1.1 * 3.0, "3.3"),                 # 3.3000000000000003
    (150 * 1.1, "165"),                 # 165.00000000000003
    (110, "110"), (-7, "-7"), (np.int64(650), "650"), (True, "True"),
    (0.1 + 0.2, "0.3"), (1 / 3, "0.333333333333"), (2.5, "2.5"), (-0.0, "0"),
    (1e-20, "1e-20"), (1.5e20, "1.5e+20"), (float("inf"), "inf"), (float("-inf"), "-inf"),
    (float("nan"), "nan"), (np.float32(2.2), "2.2"), (np.float64(715.0000000000001), "715"),
    (1 + 2j, "(1+2j)"),
])
def test_format_number(value, text):
    assert format_number(value) == text


def test_format_number_keeps_real_differences():
    # Rounding to 12 digits must not merge values that differ in the 10th digit.
    assert format_number(1.000000001) == "1.000000001"
    assert format_number(123456789012345.0) == "123456789012000"  # 12 significant digits, by design


# -- the book's figures -------------------------------------------------------

def _edges(g):
    """{(source or layer label, target label): (value, gradient)} as printed."""
    out = {}
    for e in g.edges:
        src = e.src.label if e.src.kind != "layer" else f"{e.src.op}#{e.src.index}"
        dst = e.dst.label if e.dst.kind != "layer" else f"{e.dst.op}#{e.dst.index}"
        out[(src, dst)] = (format_number(e.value), None if e.grad is None else format_number(e.grad))
    return out


def test_figure_5_16():
    # Book figure 5-16: 100 and 2 into x (200), with 1.1 into x (220);
    # backward 1 at the output, 1.1 on the 200 edge, 2.2, 110 and 200.
    assert _edges(figures.apple()) == {
        ("apple", "MulLayer#0"): ("100", "2.2"),
        ("apple_num", "MulLayer#0"): ("2", "110"),
        ("MulLayer#0", "MulLayer#1"): ("200", "1.1"),
        ("tax", "MulLayer#1"): ("1.1", "200"),
        ("MulLayer#1", "price"): ("220", "1"),
    }


def test_figure_5_17():
    # Book figure 5-17: apple 200 + orange 450 = 650, times 1.1 = 715; gradients
    # 110, 2.2, 3.3, 165, 650, and 1.1 on both prices and their sum.
    assert _edges(figures.apple_orange()) == {
        ("apple", "MulLayer#0"): ("100", "2.2"),
        ("apple_num", "MulLayer#0"): ("2", "110"),
        ("orange", "MulLayer#1"): ("150", "3.3"),
        ("orange_num", "MulLayer#1"): ("3", "165"),
        ("MulLayer#0", "AddLayer#2"): ("200", "1.1"),
        ("MulLayer#1", "AddLayer#2"): ("450", "1.1"),
        ("AddLayer#2", "MulLayer#3"): ("650", "1.1"),
        ("tax", "MulLayer#3"): ("1.1", "650"),
        ("MulLayer#3", "price"): ("715", "1"),
    }


def test_two_layer_shapes():
    g = figures.two_layer(batch=3)
    layers = [n.op for n in g.nodes if n.kind == "layer"]
    assert layers == ["Affine", "Relu", "Affine", "SoftmaxWithLoss"]
    shapes = {(e.src.label, e.dst.label, e.slot): (e.value.shape if isinstance(e.value, ArraySummary) else "scalar",
                                                    e.grad.shape if isinstance(e.grad, ArraySummary) else e.grad)
              for e in g.edges}
    assert shapes[("x", "Affine", "x")] == ((3, 784), (3, 784))
    assert shapes[("W1", "Affine", "W")] == ((784, 50), (784, 50))
    assert shapes[("b1", "Affine", "b")] == ((50,), (50,))
    assert shapes[("Affine", "ReLU", "x")] == ((3, 50), (3, 50))
    assert shapes[("ReLU", "Affine", "x")] == ((3, 50), (3, 50))
    assert shapes[("W2", "Affine", "W")] == ((50, 10), (50, 10))
    assert shapes[("Affine", "Softmax-with-Loss", "x")] == ((3, 10), (3, 10))
    assert shapes[("t", "Softmax-with-Loss", "t")] == ((3,), None)   # labels get no gradient
    assert shapes[("Softmax-with-Loss", "loss", "out")] == ("scalar", 1)
    assert len(g.edges) == 10


# -- the SVG --------------------------------------------------------------------

def _texts(svg):
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return [(t.text, float(t.get("x")), float(t.get("y")), t.get("fill")) for t in root.iter(SVG + "text")]


@pytest.mark.parametrize("build, forward, backward", [
    (figures.apple, {"100", "2", "200", "1.1", "220"}, {"2.2", "110", "1.1", "200", "1"}),
    (figures.apple_orange, {"100", "2", "150", "3", "200", "450", "650", "1.1", "715"},
     {"2.2", "110", "3.3", "165", "1.1", "650", "1"}),
])
def test_svg_carries_the_books_numbers(build, forward, backward):
    svg = build().to_svg()
    texts = _texts(svg)
    red = {s for s, _, _, fill in texts if fill == "#d62728"}
    black = {s for s, _, _, fill in texts if fill == "#000000"}
    assert red == backward
    assert forward <= black
    assert "0000000" not in svg   # no float noise such as 220.00000000000003 anywhere


def test_svg_layout_reads_left_to_right_with_gradients_below():
    root = ET.fromstring(figures.apple().to_svg())
    circles = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(SVG + "circle")]
    assert len(circles) == 2
    (x1, y1), (x2, y2) = circles
    assert x1 < x2 and y1 == y2          # the main line runs straight, left to right
    texts = {s: (x, y) for s, x, y, fill in _texts(ET.tostring(root, encoding="unicode"))}
    assert texts["apple"][0] < x1 < texts["200"][0] < x2 < texts["220"][0] < texts["price"][0]
    assert texts["apple_num"][1] > y1 and texts["tax"][1] > y1  # secondary inputs come from below
    # Every gradient sits right below a forward value, at the same x.
    all_texts = _texts(figures.apple_orange().to_svg())
    for s, x, y, fill in all_texts:
        if fill == "#d62728":
            assert any(f == "#000000" and abs(x2_ - x) < 0.1 and y2_ < y for _, x2_, y2_, f in all_texts), s


def test_svg_of_arrays_shows_shapes_not_arrays():
    svg = figures.two_layer().to_svg()
    texts = [s for s, _, _, _ in _texts(svg)]
    for shape in ("(3, 784)", "(784, 50)", "(50,)", "(3, 50)", "(50, 10)", "(3, 10)", "(3,)"):
        assert shape in texts
    assert {"Affine", "ReLU", "Softmax-with-Loss", "x", "t", "W1", "b1", "W2", "b2", "loss"} <= set(texts)
    assert len(svg) < 20000


def test_repr_svg_and_empty_graph():
    with record() as g:
        pass
    assert "no layer calls recorded" in g._repr_svg_()
    ET.fromstring(g.to_svg())
    assert figures.apple()._repr_svg_().startswith("<svg")


def test_save_svg_and_png(tmp_path):
    g = figures.apple()
    g.save(tmp_path / "a.svg")
    ET.parse(tmp_path / "a.svg")
    with pytest.raises(ValueError, match="must end in .svg or .png"):
        g.save(tmp_path / "a.pdf")
    pytest.importorskip("matplotlib")
    g.save(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the recorder adds nothing outside a recording -------------------------------------

def _methods():
    return {(cls, m): cls.__dict__[m] for cls in LAYERS for m in ("forward", "backward")}


def test_layer_methods_are_the_originals_outside_a_recording():
    before = _methods()
    assert not any(getattr(f, "_bprop_graph_wrapper", False) for f in before.values())
    with record():
        during = _methods()
        assert all(getattr(f, "_bprop_graph_wrapper", False) for f in during.values())
        with record():       # nested: the outer recording's wrappers stay
            assert _methods() == during
        assert _methods() == during
    assert _methods() == before
    with pytest.raises(ZeroDivisionError):
        with record():
            1 / 0
    assert _methods() == before


def test_an_exception_inside_a_layer_is_unchanged_and_restores():
    before = _methods()
    layer = Relu()
    with pytest.raises(StateError) as plain:
        layer.backward(np.ones(3))
    with pytest.raises(StateError) as recorded:
        with record() as g:
            layer.backward(np.ones(3))
    assert str(plain.value) == str(recorded.value)
    assert g.nodes == [] and _methods() == before


def test_results_and_attributes_are_the_same_while_recording(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6))
    W, b = rng.standard_normal((6, 5)), rng.standard_normal(5)
    t = np.array([0, 4, 2, 1])
    x_before = x.copy()

    def run():
        a, r, s, loss = Affine(W, b), Relu(), Sigmoid(), SoftmaxWithLoss()
        h = s.forward(r.forward(a.forward(x)))
        L = loss.forward(h, t)
        d = a.backward(r.backward(s.backward(loss.backward())))
        return [h, L, d, a.dW, a.db, r.mask, s.out, loss.y]

    plain = run()
    with record() as g:
        recorded = run()
    for p, q in zip(plain, recorded):
        assert type(p) is type(q)
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(x, x_before)
    assert [n.op for n in g.nodes if n.kind == "layer"] == ["Affine", "Relu", "Sigmoid", "SoftmaxWithLoss"]
    assert MulLayer().forward(3, 4) == 12 and type(MulLayer().forward(3, 4)) is int


def test_later_chapters_layers():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3))
    gamma, beta = np.ones(3), np.zeros(3)
    bn, drop = BatchNormalization(gamma, beta), Dropout(0.5)
    with record(inputs={"x": x, "gamma": gamma, "beta": beta}) as g:
        y = drop.forward(bn.forward(x, train_flg=True), True)   # flags: not values of the graph
        bn.backward(drop.backward(np.ones_like(y)))
    into = {(e.dst.label, e.slot): (e.src.label, e.grad) for e in g.edges if e.dst.kind == "layer"}
    assert set(into) == {("Batch Norm", "x"), ("Batch Norm", "gamma"), ("Batch Norm", "beta"), ("Dropout", "x")}
    assert into[("Batch Norm", "gamma")][0] == "gamma"
    assert into[("Batch Norm", "gamma")][1].shape == (3,)          # dgamma
    assert into[("Dropout", "x")][0] == "Batch Norm"


# -- linking values by identity --------------------------------------------------------

def test_the_same_value_twice_is_one_named_source():
    x = 1.5
    m = MulLayer()
    with record(inputs={"x": x}) as g:
        m.forward(x, x)
        m.backward(1.0)
    sources = [n for n in g.nodes if n.kind == "source"]
    assert [n.label for n in sources] == ["x"]
    assert [(e.slot, e.grad) for e in g.edges if e.src is sources[0]] == [("x", 1.5), ("y", 1.5)]
    # Drawn as one edge whose gradient is the sum of both: d(x*x)/dx = x + x.
    red = [s for s, _, _, fill in _texts(g.to_svg()) if fill == "#d62728"]
    assert red == ["1.5 + 1.5", "1"]


def test_a_cached_small_int_that_is_also_an_input():
    # 1 * 2 gives the interpreter's cached 2: the same object as the input a.
    # The output links to the next use only; the other use is the source a.
    a, one = 2, 1
    m1, m2 = MulLayer(), MulLayer()
    with record(inputs={"a": a, "one": one}) as g:
        out = m1.forward(one, a)
        assert out is a
        m2.forward(out, a)
    into_m2 = {e.slot: e.src for e in g.edges if e.dst.kind == "layer" and e.dst.index == 1}
    assert into_m2["x"].kind == "layer" and into_m2["x"].index == 0
    assert into_m2["y"].kind == "source" and into_m2["y"].label == "a"


def test_two_names_for_one_cached_object_are_given_in_use_order():
    apple_num = orange_num = 2      # one object, two quantities
    m1, m2 = MulLayer(), MulLayer()
    with record(inputs={"apple_num": apple_num, "orange_num": orange_num}) as g:
        m1.forward(100.0, apple_num)
        m2.forward(150.0, orange_num)
    into = {(e.dst.index, e.slot): e.src.label for e in g.edges if e.dst.kind == "layer"}
    assert into[(0, "y")] == "apple_num" and into[(1, "y")] == "orange_num"
    assert into[(0, "x")] == "x" and into[(1, "x")] == "x"   # unnamed constants: each its own source


def test_an_array_used_twice_fans_out():
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    r, s1, s2 = Relu(), Sigmoid(), Sigmoid()
    with record(inputs={"x": x}) as g:
        h = r.forward(x)
        s1.forward(h)
        s2.forward(h)
    from_relu = [e.dst.op for e in g.edges if e.src.kind == "layer" and e.src.op == "Relu"]
    assert from_relu == ["Sigmoid", "Sigmoid"]
    assert sum(n.kind == "sink" for n in g.nodes) == 2
    ET.fromstring(g.to_svg())


def test_arrays_are_not_kept_and_a_reused_id_is_a_new_value():
    import gc
    import weakref

    r1, r2 = Relu(), Relu()
    with record() as g:
        x = np.ones((2, 3))
        seen = weakref.ref(r1.forward(x))     # the result is dropped at once
        gc.collect()
        assert seen() is None                 # the recording did not keep it
        # A new array often gets a dead output's id (CPython reuses the memory):
        # it must be a new value, a source, not that output.
        reused = 0
        for _ in range(20):
            out = r1.forward(x)
            dead = id(out)
            del out
            z = np.zeros((2, 3))
            reused += id(z) == dead
            r2.forward(z)
            del z
    assert reused > 0      # otherwise this test would not test anything
    assert all(e.src.kind == "source" for e in g.edges if e.dst.kind == "layer")
    assert sum(n.kind == "sink" for n in g.nodes) == 41


@pytest.mark.parametrize("seed", range(12))
def test_random_computations_link_and_draw(seed):
    # Random DAGs of x and + over a pool of floats and small (cached) ints, values
    # reused at random. Every float a layer returned is a fresh object, so an
    # input that was one must be linked to exactly the call that returned it.
    rng = np.random.default_rng(seed)
    pool = [(1.5, None), (2, None), (2, None), (0.25, None), (3, None)]   # (value, producing call)
    layers = []
    with record(inputs={"a": 1.5, "n": 2}) as g:
        for call in range(int(rng.integers(3, 12))):
            (x, px), (y, py) = (pool[int(i)] for i in rng.integers(0, len(pool), 2))
            layer = MulLayer() if rng.random() < 0.5 else AddLayer()
            pool.append((layer.forward(x, y), call))
            layers.append((layer, px, py, type(x) is float, type(y) is float))
        for layer, *_ in reversed(layers):
            layer.backward(1.0)
    into = {(e.dst.index, e.slot): e.src for e in g.edges if e.dst.kind == "layer"}
    for call, (_, px, py, x_float, y_float) in enumerate(layers):
        for slot, producer, is_float in (("x", px, x_float), ("y", py, y_float)):
            src = into[(call, slot)]
            if is_float and producer is not None:
                assert src.kind == "layer" and src.index == producer
            if producer is None and is_float:
                assert src.kind == "source"
    assert sum(n.kind == "layer" for n in g.nodes) == len(layers)
    root = ET.fromstring(g.to_svg())
    centres = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(SVG + "circle")]
    assert len(centres) == len(layers)
    # No two nodes drawn over each other (a shared layer's consumers once landed on one spot).
    r = float(next(root.iter(SVG + "circle")).get("r"))
    for i, (x1, y1) in enumerate(centres):
        for x2, y2 in centres[:i]:
            assert (x1 - x2) ** 2 + (y1 - y2) ** 2 >= (2 * r) ** 2


def test_values_from_before_the_recording_are_sources():
    m = MulLayer()
    y = m.forward(2.0, 3.0)
    with record() as g:
        MulLayer().forward(y, 4.0)
    assert [e.src.kind for e in g.edges if e.dst.kind == "layer"] == ["source", "source"]


def test_other_threads_are_recorded_while_active():
    m = MulLayer()
    with record() as g:
        th = threading.Thread(target=m.forward, args=(2.0, 3.0))
        th.start()
        th.join()
    assert [n.op for n in g.nodes if n.kind == "layer"] == ["MulLayer"]


def test_own_layer_classes_and_nested_calls():
    class Square:
        def forward(self, x):
            self.x = x
            return MulLayer().forward(x, x)   # an inner layer call: not a node of its own

        def backward(self, dout):
            return 2 * self.x * dout

    with record(layers=[Square]) as g:
        sq = Square()
        sq.forward(3.0)
        sq.backward(1.0)
    assert [n.op for n in g.nodes if n.kind == "layer"] == ["Square"]
    assert "forward" not in Square.__dict__ or not getattr(Square.forward, "_bprop_graph_wrapper", False)
    assert [(e.value, e.grad) for e in g.edges] == [(3.0, 6.0), (9.0, 1.0)]  # dout at the output


def test_a_class_that_cannot_be_wrapped_is_left_alone():
    class Frozen(type):   # like an extension type: its attributes cannot be set
        def __setattr__(cls, name, value):
            raise TypeError(f"cannot set {name!r}")

    class Fixed(metaclass=Frozen):
        def forward(self, x):
            return x

        def backward(self, dout):
            return dout

    before = dict(Fixed.__dict__)
    with record(layers=[Fixed]) as g:
        Fixed().forward(1.0)
        MulLayer().forward(1.0, 2.0)
    assert dict(Fixed.__dict__) == before
    assert [n.op for n in g.nodes if n.kind == "layer"] == ["MulLayer"]


def test_bad_arguments():
    with pytest.raises(TypeError, match="inputs must be a dict"):
        record(inputs=[1, 2])
    with pytest.raises(TypeError, match="layers must be classes"):
        record(layers=[42])
    with record() as g:
        pass
    with pytest.raises(RuntimeError, match="recording has ended"):
        g.name(1.0, "x")


def test_lazy_attribute():
    code = "import sys, bprop; assert 'bprop.graph' not in sys.modules; bprop.graph.record; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout == "ok\n", proc.stderr


# -- the command line and the examples ---------------------------------------------------

def test_cli_default_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["graph", "apple-orange"]) == 0
    assert capsys.readouterr().out == "wrote graph-apple-orange.svg\n"
    texts = [s for s, _, _, _ in _texts((tmp_path / "graph-apple-orange.svg").read_text())]
    assert "715" in texts and "3.3" in texts


@pytest.mark.parametrize("args, message", [
    (["-o", "missing/x.svg"], "-o/--output: folder"),
    (["-o", "x.pdf"], "must end in .svg or .png"),
    (["-o", "."], "must end in .svg or .png"),
    (["-o", "adir.svg"], "cannot write"),
])
def test_cli_bad_output(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir.svg").mkdir()
    assert cli.main(["graph", "apple", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.svg"]


def test_cli_png_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib now raises ImportError
    assert cli.main(["graph", "apple", "-o", "a.png"]) == 2
    assert "PNG needs matplotlib" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_figure_and_module_entry(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bprop", "graph", "banana"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'banana'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bprop", "graph", "two-layer", "-o", "net.svg"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == "wrote net.svg\n", proc.stderr
    ET.parse(tmp_path / "net.svg")


@pytest.mark.parametrize("script, book_output", [
    ("buy_apple.py", "price: 220\n"), ("buy_apple_orange.py", "price: 715\n"),
])
def test_examples_draw(tmp_path, script, book_output):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--draw", "g.svg"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(book_output) and proc.stdout.endswith("drew the graph in g.svg\n")
    texts = [s for s, _, _, _ in _texts((tmp_path / "g.svg").read_text())]
    assert "2.2" in texts and "110" in texts


def test_two_layer_example(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "two_layer_net_graph.py"), "n.svg"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Softmax-with-Loss" in (tmp_path / "n.svg").read_text()
