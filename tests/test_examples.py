"""The book's two shopping examples print exactly the book's numbers."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# The book's printed output (5.4.1 and 5.4.2), float repr included.
EXPECTED = {
    "buy_apple.py": "price: 220\ndApple: 2.2\ndApple_num: 110\ndTax: 200\n",
    "buy_apple_orange.py": (
        "price: 715\ndApple: 2.2\ndApple_num: 110\ndOrange: 3.3000000000000003\n"
        "dOrange_num: 165\ndTax: 650\n"
    ),
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_shopping_example_output(script):
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED[script]


def test_mul_layer_keeps_python_ints():
    from bprop import AddLayer, MulLayer

    mul = MulLayer()
    assert mul.forward(3, 4) == 12 and type(mul.forward(3, 4)) is int
    assert mul.backward(2) == (8, 6)
    assert all(type(g) is int for g in mul.backward(2))
    add = AddLayer()
    assert add.forward(3, 4) == 7
    assert add.backward(5) == (5, 5) and all(type(g) is int for g in add.backward(5))
