"""Where each node and label of a recorded graph goes, in the book's layout.

The book draws a computational graph left to right: inputs on the left as
plain labels, operator nodes (circles with x or +, boxes for layers), the
forward value above each edge and the gradient below it, in red. Layout:

* Columns: a layer sits one column right of the latest layer feeding it;
  a source one column left of its (first) consumer; a sink one right of
  its layer.
* Rows: a tidy tree, built from each output back to the inputs. A node's
  inputs are stacked top to bottom in argument order, each with its own
  band of rows, so subtrees never overlap. A node sits at the mean row of
  the layers feeding it, or, with only sources as inputs, in line with
  its first input: the main line runs straight, as in the book.
* Sources other than a layer's first input then move up as far as they can
  (but stay below their consumer) without touching anything in the cells
  they and their edge use, so they come in from below-left, as the
  book's "tax" does.

Cells: column ``c``'s box is cell ``2c``, the gap right of it ``2c + 1``;
an edge from column ``a`` to ``b`` runs horizontally through cells
``2a + 1 .. 2b - 1`` at its source's row and bends into its target in the
last gap.
"""


def columns(nodes, in_edges, out_edges):
    """Column of every node (dict), starting at 0."""
    col = {}
    for n in nodes:  # layer nodes come in call order: producers first
        if n.kind == "layer":
            feeders = [col[e.src] for e in in_edges[n] if e.src.kind == "layer"]
            col[n] = 1 + max(feeders, default=0)
    for n in nodes:
        if n.kind == "source":
            col[n] = min(col[e.dst] for e in out_edges[n]) - 1
        elif n.kind == "sink":
            col[n] = col[in_edges[n][0].src] + 1
    low = min(col.values(), default=0)
    return {n: c - low for n, c in col.items()}


def rows(nodes, in_edges, out_edges, col):
    """Row of every node (dict; rows may be halves where a node sits between its inputs)."""
    row, secondary = {}, []

    def place(node, top):
        cursor = top
        layer_rows = []
        first_source = None
        for i, e in enumerate(in_edges[node]):
            s = e.src
            if s.kind == "layer":
                if s not in row:
                    cursor = place(s, cursor)
                layer_rows.append(row[s])
            elif s not in row:
                row[s] = cursor
                cursor += 1
                if i == 0:
                    first_source = s
                else:
                    secondary.append((s, node))
        if layer_rows:
            row[node] = sum(layer_rows) / len(layer_rows)
            if first_source is not None:
                secondary.insert(0, (first_source, node))
        elif in_edges[node] and in_edges[node][0].src.kind == "source":
            row[node] = row[in_edges[node][0].src]
        else:
            row[node] = top
        return max(cursor, row[node] + 1)

    cursor = 0
    for n in nodes:
        if n.kind == "sink":
            producer = in_edges[n][0].src
            if producer not in row:
                cursor = place(producer, cursor)
            row[n] = row[producer]
    for n in nodes:  # anything not reached from a sink (not expected; kept visible)
        if n.kind == "layer" and n not in row:
            cursor = place(n, cursor)
    for n in nodes:
        if n not in row:
            row[n] = cursor
            cursor += 1

    # Move the secondary sources up, in order of their consumer's column.
    occupied = {}

    def cells(node, r):
        out = [2 * col[node]]
        for e in out_edges.get(node, ()):
            out.extend(range(2 * col[node] + 1, 2 * col[e.dst]))
        return [(c, r) for c in out]

    for n in nodes:
        for c, r in cells(n, row[n]):
            occupied.setdefault(c, []).append((r, n))
    for s, consumer in sorted(secondary, key=lambda p: (col[p[1]], row[p[1]])):
        mine = cells(s, row[s])
        for c, r in mine:
            occupied[c].remove((r, s))
        target = row[consumer] + 1
        while target < row[s]:
            if all(abs(r - target) >= 1 for c, _ in cells(s, target) for r, _ in occupied.get(c, ())):
                break
            target += 1
        row[s] = min(target, row[s])
        for c, r in cells(s, row[s]):
            occupied.setdefault(c, []).append((r, s))
    return row
