"""The book's second computational graph (5.4.2): apples, oranges and tax.

``python buy_apple_orange.py --draw apple_orange.svg`` also draws the graph
(book figure 5-17) from the layer calls, recorded by ``bprop.graph.record``.
"""
import argparse

import bprop.graph
from bprop import AddLayer, MulLayer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--draw", metavar="FILE.svg", help="also draw the computational graph (.svg, or .png with matplotlib)")
args = parser.parse_args()

apple = 100
apple_num = 2
orange = 150
orange_num = 3
tax = 1.1

mul_apple_layer = MulLayer()
mul_orange_layer = MulLayer()
add_apple_orange_layer = AddLayer()
mul_tax_layer = MulLayer()

names = {"apple": apple, "apple_num": apple_num, "orange": orange, "orange_num": orange_num, "tax": tax}
# Recording leaves every result as it is; it only notes the calls.
with bprop.graph.record(inputs=names) as graph:
    # forward
    apple_price = mul_apple_layer.forward(apple, apple_num)
    orange_price = mul_orange_layer.forward(orange, orange_num)
    all_price = add_apple_orange_layer.forward(apple_price, orange_price)
    price = mul_tax_layer.forward(all_price, tax)
    graph.name(price, "price")

    # backward
    dprice = 1
    dall_price, dtax = mul_tax_layer.backward(dprice)
    dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
    dorange, dorange_num = mul_orange_layer.backward(dorange_price)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)

print("price:", int(price))
print("dApple:", dapple)
print("dApple_num:", int(dapple_num))
print("dOrange:", dorange)
print("dOrange_num:", int(dorange_num))
print("dTax:", dtax)

if args.draw:
    graph.save(args.draw)
    print("drew the graph in", args.draw)
