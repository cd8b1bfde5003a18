"""``python -m bprop``: the ``bprop`` command line."""
import sys

from .cli import main

sys.exit(main())
