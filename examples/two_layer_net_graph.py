"""The two-layer network's layers as a computational graph: one forward and backward, drawn.

``python two_layer_net_graph.py two_layer.svg`` writes the drawing (default
two_layer_net.svg): Affine, ReLU, Affine and Softmax-with-Loss, each edge
with the shape and range of the array going forward above it and of its
gradient below it.
"""
import sys

import numpy as np

import bprop.graph
from bprop import TwoLayerNet

out = sys.argv[1] if len(sys.argv) > 1 else "two_layer_net.svg"

np.random.seed(0)
net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
x = np.random.rand(3, 784)             # three stand-in "images"
t = np.array([7, 2, 1])                # and their labels

names = {"x": x, "t": t, **net.params}  # W1, b1, W2, b2: the arrays the Affine layers hold
with bprop.graph.record(inputs=names) as graph:
    loss = net.loss(x, t)
    graph.name(loss, "loss")
    dout = net.lastLayer.backward(1)
    for layer in reversed(list(net.layers.values())):
        dout = layer.backward(dout)

print(graph)
graph.save(out)
print("drew the graph in", out)
