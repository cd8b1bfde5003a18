"""What bprop.graph costs a layer call when nothing records: ``python bench/graph_overhead.py [ROUNDS]``.

Alternates child processes of two kinds, each timing the same layer calls
at the book's (100, 50) (medians of timeit repeats):

* ``plain``: ``import bprop`` only; bprop.graph never imported;
* ``ended``: bprop.graph imported and one recording of every layer made
  and ended before timing.

and prints each kind's median per call and the ratio ended / plain, per
layer. The ``recording`` column (a recording active in the child, for
comparison) is what a call costs while it is being recorded.
"""
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, timeit
import numpy as np
import bprop
from bprop import Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss

mode = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.standard_normal((100, 50))
W, b = rng.standard_normal((50, 10)), rng.standard_normal(10)
t = rng.integers(0, 10, 100)
relu, sig, aff, loss, mul = Relu(), Sigmoid(), Affine(W, b), SoftmaxWithLoss(), MulLayer()
s = aff.forward(x)
cases = {
    "Relu f+b (100, 50)": lambda: relu.backward(relu.forward(x)),
    "Sigmoid f+b (100, 50)": lambda: sig.backward(sig.forward(x)),
    "Affine f+b (100, 50, 10)": lambda: aff.backward(aff.forward(x)),
    "SoftmaxWithLoss f+b (100, 10)": lambda: (loss.forward(s, t), loss.backward()),
    "MulLayer f+b (floats)": lambda: (mul.forward(100.0, 2.0), mul.backward(1.0)),
}
if mode in ("ended", "recording"):
    import bprop.graph
    with bprop.graph.record():
        for f in cases.values():
            f()
if mode == "recording":
    ctx = bprop.graph.record()
    ctx.__enter__()
out = {}
for name, f in cases.items():
    n = 200 if mode == "recording" else 2000
    runs = timeit.repeat(f, number=n, repeat=11)
    out[name] = statistics.median(runs) / n
print(json.dumps(out))
"""


def main(rounds=4):
    kinds = ("plain", "ended", "recording")
    got = {k: [] for k in kinds}
    for _ in range(rounds):
        for k in kinds:
            proc = subprocess.run([sys.executable, "-c", CHILD, k], capture_output=True, text=True, check=True)
            got[k].append(json.loads(proc.stdout))
    names = list(got["plain"][0])
    print(f"{'layer call':32s} {'plain':>9s} {'ended':>9s} {'ended/plain':>12s} {'recording':>10s}")
    for name in names:
        med = {k: statistics.median(r[name] for r in got[k]) * 1e6 for k in kinds}
        print(f"{name:32s} {med['plain']:7.2f}us {med['ended']:7.2f}us {med['ended'] / med['plain']:11.3f}x "
              f"{med['recording']:8.2f}us")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
