"""Drawing a laid-out graph: shapes in pixels, written as SVG (no dependency) or PNG (matplotlib).

:func:`shapes` turns nodes and edges into a list of primitives; :func:`svg`
and :func:`png` each draw that same list, so both outputs look alike.
"""
from xml.sax.saxutils import escape, quoteattr

from . import _graph_layout
from ._graph_format import ArraySummary, format_number

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
SIZE = 13            # px, edge labels and node names
EM = 0.62            # estimated width of one character, in em (DejaVu Sans averages 0.6; a little room)
LINE = 16            # px between label lines
RADIUS = 20          # circles of the x and + nodes
BOX_H = 34           # height of a layer's box
BEND = 34            # px before a node where an edge coming from another row turns towards it
PAD = 10
MARGIN = 20
INK, GRAD, MUTED = "#000000", "#d62728", "#666666"

LEGEND = "black above an edge: forward value; red below it: gradient (backward)"


def _lines(value):
    if value is None:
        return []
    if isinstance(value, ArraySummary):
        return value.lines()
    return [format_number(value)]


def _width(text, size=SIZE):
    return len(text) * EM * size


def _node_size(node):
    """(width, height) of a node's own drawing."""
    if node.kind == "layer":
        if node.op in ("MulLayer", "AddLayer"):
            return 2 * RADIUS, 2 * RADIUS
        return _width(node.label) + 2 * PAD, BOX_H
    return (_width(node.label) + 8 if node.label else 8), LINE


def shapes(nodes, edges, title=None):
    """Primitives of the drawing and its size: ``(list, width, height)``.

    Primitives are tuples: ``("line", points, color, width)``,
    ``("arrowhead", tip, base, color)``, ``("circle", cx, cy, r)``,
    ``("rect", x, y, w, h)``, ``("text", x, y, s, color, anchor, size)``,
    ``("group", tooltip)`` / ``("end",)``.
    """
    out = []
    if not nodes:
        w, h = 320, 60
        out.append(("text", MARGIN, 36, "(no layer calls recorded)", MUTED, "start", SIZE))
        return out, w, h
    in_edges = {n: [] for n in nodes}
    out_edges = {n: [] for n in nodes}
    for e in edges:
        in_edges[e.dst].append(e)
        out_edges[e.src].append(e)
    col = _graph_layout.columns(nodes, in_edges, out_edges)
    row = _graph_layout.rows(nodes, in_edges, out_edges, col)
    lane = _graph_layout.lanes(edges, col, row)

    above = max((len(_lines(e.value)) for e in edges), default=1)
    below = max((len(_lines(e.grad)) for e in edges), default=0)
    pitch = max(2 * RADIUS + 16, 18 + (above + below) * LINE + 14)
    ncol = max(col.values()) + 1
    col_w = [12.0] * ncol
    for n in nodes:
        col_w[col[n]] = max(col_w[col[n]], _node_size(n)[0])
    gap_w = [0.0] * ncol
    drawn = _drawn(edges, col, row)
    for d, _ in drawn:
        last = col[d.dst] - 1   # the gap an edge's labels go in
        text = max((_width(s) for s in d.value + d.grad), default=0)
        gap_w[last] = max(gap_w[last], text + BEND + 2 * PAD, 70)
    xs, x = [], MARGIN
    for c in range(ncol):
        xs.append(x + col_w[c] / 2)
        x += col_w[c] + gap_w[c]
    width = x + MARGIN
    top = MARGIN + (LINE + 8 if title else 0) + above * LINE + 6
    low_row = min([*row.values(), *lane.values()])
    ys = {n: top + (row[n] - low_row) * pitch for n in nodes}
    lane_y = {e: top + (r - low_row) * pitch for e, r in lane.items()}
    height = max([*ys.values(), *lane_y.values()]) + below * LINE + 14 + LINE + 10 + MARGIN

    if title:
        out.append(("text", MARGIN, MARGIN + SIZE, title, INK, "start", SIZE + 1))

    def right(n):
        if n.kind == "source":
            return xs[col[n]] + col_w[col[n]] / 2
        return xs[col[n]] + _node_size(n)[0] / 2

    for d, full in drawn:
        _edge(out, d, full, xs, ys, col, col_w, right, lane_y.get(d.edges[0]))
    for n in nodes:
        x, y = xs[col[n]], ys[n]
        if n.kind == "layer":
            out.append(("group", f"{n.op} (call {n.index + 1})"))
            w, h = _node_size(n)
            if n.op in ("MulLayer", "AddLayer"):
                out.append(("circle", x, y, RADIUS))
                out.append(("text", x, y + 0.36 * (SIZE + 5), n.label, INK, "middle", SIZE + 5))
            else:
                out.append(("rect", x - w / 2, y - h / 2, w, h))
                out.append(("text", x, y + 0.36 * SIZE, n.label, INK, "middle", SIZE))
            out.append(("end",))
        elif n.kind == "source" and n.label:
            out.append(("text", right(n) - 6, y + 0.36 * SIZE, n.label, INK, "end", SIZE))
        elif n.kind == "sink" and n.label:
            out.append(("text", xs[col[n]] - col_w[col[n]] / 2 + 4, y + 0.36 * SIZE, n.label, INK, "start", SIZE))
    out.append(("text", MARGIN, height - MARGIN + 4, LEGEND, MUTED, "start", SIZE - 2))
    width = max(width, MARGIN * 2 + _width(LEGEND, SIZE - 2))
    return out, width, height


class _Drawn:
    """One drawn edge: the recorded edges between one source and one target (``x * x`` has two)."""

    def __init__(self, edges):
        self.edges = edges
        self.src, self.dst = edges[0].src, edges[0].dst
        self.value = _lines(edges[0].value)   # the same object on every one of them
        grads = [_lines(e.grad) for e in edges if e.grad is not None]
        # Gradients into one value add up: x * x gives dout * x + dout * x.
        self.grad = [" + ".join(g[i] for g in grads if i < len(g)) for i in range(max(map(len, grads), default=0))]


def _drawn(edges, col, row):
    """``[(_Drawn, full)]``: parallel edges merged; of the edges leaving one node into one column,
    the first (the straight one, if any) carries the labels (``full``), the others, which bend
    off it, only their gradient, beside their slanted part."""
    merged = {}
    for e in edges:
        merged.setdefault((e.src, e.dst), []).append(e)
    fans = {}
    for group in merged.values():
        d = _Drawn(group)
        fans.setdefault((d.src, col[d.dst]), []).append(d)
    out = []
    for fan in fans.values():
        fan.sort(key=lambda d: (row[d.dst] != row[d.src], row[d.dst]))
        out.extend((d, i == 0) for i, d in enumerate(fan))
    return out


def _edge(out, d, full, xs, ys, col, col_w, right, lane_y=None):
    x0, y0 = right(d.src), ys[d.src]
    start = [(x0, y0)]
    if lane_y is not None:
        # Leave the source's row at once and run along a free row (see _graph_layout.lanes).
        x0, y0 = x0 + BEND, lane_y
        start.append((x0, y0))
    dst = d.dst
    cx, cy = xs[col[dst]], ys[dst]
    if dst.kind == "sink":
        tip = (cx - col_w[col[dst]] / 2, cy)
        bend = tip
    else:
        w, h = _node_size(dst)
        bend = (cx - w / 2 - (BEND if abs(cy - y0) > 0.5 else 0), y0)
        dx, dy = cx - bend[0], cy - bend[1]
        if dst.op in ("MulLayer", "AddLayer"):
            norm = (dx * dx + dy * dy) ** 0.5
            k = RADIUS / norm
        else:
            k = min(w / 2 / abs(dx) if dx else float("inf"), h / 2 / abs(dy) if dy else float("inf"))
        tip = (cx - dx * k, cy - dy * k)
    value, grad = d.value, d.grad
    slots = ", ".join(x.slot for x in d.edges)
    tooltip = f"{d.src.label or d.src.op or 'input'} \u2192 {dst.label or 'output'} ({slots}): " \
              f"forward {' '.join(value) or '-'}, gradient {' '.join(grad) or 'not computed'}"
    if isinstance(d.edges[0].value, ArraySummary):
        tooltip += f", {d.edges[0].value.dtype}"
    out.append(("group", tooltip))
    points = start + ([bend] if bend != tip else []) + [tip]
    out.append(("line", points, INK, 1.4))
    last = points[-2]
    out.append(("arrowhead", tip, last, INK))
    if not full:
        # A branch of a fan-out: the value is written on the first branch; the
        # gradient goes beside this branch's slanted part.
        mx, my = (bend[0] + tip[0]) / 2, (bend[1] + tip[1]) / 2
        for i, s in enumerate(grad):
            out.append(("text", mx + 8, my + 4 + i * LINE, s, GRAD, "start", SIZE))
        out.append(("end",))
        return
    # Labels go on the part of the horizontal run inside the last gap.
    gap_left = max(x0, xs[col[dst]] - col_w[col[dst]] / 2 - _gap_span(d, xs, col, col_w))
    mid = (gap_left + bend[0]) / 2
    for i, s in enumerate(reversed(value)):
        out.append(("text", mid, y0 - 6 - i * LINE, s, INK, "middle", SIZE))
    if grad:
        half = min(14, (bend[0] - gap_left) / 2 - 4)
        ya = y0 + 8
        out.append(("line", [(mid + half, ya), (mid - half + 5, ya)], GRAD, 1.6))
        out.append(("arrowhead", (mid - half, ya), (mid + half, ya), GRAD))
        for i, s in enumerate(grad):
            out.append(("text", mid, ya + 5 + (i + 1) * LINE - 4, s, GRAD, "middle", SIZE))
    out.append(("end",))


def _gap_span(d, xs, col, col_w):
    """Width of the gap left of the edge's target column."""
    c = col[d.dst]
    return (xs[c] - col_w[c] / 2) - (xs[c - 1] + col_w[c - 1] / 2)


def _arrow_points(tip, base, length=9, half=4):
    (tx, ty), (bx, by) = tip, base
    dx, dy = tx - bx, ty - by
    norm = (dx * dx + dy * dy) ** 0.5 or 1.0
    ux, uy = dx / norm, dy / norm
    back = (tx - ux * length, ty - uy * length)
    return [tip, (back[0] - uy * half, back[1] + ux * half), (back[0] + uy * half, back[1] - ux * half)]


def _f(v):
    return f"{v:.1f}".rstrip("0").rstrip(".")


def svg(nodes, edges, title=None):
    """The drawing as an SVG document (str)."""
    prims, width, height = shapes(nodes, edges, title)
    w, h = _f(width), _f(height)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'font-family={quoteattr(FONT)} font-size="{SIZE}">',
        f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>',
    ]
    for p in prims:
        kind = p[0]
        if kind == "group":
            parts.append(f"<g><title>{escape(p[1])}</title>")
        elif kind == "end":
            parts.append("</g>")
        elif kind == "line":
            pts = " ".join(f"{_f(x)},{_f(y)}" for x, y in p[1])
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{p[2]}" stroke-width="{p[3]}"/>')
        elif kind == "arrowhead":
            pts = " ".join(f"{_f(x)},{_f(y)}" for x, y in _arrow_points(p[1], p[2]))
            parts.append(f'<polygon points="{pts}" fill="{p[3]}"/>')
        elif kind == "circle":
            parts.append(f'<circle cx="{_f(p[1])}" cy="{_f(p[2])}" r="{_f(p[3])}" fill="#ffffff" '
                         f'stroke="{INK}" stroke-width="1.4"/>')
        elif kind == "rect":
            parts.append(f'<rect x="{_f(p[1])}" y="{_f(p[2])}" width="{_f(p[3])}" height="{_f(p[4])}" rx="5" '
                         f'fill="#ffffff" stroke="{INK}" stroke-width="1.4"/>')
        elif kind == "text":
            _, x, y, s, color, anchor, size = p
            parts.append(f'<text x="{_f(x)}" y="{_f(y)}" fill="{color}" text-anchor="{anchor}"'
                         + (f' font-size="{size}"' if size != SIZE else "") + f">{escape(s)}</text>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def png(nodes, edges, path, title=None, scale=2):
    """Draw the same primitives with matplotlib into a PNG at ``path`` (``scale`` pixels per SVG pixel)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("PNG output needs matplotlib: pip install matplotlib (or save as .svg)") from None
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import Circle, FancyBboxPatch, Polygon

    del matplotlib
    prims, width, height = shapes(nodes, edges, title)
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    pt = 72 / 100  # points per pixel at 100 dpi
    # matplotlib's own sans-serif is DejaVu Sans, the SVG's first choice; naming
    # fonts it lacks would only log a "not found" line per text.
    family = "sans-serif"
    for p in prims:
        kind = p[0]
        if kind == "line":
            ax.plot([x for x, _ in p[1]], [y for _, y in p[1]], color=p[2], linewidth=p[3] * pt)
        elif kind == "arrowhead":
            ax.add_patch(Polygon(_arrow_points(p[1], p[2]), closed=True, color=p[3], linewidth=0))
        elif kind == "circle":
            ax.add_patch(Circle((p[1], p[2]), p[3], facecolor="white", edgecolor=INK, linewidth=1.4 * pt, zorder=3))
        elif kind == "rect":
            ax.add_patch(FancyBboxPatch((p[1], p[2]), p[3], p[4], boxstyle="round,pad=0,rounding_size=5",
                                        facecolor="white", edgecolor=INK, linewidth=1.4 * pt, zorder=3))
        elif kind == "text":
            _, x, y, s, color, anchor, size = p
            ha = {"start": "left", "middle": "center", "end": "right"}[anchor]
            ax.text(x, y, s, color=color, ha=ha, va="baseline", fontsize=size * pt, family=family, zorder=4)
    fig.savefig(path, dpi=100 * scale, facecolor="white")
