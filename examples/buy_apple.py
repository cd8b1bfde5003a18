"""The book's first computational graph (5.4.1): two apples and tax.

``python buy_apple.py --draw apple.svg`` also draws the graph (book figure
5-16) from the layer calls, recorded by ``bprop.graph.record``.
"""
import argparse

import bprop.graph
from bprop import MulLayer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--draw", metavar="FILE.svg", help="also draw the computational graph (.svg, or .png with matplotlib)")
args = parser.parse_args()

apple = 100
apple_num = 2
tax = 1.1

mul_apple_layer = MulLayer()
mul_tax_layer = MulLayer()

# Recording leaves every result as it is; it only notes the calls.
with bprop.graph.record(inputs={"apple": apple, "apple_num": apple_num, "tax": tax}) as graph:
    # forward
    apple_price = mul_apple_layer.forward(apple, apple_num)
    price = mul_tax_layer.forward(apple_price, tax)
    graph.name(price, "price")

    # backward
    dprice = 1
    dapple_price, dtax = mul_tax_layer.backward(dprice)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)

print("price:", int(price))
print("dApple:", dapple)
print("dApple_num:", int(dapple_num))
print("dTax:", dtax)

if args.draw:
    graph.save(args.draw)
    print("drew the graph in", args.draw)
