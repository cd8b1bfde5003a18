"""What the run ran on: versions, CPU, threads, BLAS, environment; and the thread limits."""
import contextlib
import datetime
import os
import platform
import sysconfig

import numpy as np

from .. import _backend
from .._info import info
from .._threads import blas_description, blas_pools, usable_cpus
from .._threads import threads as limit_threads
from .report import SENTENCE
from .torch_cases import torch_module

def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"



ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE", "BPROP_BACKEND")


@contextlib.contextmanager
def thread_limits(threads, with_torch=True):
    """Give bprop's kernels, NumPy's BLAS and torch ``threads`` threads; restore afterwards.

    ``threads`` must already be within the usable cores (see
    :func:`bprop._threads.cap`). ``with_torch=False`` leaves torch alone
    (not even imported).
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(limit_threads(threads))
        torch = torch_module() if with_torch else None
        if torch is not None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, before)
        yield


def compiler():
    """The C compiler that built the kernels, from ``bprop.info()`` when it says, else Python's (a guess)."""
    said = info().get("compiler")
    if said:
        return str(said)
    cc = sysconfig.get_config_var("CC")
    return f"{cc.split()[0]} (Python's build compiler: a guess)" if cc else "unknown"


def _loadavg():
    """The 1-minute load average (None where the OS does not say): other work skews timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def header(threads, timing, quick, note=None, with_torch=True):
    """The run's description: a dict (for JSON) of what the table header prints."""
    from .. import __version__

    torch = torch_module() if with_torch else None
    k = _backend.compiled_module()
    min_time, repeats = timing
    about = info()
    h = {
        "date": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "bprop": __version__,
        "compiled": k is not None,
        "openmp": bool(k is not None and k.openmp_enabled()),
        "simd": about["simd"],
        "loops": about.get("loops"),
        "exp": about.get("exp"),
        "compiler": compiler(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "threads": threads,
        "blas": blas_description(),
        "blas_pools": [{k2: p.get(k2) for k2 in ("internal_api", "version", "architecture", "num_threads",
                                                  "threading_layer")} for p in (blas_pools() or [])],
        "env": {v: os.environ[v] for v in ENV_VARS if v in os.environ},
        "load_average_start": _loadavg(),
        "quick": quick,
        "min_time": min_time,
        "repeats": repeats,
        "bprop_impl": "cython" if k is not None else "numpy",
    }
    if note:
        h["note"] = note
    return h


def format_header(h):
    """The header dict of :func:`header` as the lines printed above the tables."""
    lines = [f"bprop bench, {h['date']}"]
    lines.append(
        f"bprop {h['bprop']} (compiled kernels: {'yes' if h['compiled'] else 'NO'}, OpenMP: "
        f"{'yes' if h['openmp'] else 'no'}), NumPy {h['numpy']}, "
        f"PyTorch {h['torch'] or h.get('torch_skipped') or 'not installed'}, Python {h['python']}")
    lines.append(f"kernels: {h['simd']} loops, compiler {h['compiler']}")
    if h.get("loops"):
        lines.append(f"loops: {h['loops']}")
    if h.get("exp"):
        lines.append(f"exp (sigmoid, softmax): {h['exp']}")
    lines.append(f"CPU: {h['cpu']} ({h['logical_cpus']} logical CPUs, {h['usable_cpus']} usable)")
    load = h.get("load_average_start")
    lines.append(f"threads: {h['threads']} (bprop kernels, NumPy's BLAS and PyTorch alike)"
                 + (f"; load average at start {load:.2f}" if load is not None else ""))
    lines.append(f"BLAS: {h['blas']}")
    if h["env"]:
        lines.append("environment: " + " ".join(f"{k}={v}" for k, v in h["env"].items()))
    if h.get("note"):
        lines.append(f"note: {h['note']}")
    lines.append(f"timing: median over {h['repeats']} repeats of >= {h['min_time']:g} s each "
                 f"({'--quick' if h['quick'] else 'full run'}); ± is half the interquartile range, "
                 "relative to the median")
    if h["compiled"]:
        lines.append("bprop time is the compiled (cython) backend's; numpy is bprop on its NumPy backend; "
                     "book is the book's NumPy layers")
    else:
        lines.append("note: the compiled kernels are not built: bprop time is the NumPy backend's; "
                     "book is the book's NumPy layers")
    lines.append(SENTENCE + ".")
    return "\n".join(lines)
