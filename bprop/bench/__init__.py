"""``bprop bench``: time bprop's layers against the book's NumPy code and PyTorch.

Run it on your own machine to see what the compiled kernels buy::

    bprop bench --quick                     # about a minute: the three smaller sizes
    bprop bench                             # every size, longer timings
    bprop bench --layers relu,affine --dtype float32 --threads 2
    bprop bench --json results.json --plot speedup.png
    python -m bprop.bench ...               # the same without the console script

For every layer x size x dtype x pass (forward, backward, forward+backward)
it times four implementations of the same computation, on the same inputs
(:mod:`.cases`): ``book``, the book's own NumPy layers (:mod:`bprop.book`),
the baseline; ``numpy``, bprop's layers on the NumPy backend; ``cython``,
bprop's layers on the compiled kernels ("bprop time" in the table); and
``torch``, PyTorch's CPU kernels for the same computation when torch
imports (:mod:`.torch_cases`).

Before an implementation is timed, its forward and backward results are
checked against the book's (:mod:`.check`), so a fast but wrong kernel
cannot win: a mismatch stops the run.

Timing (:mod:`.timing`): every measurement calls the code back to back in a
loop scaled so one repeat lasts at least 0.2 s (0.04 s with ``--quick``),
repeated 5 times (3 with ``--quick`` or when one call takes over a second);
the table shows the median per call and, after ``±``, half the
interquartile range relative to the median. Inputs are prepared outside the
timed loop; backward timings run forward once beforehand. NumPy's BLAS,
bprop's kernels and PyTorch all get ``--threads`` threads (default 1).

Reference measurements in the same run put the numbers in context
(:mod:`.references`): the machine's copy bandwidth (STREAM-style), the bare
GEMMs of Affine at (1024, 1024, 1024) and up, one NumPy ufunc call at
(100, 50) (the floor of per-call cost), and a full training step of the
book's 784-50-10 network with the book's layers, bprop's and a PyTorch
autograd equivalent (:mod:`.train_step`).

``--json FILE`` writes every measurement (medians, quartiles, min/max and
the raw per-repeat times); ``--plot FILE.png`` draws the forward+backward
speed-ups per size as grouped bars (:mod:`.plot`; needs matplotlib).
"""
from .cases import (CHOICES, DTYPES, IMPLS, LAYER_TITLES, LAYERS, PASSES, SIZES, Case, backend_context,
                    impl_missing_reason, make_case, make_inputs)
from .check import TOLERANCES, Mismatch, check_results, reference_results
from .command import add_arguments, add_parser, build_parser, main, run
from .environment import format_header, header, thread_limits
from .measure import run_benchmarks
from .references import copy_bandwidth, gemm_call, ufunc_time, work
from .report import SENTENCE, derived, format_references, format_tables, format_train
from .timing import fmt_time, time_call, time_calls
from .torch_cases import torch_missing_reason
from .train_step import TRAIN, measure_train_step, train_step_case
from .train_step import _train_inputs  # noqa: F401  (the pytest-benchmark suite in bench/ uses it)

__all__ = ["LAYERS", "SIZES", "IMPLS", "PASSES", "DTYPES", "CHOICES", "LAYER_TITLES", "TRAIN", "TOLERANCES",
           "SENTENCE", "Case", "make_inputs", "make_case", "backend_context", "impl_missing_reason",
           "torch_missing_reason", "reference_results", "check_results", "Mismatch", "time_call", "time_calls",
           "fmt_time", "work", "copy_bandwidth", "gemm_call", "ufunc_time", "train_step_case",
           "measure_train_step", "run_benchmarks", "derived", "format_tables", "format_references",
           "format_train", "header", "format_header", "thread_limits", "add_arguments", "add_parser",
           "build_parser", "run", "main"]
