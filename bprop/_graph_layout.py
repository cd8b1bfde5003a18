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

    # A layer whose output feeds several layers is placed once, so two of
    # its consumers can land on one row of one column: keep one row between
    # any two nodes of a column, pushing the later ones down (sinks follow
    # their layer first).
    for c in sorted(set(col.values())):
        members = [n for n in nodes if col[n] == c]
        for n in members:
            if n.kind == "sink":
                row[n] = row[in_edges[n][0].src]
        members.sort(key=lambda n: (row[n], n.index))
        for prev, n in zip(members, members[1:]):
            row[n] = max(row[n], row[prev] + 1)

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


def lanes(edges, col, row):
    """Row each edge runs along (dict ``edge -> row``) where that is not its source's row.

    An edge spanning several columns would run straight through whatever
    sits on its source's row in between (a node, another edge's labels);
    it then leaves its source, runs along the nearest row free in every
    cell it crosses (above the graph if need be), and bends into its target
    from there.
    """
    occupied = {}   # cell -> [(row, source node)]
    for e in edges:
        occupied.setdefault(2 * col[e.src], []).append((row[e.src], e.src))
        if col[e.dst] - col[e.src] == 1:
            occupied.setdefault(2 * col[e.src] + 1, []).append((row[e.src], e.src))
    for e in edges:
        occupied.setdefault(2 * col[e.dst], []).append((row[e.dst], e.dst))
    out = {}
    for e in sorted(edges, key=lambda e: (col[e.dst] - col[e.src], col[e.src])):
        a, b = col[e.src], col[e.dst]
        if b - a < 2:
            continue
        crossed = range(2 * a + 1, 2 * b)

        def free(r):
            return all(abs(r - rr) >= 1 or owner is e.src for c in crossed for rr, owner in occupied.get(c, ()))

        base = row[e.src]
        for step in range(64):
            r = base + (step + 1) // 2 * (1 if step % 2 else -1) if step else base
            if free(r):
                break
        else:
            r = base
        if r != base:
            out[e] = r
        for c in range(2 * a + 1, 2 * b):
            occupied.setdefault(c, []).append((r, e.src))
    return out
