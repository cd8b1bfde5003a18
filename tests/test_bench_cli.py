"""``bprop bench`` runs and prints its table; its correctness guard catches wrong results.

No timing assertions: the numbers depend on the machine. The CLI runs use
hidden options (``--sizes smallest``, ``--min-time``, ``--repeats``) so
they take seconds.
"""
import json
import subprocess
import tempfile
import sys

import numpy as np
import pytest

import bprop
from bprop import bench
from bprop.bench import environment

FAST = ["--sizes", "smallest", "--min-time", "0.002", "--repeats", "2", "--no-torch"]


# Run from outside the checkout: `python -m` puts the working directory first
# on sys.path, which would import the source tree instead of the installed bprop.
OUTSIDE = tempfile.gettempdir()


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bprop.bench", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=OUTSIDE)


def test_cli_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    r = run("--quick", "--layers", "relu,train", "--dtype", "float64", *FAST, "--json", str(out))
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert bench.SENTENCE in text
    for word in ("CPU:", "BLAS:", "threads: 1", "Relu", "(100, 50)", "speed-up", "torch/bprop",
                 "Copy bandwidth", "Training step"):
        assert word in text, word
    # Measurements and reference ratios only: the project's own goals are not user output.
    assert "Targets" not in text and "NOT met" not in text
    rows = [line for line in text.splitlines() if line.startswith("(100, 50)")]
    assert [line.split()[3] for line in rows] == ["forward", "backward", "both"]
    data = json.loads(out.read_text())
    impls = {(r["pass"], r["impl"]) for r in data["results"]}
    assert {p for p, _ in impls} == {"forward", "backward", "both"}
    assert {"book", "numpy"} <= {i for _, i in impls}
    assert all(r["median"] > 0 and r["q1"] <= r["median"] <= r["q3"] for r in data["results"])
    assert data["header"]["threads"] == 1
    assert set(data["train"]) >= {"book", "numpy"}
    assert "targets" not in data
    # The loops and the compiler that built them, in the header and the record.
    assert data["header"]["simd"] == bprop.info()["simd"] and data["header"]["compiler"]
    assert f"kernels: {data['header']['simd']} loops, compiler {data['header']['compiler']}" in text


def test_cli_layers_passes_and_threads():
    r = run("--layers", "affine,softmax", "--dtype", "float32", "--passes", "backward", "--threads", "2", *FAST)
    assert r.returncode == 0, r.stderr
    assert "Affine  (size" in r.stdout and "SoftmaxWithLoss  (size" in r.stdout and "Relu  (size" not in r.stdout
    assert "threads: 2" in r.stdout
    rows = [line for line in r.stdout.splitlines() if line.startswith("(100, ")]
    assert rows and all(line.split()[-1] != "forward" and "float32" in line for line in rows)


def test_cli_chapter_6_rows_in_the_asked_dtype(tmp_path):
    out = tmp_path / "bench.json"
    r = run("--quick", "--layers", "ch6", "--dtype", "float32", "--no-torch", *FAST, "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "Chapters 6 and 8" in r.stdout
    rows = json.loads(out.read_text())["ch6_ch8"]
    assert [(row["case"].split()[0], row["dtype"]) for row in rows] == [
        ("Adam", "float32"), ("BatchNormalization", "float32"), ("BatchNormalization", "float32")]
    # float32 has no book column (the book computes in float64), and --no-torch none for torch.
    assert all(row["bprop"] > 0 and row["book"] is None and row["torch"] is None for row in rows)


def test_cli_rejects_unknown_layer():
    r = run("--layers", "relu,lstm")
    assert r.returncode == 2
    assert "lstm" in r.stderr


def test_bprop_command_has_bench():
    r = subprocess.run([sys.executable, "-m", "bprop", "bench", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=OUTSIDE)
    assert r.returncode == 0, r.stderr
    assert "--quick" in r.stdout and "--threads" in r.stdout


def test_plot_or_clear_message(tmp_path):
    png = tmp_path / "speedup.png"
    r = run("--layers", "relu", "--dtype", "float64", *FAST, "--plot", str(png))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert r.returncode == 2
        assert "matplotlib" in r.stderr
        assert not png.exists()
    else:
        assert r.returncode == 0, r.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("layer", bench.LAYERS)
def test_guard_rejects_wrong_results(layer):
    """A fast but wrong kernel cannot win: check_results raises on one wrong entry."""
    size = bench.SIZES[layer][0]
    inputs = bench.make_inputs(layer, size, "float32")
    ref = bench.reference_results(layer, inputs)
    bench.check_results(layer, "book", ref, ref, "float32")
    for name in ref:
        if name == "loss":
            continue
        bad = {k: np.array(v, copy=True) for k, v in ref.items()}
        flat = bad[name].reshape(-1)
        i = flat.size // 2
        # one entry off by 1% of the largest magnitude (or a flipped mask bit)
        flat[i] = ~flat[i] if flat.dtype == bool else flat[i] + 0.01 * np.max(np.abs(flat))
        with pytest.raises(bench.Mismatch, match=name):
            bench.check_results(layer, "cython", bad, ref, "float32")


def test_unwritable_json_is_refused_before_any_work(tmp_path, capsys):
    missing = tmp_path / "no-such-dir" / "r.json"
    with pytest.raises(SystemExit) as exc:
        bench.main(["--json", str(missing), *FAST])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # no header: nothing was measured
    assert err == f"python -m bprop.bench: error: --json {missing}: its directory {missing.parent} does not exist\n"


def test_compiler_from_info_else_a_labelled_guess(monkeypatch):
    monkeypatch.setattr(environment, "info", lambda: {"simd": "portable", "compiler": "gcc 13.2"})
    assert environment.compiler() == "gcc 13.2"
    monkeypatch.setattr(environment, "info", lambda: {"simd": "portable"})
    monkeypatch.setattr(environment.sysconfig, "get_config_var", lambda name: "cc -pthread")
    assert environment.compiler() == "cc (Python's build compiler: a guess)"


def _result(layer, size, impl, pass_, median):
    return {"layer": layer, "size": list(size), "dtype": "float64", "pass": pass_, "impl": impl,
            "median": median, "q1": median, "q3": median}


def test_copy_column_shows_percentages():
    """% copy is bprop's rate over the copy bandwidth, in percent, at the copy's size only."""
    big, small = bench.SIZES["relu"][-1], bench.SIZES["relu"][0]
    results = [_result("relu", size, impl, "forward", t) for size in (big, small)
               for impl, t in (("book", 0.2), ("cython", 0.01))]
    data = {"results": results, "references": {"copy": {"float64": {"gbps": 20.0}}, "copy_alongside": [],
                                               "gemm": [], "ufunc": {}}}
    table = bench.format_tables(data, "cython", only="relu").splitlines()
    head = table[1].split()
    assert head[7:9] == ["GB/s", "%"] and head[9] == "copy"
    rows = {line.split(")")[0] + ")": line.split() for line in table[3:] if line.startswith("(")}
    rate = bench.work("relu", big, "float64", "forward")[0] / 0.01 / 1e9
    big_row = rows[str(big)]
    assert big_row[-3] == f"{100 * rate / 20.0:.0f}%"
    assert rows[str(small)][-3] == "-"  # in cache: no copy to compare with
    # Without a row at the copy's size (a --quick run) there is no % copy column at all.
    data["results"] = [r for r in results if tuple(r["size"]) == small]
    assert "% copy" not in bench.format_tables(data, "cython", only="relu")
