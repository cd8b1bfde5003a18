"""The ``bprop`` command through ``python -m bprop``, as a user runs it."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import bprop
from bprop import cli, datasets

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture
def run(tmp_path):
    """Run ``python -m bprop ARGS`` on the bprop under test, without the user's data settings."""
    env = dict(os.environ)
    for var in ("BPROP_DATA", "BPROP_MNIST_MIRRORS"):
        env.pop(var, None)
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    # The same bprop the tests imported, whether installed or built in place.
    root = str(Path(bprop.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)

    def _run(*args, extra_env=None, ok=True):
        proc = subprocess.run(
            [sys.executable, "-m", "bprop", *args], capture_output=True, text=True, timeout=600,
            env={**env, **(extra_env or {})}, cwd=tmp_path,
        )
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    return _run


def test_info(run):
    out = run("info").stdout
    assert "backend" in out and bprop.__version__ in out
    data = json.loads(run("info", "--json").stdout)
    assert data["backend"] in ("cython", "numpy")


def test_no_command_is_a_usage_error(run):
    proc = run(ok=False)
    assert proc.returncode == 2 and "usage: bprop" in proc.stderr


def test_train_text_output(run):
    proc = run("train", "--iters", "100")
    lines = proc.stdout.splitlines()
    # The embedded set: 8000 / 100 = 80 iterations per epoch, from iteration 0.
    assert [line.split()[3] for line in lines[:-1]] == ["0", "80"]
    assert all("train acc" in line and "test acc" in line for line in lines[:-1])
    assert lines[-1].startswith("test accuracy ") and "ms/iteration" in lines[-1] and "embedded" in lines[-1]
    assert "\r" not in proc.stdout  # no progress bar when stdout is not a terminal
    assert "embedded MNIST test set" in proc.stderr


def test_train_quiet(run):
    proc = run("train", "--iters", "20", "--quiet")
    assert len(proc.stdout.splitlines()) == 1 and "embedded MNIST" not in proc.stderr


def test_train_json_is_deterministic(run):
    args = ("train", "--iters", "150", "--json", "--seed", "3", "--backend", "numpy", "--hidden", "20")
    a = json.loads(run(*args).stdout)
    b = json.loads(run(*args).stdout)
    assert a["backend"] == "numpy" and a["iters"] == 150 and a["hidden"] == 20 and a["seed"] == 3
    assert a["data"] == "embedded" and (a["train_size"], a["test_size"]) == (8000, 2000)
    assert [e["iter"] for e in a["epochs"]] == [0, 80]
    for key in ("test_acc", "train_acc", "final_loss", "epochs"):
        assert a[key] == b[key]
    assert a["test_acc"] > 0.5  # 150 steps on digits: far above the 0.1 of guessing
    c = json.loads(run(*args[:5], "4", *args[6:]).stdout)
    assert c["final_loss"] != a["final_loss"]


def test_train_float32(run):
    a = json.loads(run("train", "--iters", "50", "--json", "--dtype", "float32").stdout)
    assert a["dtype"] == "float32" and 0.0 <= a["test_acc"] <= 1.0


def test_train_bad_data_dir(run, tmp_path):
    proc = run("train", "--iters", "5", "--data", str(tmp_path / "nowhere"), ok=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("bprop: error: MNIST not found in data_dir=") and "Traceback" not in proc.stderr


def test_train_on_full_set_dir(run):
    if not MNIST_DIR.is_dir():
        pytest.skip(f"full MNIST not found at {MNIST_DIR} (the project's shared data folder)")
    a = json.loads(run("train", "--iters", "30", "--json", "--data", str(MNIST_DIR)).stdout)
    assert a["data"] == "full" and (a["train_size"], a["test_size"]) == (60000, 10000)


def test_plot_without_matplotlib(run, tmp_path):
    # A package named matplotlib that fails to import stands in for "not installed".
    fake = tmp_path / "no-mpl" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    path = os.pathsep.join([str(tmp_path / "no-mpl"), str(Path(bprop.__file__).resolve().parents[1])])
    proc = run("train", "--iters", "5", "--plot", str(tmp_path / "c.png"), extra_env={"PYTHONPATH": path}, ok=False)
    assert proc.returncode == 2 and "install matplotlib" in proc.stderr
    assert not (tmp_path / "c.png").exists()


def test_plot_writes_png(run, tmp_path):
    pytest.importorskip("matplotlib")
    run("train", "--iters", "100", "--quiet", "--plot", str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradcheck(run):
    lines = run("gradcheck", "--quiet").stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["W1", "b1", "W2", "b2"]
    for line in lines:
        assert float(line.split(":")[1]) < 1e-8, line


def test_data_path(run, tmp_path):
    out = run("data", "path").stdout
    assert "in use:     embedded" in out and str(tmp_path / "xdg-cache" / "bprop" / "mnist") in out
    out = run("data", "path", extra_env={"BPROP_DATA": str(tmp_path)}).stdout
    assert "in use:     BPROP_DATA (incomplete" in out


def test_data_fetch_offline(run, tmp_path):
    # A file:// mirror over an empty folder fails like an unreachable host, with no network involved.
    empty = tmp_path / "empty"
    empty.mkdir()
    mirrors = {"BPROP_MNIST_MIRRORS": empty.as_uri()}
    proc = run("data", "fetch", "--dir", str(tmp_path / "dl"), extra_env=mirrors, ok=False)
    assert proc.returncode == 2 and "offline" in proc.stderr and "BPROP_DATA" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_fetch_from_local_mirror(run, tmp_path):
    if not MNIST_DIR.is_dir():
        pytest.skip(f"full MNIST not found at {MNIST_DIR} (the project's shared data folder)")
    out = run("data", "fetch", extra_env={"BPROP_MNIST_MIRRORS": MNIST_DIR.as_uri()}).stdout
    cache = tmp_path / "xdg-cache" / "bprop" / "mnist"
    assert f"MNIST is ready in {cache}" in out
    for name in datasets.FILES.values():
        assert (cache / name).read_bytes() == (MNIST_DIR / name).read_bytes()
    assert "in use:     cache" in run("data", "path").stdout


def test_plugin_hook(monkeypatch, capsys):
    def add_parser(sub):
        p = sub.add_parser("fake", help="a plugin")
        p.add_argument("--n", type=int)
        p.set_defaults(func=lambda args: print(f"fake ran {args.n}") or 7)

    monkeypatch.setitem(sys.modules, "bprop_fake_plugin", types.SimpleNamespace(add_parser=add_parser))
    monkeypatch.setattr(cli, "PLUGINS", {"fake": "bprop_fake_plugin", "gone": "bprop_no_such_module"})
    assert cli.main(["fake", "--n", "4"]) == 7
    assert capsys.readouterr().out == "fake ran 4\n"
    with pytest.raises(SystemExit):
        cli.main(["gone"])  # an absent module adds no subcommand


def test_broken_plugin_reports_itself(monkeypatch, capsys, tmp_path):
    (tmp_path / "bprop_broken_plugin.py").write_text("import bprop_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGINS", {"broken": "bprop_broken_plugin"})
    assert cli.main(["broken"]) == 2
    assert "broken is unavailable" in capsys.readouterr().err
