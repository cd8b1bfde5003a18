"""Record a computation made of bprop's layers and draw it as the book's computational graph.

::

    import bprop.graph
    from bprop import MulLayer

    apple, apple_num, tax = 100, 2, 1.1
    mul_apple, mul_tax = MulLayer(), MulLayer()
    with bprop.graph.record(inputs={"apple": apple, "apple_num": apple_num, "tax": tax}) as g:
        price = mul_tax.forward(mul_apple.forward(apple, apple_num), tax)
        dapple_price, dtax = mul_tax.backward(1)
        dapple, dapple_num = mul_apple.backward(dapple_price)
    g.save("apple.svg")           # or show ``g`` in a Jupyter notebook

How it works, and what it costs: while a ``record()`` is active, the
``forward`` and ``backward`` class attributes of the layer classes are
replaced by wrappers that call the original and log the call; when the last
active ``record()`` exits (normally or by an exception) the original
functions are put back, so a layer call outside a recording is exactly the
call it was before (``MulLayer.forward`` is the same function object). The
switch is process-wide: calls from every thread are recorded while a
recording is active, into every active recording.

Values are linked by identity: an input that *is* (``is``) the output of an
earlier recorded call becomes an edge from that call's node. Python floats
and arrays are fresh objects per result, so this is exact for them. Python
caches small integers (and reuses one constant object), so one object can
be both a source value and a layer's output, or the output of two layers;
for such an object, each production is linked to the next use not already
linked, in call order, and remaining uses are sources. A recording keeps
scalars and array summaries (shape, dtype, range), never the arrays: it
holds only weak references to arrays and layers, and tells apart two
objects that had the same ``id`` one after the other. It does keep every
Python and NumPy scalar it saw until it ends, and it grows by one node per
layer call: record a step, not a whole training run.
"""
import functools
import inspect
import threading
import weakref

import numpy as np

from . import _graph_render
from ._graph_format import ArraySummary, format_number, summarize

__all__ = ["record", "Graph", "Node", "Edge", "ArraySummary", "format_number", "add_parser"]

#: Display names of the book's layers (its figures write "x" and "+" in
#: circles, and the layer names in boxes).
_OPS = {
    "MulLayer": "\u00d7", "AddLayer": "+", "Relu": "ReLU", "Sigmoid": "Sigmoid", "Affine": "Affine",
    "SoftmaxWithLoss": "Softmax-with-Loss", "BatchNormalization": "Batch Norm", "Dropout": "Dropout",
}
#: Layer attributes that are parameters with a gradient ``d<name>`` after backward
#: (Affine's W and b; the later chapters' gamma and beta).
_PARAMS = ("W", "b", "gamma", "beta")

_lock = threading.RLock()
_active = []          # the recordings in progress, outermost first
_patched = {}         # class -> {"forward": original or _MISSING, "backward": ...}
_depth = threading.local()   # layer calls in progress in this thread (only outermost ones are nodes)
_MISSING = object()


def _default_layers():
    """Every layer class bprop exports (``bprop.__all__``): chapter 5's and the later chapters'."""
    import importlib

    package = importlib.import_module(__package__)
    found = (getattr(package, n) for n in package.__all__)
    return [c for c in found if isinstance(c, type) and callable(getattr(c, "forward", None))
            and callable(getattr(c, "backward", None))]


class record:
    """Context manager that records bprop layer calls into a :class:`Graph`.

    Parameters
    ----------
    inputs : dict, optional
        ``{name: value}``: names for the values that enter the computation
        (matched by identity), drawn as the book's input labels.
    layers : iterable of classes, optional
        Further classes with ``forward`` and ``backward`` to record (your own
        layers, or the book's); bprop's layers are always recorded.

    Returns
    -------
    Graph
        From ``with record() as g``; drawable during and after the block.

    Notes
    -----
    Recording is process-wide (see the module docstring): the layer classes'
    methods are wrapped while any recording is active and restored when the
    last one exits. Recordings nest; each sees the calls made while it is
    active.
    """

    def __init__(self, inputs=None, *, layers=None):
        if inputs is not None and not isinstance(inputs, dict):
            raise TypeError(f"record: inputs must be a dict of name -> value, got {type(inputs).__name__}")
        for name in inputs or {}:
            if not isinstance(name, str):
                raise TypeError(f"record: inputs keys must be names (str), got {name!r}")
        extra = list(layers or ())
        for cls in extra:
            if not (isinstance(cls, type) and callable(getattr(cls, "forward", None))
                    and callable(getattr(cls, "backward", None))):
                raise TypeError(f"record: layers must be classes with forward and backward, got {cls!r}")
        default = _default_layers()
        self._classes = default + [c for c in extra if c not in default]
        self.graph = Graph()
        for name, value in (inputs or {}).items():
            self.graph.name(value, name)

    def __enter__(self):
        with _lock:
            for cls in self._classes:
                _patch(cls)
            _active.append(self.graph)
        return self.graph

    def __exit__(self, *exc):
        with _lock:
            try:
                if self.graph in _active:
                    _active.remove(self.graph)
                self.graph._finish()
            finally:
                if not _active:
                    _restore_all()
        return False


def _patch(cls):
    """Wrap ``cls.forward`` and ``cls.backward`` once (further recordings share the wrappers)."""
    if cls in _patched:
        return
    saved = {}
    for meth in ("forward", "backward"):
        original = cls.__dict__.get(meth, _MISSING)
        func = getattr(cls, meth)
        try:
            sig = inspect.signature(func)
            setattr(cls, meth, (_forward_wrapper if meth == "forward" else _backward_wrapper)(func, sig))
        except (TypeError, ValueError, AttributeError):
            # A class that cannot take attributes (an extension type) or whose
            # method has no signature is not recorded; undo the half done.
            for done, orig in saved.items():
                if orig is _MISSING:
                    delattr(cls, done)
                else:
                    setattr(cls, done, orig)
            return
        saved[meth] = original
    _patched[cls] = saved


def _restore_all():
    for cls, saved in _patched.items():
        for meth, original in saved.items():
            current = cls.__dict__.get(meth)
            if not getattr(current, "_bprop_graph_wrapper", False):
                continue  # replaced by someone else meanwhile: theirs stays
            if original is _MISSING:
                delattr(cls, meth)
            else:
                setattr(cls, meth, original)
    _patched.clear()


def _enter_call():
    d = getattr(_depth, "n", 0)
    _depth.n = d + 1
    return d == 0


def _leave_call():
    _depth.n -= 1


def _names(sig):
    return [p.name for p in sig.parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)][1:]


def _positional(sig, names, args, kwargs):
    """``[(name, value)]`` of the arguments after ``self`` that are not keyword-only, defaults filled in."""
    if not kwargs and len(args) == len(names):
        return list(zip(names, args))   # the usual call: no signature binding needed
    bound = sig.bind(None, *args, **kwargs)
    bound.apply_defaults()
    return [(k, v) for k, v in list(bound.arguments.items())[1:]
            if sig.parameters[k].kind is not inspect.Parameter.KEYWORD_ONLY]


def _forward_wrapper(func, sig):
    names = _names(sig)

    @functools.wraps(func)
    def forward(self, *args, **kwargs):
        outer = _enter_call()
        try:
            out = func(self, *args, **kwargs)
        finally:
            _leave_call()
        graphs = tuple(_active) if outer else ()
        if graphs:
            # Flags (train_flg) and absent arguments are settings, not values of the graph.
            slots = [(k, v) for i, (k, v) in enumerate(_positional(sig, names, args, kwargs))
                     if i == 0 or not (v is None or isinstance(v, (bool, np.bool_)))]
            for g in graphs:
                g._on_forward(self, slots, out)
        return out

    forward._bprop_graph_wrapper = True
    return forward


def _backward_wrapper(func, sig):
    names = _names(sig)

    @functools.wraps(func)
    def backward(self, *args, **kwargs):
        outer = _enter_call()
        try:
            grads = func(self, *args, **kwargs)
        finally:
            _leave_call()
        graphs = tuple(_active) if outer else ()
        if graphs:
            positional = _positional(sig, names, args, kwargs)
            dout = positional[0][1] if positional else None
            for g in graphs:
                g._on_backward(self, dout, grads)
        return grads

    backward._bprop_graph_wrapper = True
    return backward


class Node:
    """A node of a recorded graph.

    Attributes
    ----------
    kind : str
        ``"layer"``, ``"source"`` (a value from outside the recorded layers)
        or ``"sink"`` (where an unused output goes).
    op : str
        The layer class name (layers), else ``""``.
    label : str
        What the drawing writes: the book's operator or layer name, the
        source's name, or the sink's name (``""`` when unnamed).
    """

    __slots__ = ("kind", "op", "label", "index")

    def __init__(self, kind, op, label, index):
        self.kind, self.op, self.label, self.index = kind, op, label, index

    def __repr__(self):
        return f"Node({self.kind}, {self.label!r})"


class Edge:
    """A value flowing from ``src`` to ``dst``, with its gradient.

    Attributes
    ----------
    src, dst : Node
    slot : str
        The argument of ``dst``'s forward it feeds (``x``, ``y``, ``W``...),
        or ``"out"`` for an edge into a sink.
    value, grad : int, float, numpy scalar, ArraySummary or None
        The forward value and the gradient from backward (None when backward
        did not give one). Arrays are kept as summaries.
    """

    __slots__ = ("src", "dst", "slot", "value", "grad")

    def __init__(self, src, dst, slot, value, grad):
        self.src, self.dst, self.slot, self.value, self.grad = src, dst, slot, value, grad

    def __repr__(self):
        return f"Edge({self.src.label!r} -> {self.dst.label!r}, {self.slot}, value={self.value!r}, grad={self.grad!r})"


class _Call:
    """One recorded forward call; ``dout`` and ``grads`` come from the layer's next backward.

    Values are identified by key, ``(id, generation)`` (see ``Graph._key``).
    """

    __slots__ = ("layer_cls", "inputs", "out_key", "out", "dout", "grads")

    def __init__(self, layer_cls, inputs, out_key, out):
        self.layer_cls = layer_cls
        self.inputs = inputs        # [(slot, key, summary)]
        self.out_key = out_key
        self.out = out
        self.dout = None
        self.grads = {}


class Graph:
    """A recorded computation: layer nodes, sources and sinks, and the edges between them.

    Made by :class:`record`. Drawn with :meth:`to_svg` / :meth:`save`, and
    inline in Jupyter (``_repr_svg_``).
    """

    def __init__(self):
        self._calls = []
        self._names = []            # (key, name) in the order given
        self._keep = []             # objects without weak references (scalars), kept: their ids stay unique
        self._refs = {}             # id -> weak reference to the object last seen with that id
        self._generation = {}       # id -> how many distinct objects have had that id
        self._last_forward = {}     # key of a layer -> index of its latest forward call
        self._ended = False
        self._resolved = None
        self._glock = threading.Lock()

    # -- recording -------------------------------------------------------
    def name(self, value, name):
        """Name ``value`` (matched by identity) for the drawing; returns ``value``.

        Call it while the recording is active (or pass ``inputs=`` to
        :class:`record`): afterwards object identities are released.
        """
        if not isinstance(name, str):
            raise TypeError(f"Graph.name: name must be a str, got {type(name).__name__}")
        if self._ended:
            raise RuntimeError("Graph.name: the recording has ended; name values inside the with block "
                               "or with record(inputs={...})")
        with self._glock:
            self._names.append((self._key(value), name))
            self._resolved = None
        return value

    def _key(self, obj):
        """``(id, generation)``: unique for ``obj`` for the whole recording (call with the lock held).

        An object that takes weak references (arrays, layers) is not kept
        alive; when its id turns up again on another object, the generation
        tells them apart. Other objects (Python and NumPy scalars) are kept,
        so their ids are not reused while recording.
        """
        i = id(obj)
        ref = self._refs.get(i)
        if ref is not None:
            if ref() is obj:
                return i, self._generation.get(i, 0)
            self._generation[i] = self._generation.get(i, 0) + 1   # the earlier object has died
        elif i in self._generation:
            return i, self._generation[i]                        # a kept object
        try:
            self._refs[i] = weakref.ref(obj)
        except TypeError:
            self._keep.append(obj)
            self._refs.pop(i, None)
            self._generation.setdefault(i, 0)
        return i, self._generation.get(i, 0)

    def _on_forward(self, layer, slots, out):
        summaries = [(slot, summarize(v)) for slot, v in slots]
        for attr in _PARAMS:
            p = getattr(layer, attr, None)
            if isinstance(p, np.ndarray) and hasattr(layer, "d" + attr):
                slots = slots + [(attr, p)]
                summaries.append((attr, summarize(p)))
        out_summary = summarize(out)
        with self._glock:
            inputs = [(slot, self._key(v), summary) for (slot, v), (_, summary) in zip(slots, summaries)]
            self._last_forward[self._key(layer)] = len(self._calls)
            self._calls.append(_Call(type(layer), inputs, self._key(out), out_summary))
            self._resolved = None

    def _on_backward(self, layer, dout, grads):
        with self._glock:
            index = self._last_forward.get(self._key(layer))
            if index is None:
                return  # its forward ran before the recording: nothing to attach to
            call = self._calls[index]
            names = [slot for slot, _, _ in call.inputs if slot not in _PARAMS]
            if isinstance(grads, tuple) and len(grads) == len(names):
                got = dict(zip(names, grads))
            elif grads is not None and not isinstance(grads, tuple) and names:
                got = {names[0]: grads}
            else:
                got = {}
            for attr in _PARAMS:
                g = getattr(layer, "d" + attr, None)
                if g is not None and any(slot == attr for slot, _, _ in call.inputs):
                    got[attr] = g
            call.grads = {k: summarize(v) for k, v in got.items() if v is not None}
            call.dout = summarize(dout)
            self._resolved = None

    def _finish(self):
        self._resolve()
        self._ended = True
        self._keep, self._refs, self._generation, self._last_forward = [], {}, {}, {}

    # -- the graph -------------------------------------------------------
    def _resolve(self):
        with self._glock:
            if self._resolved is None:
                self._resolved = _link(self._calls, self._names)
            return self._resolved

    @property
    def nodes(self):
        """The nodes (:class:`Node`): layers in call order, then sources and sinks."""
        return list(self._resolve()[0])

    @property
    def edges(self):
        """The edges (:class:`Edge`), forward value and gradient on each."""
        return list(self._resolve()[1])

    def to_svg(self, *, title=None):
        """The graph as an SVG document (str), in the book's layout.

        Parameters
        ----------
        title : str, optional
            A caption above the graph.
        """
        nodes, edges = self._resolve()
        return _graph_render.svg(nodes, edges, title=title)

    def save(self, path, *, title=None):
        """Write the drawing to ``path``: ``.svg`` always, ``.png`` when matplotlib is installed.

        Parameters
        ----------
        path : str or os.PathLike
        title : str, optional
        """
        import os

        suffix = os.path.splitext(os.fspath(path))[1].lower()
        if suffix not in (".svg", ".png"):
            raise ValueError(f"Graph.save: path must end in .svg or .png, got {os.fspath(path)!r}")
        nodes, edges = self._resolve()
        if suffix == ".png":
            _graph_render.png(nodes, edges, path, title=title)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(_graph_render.svg(nodes, edges, title=title))

    def _repr_svg_(self):
        return self.to_svg()

    def __repr__(self):
        nodes, edges = self._resolve()
        layers = sum(n.kind == "layer" for n in nodes)
        return f"<bprop.graph.Graph: {layers} layer calls, {len(edges)} edges>"


def _link(calls, names):
    """Nodes and edges from the call log (see the module docstring for the linking rule)."""
    nodes = [Node("layer", c.layer_cls.__name__, _OPS.get(c.layer_cls.__name__, c.layer_cls.__name__), i)
             for i, c in enumerate(calls)]
    # Every production and use of each value (by key), in call order (a
    # call's inputs come before its output).
    events = {}
    for i, c in enumerate(calls):
        for slot, vkey, _ in c.inputs:
            events.setdefault(vkey, []).append(("use", i, slot))
        events.setdefault(c.out_key, []).append(("out", i, None))
    link = {}                  # (call, slot) -> producing call
    consumed = set()           # calls whose output some call uses
    for vkey, evs in events.items():
        outs = [e for e in evs if e[0] == "out"]
        if not outs:
            continue
        first_out = evs.index(outs[0])
        shared = len(outs) > 1 or any(e[0] == "use" for e in evs[:first_out])
        pending = []
        for kind, i, slot in evs:
            if kind == "out":
                pending.append(i)
            elif pending:
                # A fresh object: every later use is this output (fan-out).
                # A shared one (cached int, constant): one use per production, FIFO.
                producer = pending[-1] if not shared else pending.pop(0)
                link[(i, slot)] = producer
                consumed.add(producer)
    name_of = {}
    for vkey, nm in names:
        name_of.setdefault(vkey, []).append(nm)

    edges, sources = [], {}
    uses_of = {}   # value key -> number of unlinked scalar uses so far (for several names on one object)
    for i, c in enumerate(calls):
        for slot, vkey, summary in c.inputs:
            grad = c.grads.get(slot)
            if (i, slot) in link:
                edges.append(Edge(nodes[link[(i, slot)]], nodes[i], slot, summary, grad))
                continue
            given = name_of.get(vkey, [])
            if isinstance(summary, ArraySummary) or len(given) == 1:
                which = ("value", vkey)                 # one source, shared by every use
            elif given:
                k = uses_of.get(vkey, 0)
                uses_of[vkey] = k + 1
                which = ("name", vkey, min(k, len(given) - 1))
            else:
                which = ("use", i, slot)                # an unnamed constant: its own source
            src = sources.get(which)
            if src is None:
                label = given[which[2]] if which[0] == "name" else (given[0] if given else slot)
                src = sources[which] = Node("source", "", label, len(nodes) + len(sources))
            edges.append(Edge(src, nodes[i], slot, summary, grad))
    all_nodes = nodes + list(sources.values())
    for i, c in enumerate(calls):
        if i not in consumed:
            given = name_of.get(c.out_key, [])
            sink = Node("sink", "", given[-1] if given else "", len(all_nodes))
            all_nodes.append(sink)
            edges.append(Edge(nodes[i], sink, "out", c.out, c.dout))
    return all_nodes, edges


def add_parser(subparsers):
    """Register ``bprop graph`` on the ``bprop`` command's subparsers."""
    from . import _graph_figures

    return _graph_figures.add_parser(subparsers)
