"""``python -m bprop.bench``: the same as ``bprop bench``."""
import sys

from .command import main

sys.exit(main())
