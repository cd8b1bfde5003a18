"""The ``bprop`` command through ``python -m bprop``, as a user runs it."""
import argparse
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
    assert proc.stderr.startswith("bprop train: error: MNIST not found in data_dir=") and "Traceback" not in proc.stderr


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
    out = run("train", "--iters", "100", "--quiet", "--plot", str(tmp_path / "c.png")).stdout
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.splitlines()[-1].startswith(f"wrote {tmp_path / 'c.png'}")


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


# --------------------------------------------------------------------------- bad values: one line, exit 2

NOT_A_DIR = str(Path(__file__).resolve() / "sub")  # a path "inside" a file: its folder cannot exist

BAD_VALUES = [
    (["train", "--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["train", "--lr", "0"], "--lr must be a positive finite number, got 0"),
    (["train", "--lr", "-1"], "--lr must be a positive finite number, got -1"),
    (["train", "--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (["train", "--lr", "fast"], "--lr must be a positive finite number, got fast"),
    (["train", "--seed", "-1"], "--seed must be an integer from 0 to 2**32 - 1, got -1"),
    (["train", "--seed", str(2 ** 32)], f"--seed must be an integer from 0 to 2**32 - 1, got {2 ** 32}"),
    (["gradcheck", "--seed", "-1"], "--seed must be an integer from 0 to 2**32 - 1, got -1"),
    (["train", "--iters", "0"], "--iters must be a positive integer, got 0"),
    (["train", "--iters", "1.5"], "--iters must be a positive integer, got 1.5"),
    (["train", "--batch", "-100"], "--batch must be a positive integer, got -100"),
    (["train", "--hidden", "0"], "--hidden must be a positive integer, got 0"),
    (["train", "--threads", "0"], "--threads must be a positive integer, got 0"),
    (["train", "--plot", os.path.join(NOT_A_DIR, "c.png")], "--plot "),
    (["train", "--data", __file__], f"--data {__file__}: is not a directory"),
    (["gradcheck", "--data", __file__], f"--data {__file__}: is not a directory"),
    (["data", "fetch", "--dir", __file__], f"--dir {__file__}: is not a directory"),
    (["bench", "--threads", "0"], "--threads must be a positive integer, got 0"),
    (["bench", "--min-time", "nan"], "--min-time must be a positive finite number, got nan"),
    (["bench", "--repeats", "0"], "--repeats must be a positive integer, got 0"),
    (["bench", "--layers", "relu,lstm"], "--layers takes a comma-separated list from "),
    (["bench", "--dtype", "float16"], "--dtype takes a comma-separated list from float64,float32"),
    (["bench", "--passes", ","], "--passes takes a comma-separated list from forward,backward,both"),
    (["bench", "--json", os.path.join(NOT_A_DIR, "r.json")], "--json "),
    (["bench", "--plot", os.path.join(NOT_A_DIR, "s.png")], "--plot "),
]


@pytest.mark.parametrize("argv, message", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_value_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # refused before any work
    prog = "bprop data fetch" if argv[0] == "data" else f"bprop {argv[0]}"
    assert err.startswith(f"{prog}: error: {message}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_output_path_that_is_a_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--json", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"bprop bench: error: --json {tmp_path}: is a directory\n"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_output_path_not_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit):
            cli.main(["train", "--plot", str(locked / "c.png")])
    finally:
        locked.chmod(0o700)
    assert "is not writable" in capsys.readouterr().err


def test_plot_format_checked_before_training(capsys):
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--plot", "curves.xyz"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("bprop train: error: --plot curves.xyz: cannot write .xyz files")


def test_batch_larger_than_the_training_set(capsys, monkeypatch):
    monkeypatch.delenv("BPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-cache")  # the embedded set, whatever the user has
    assert cli.main(["train", "--batch", "100000", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "bprop train: error: --batch 100000 is more than the 8000 training images (embedded MNIST)\n"


def test_threads_above_the_cores_are_capped(capsys, monkeypatch):
    from bprop import _threads

    monkeypatch.setattr(_threads, "usable_cpus", lambda: 1)
    monkeypatch.delenv("BPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-cache")
    assert cli.main(["train", "--threads", "3", "--iters", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["threads"] == 1
    assert err == ("bprop train: note: --threads: 3 threads asked for, but only 1 core is usable here: "
                   "using 1\n")


def test_wrong_flag_shows_the_subcommands_usage(capsys):
    for argv, usage in ((["train", "--nope"], "usage: bprop train "), (["data", "fetch", "--nope"],
                        "usage: bprop data fetch "), (["bench", "--nope"], "usage: bprop bench ")):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(usage), err
        assert err.endswith(f"{usage.split(': ')[1].strip()}: error: unrecognized arguments: --nope\n")


def _subparsers(parser, prefix=()):
    """(name, parser) of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield " ".join(prefix + (name,)), sub
                yield from _subparsers(sub, prefix + (name,))


def test_every_subcommand_has_help_with_description_and_defaults(capsys):
    subs = dict(_subparsers(cli.build_parser()))
    assert {"info", "train", "gradcheck", "data", "data fetch", "data path", "bench"} <= set(subs)
    for name, sub in subs.items():
        with pytest.raises(SystemExit) as exc:
            cli.main(name.split() + ["--help"])
        assert exc.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert sub.description and " ".join(sub.description.split()) in text, name
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.option_strings[-1] in text, (name, action.option_strings)  # listed
            if action.default not in (None, False, argparse.SUPPRESS) and action.dest != "help":
                shown = (",".join(action.default) if isinstance(action.default, list) else str(action.default))
                assert f"(default: {shown})" in text, (name, action.dest)


def test_quiet_says_what_it_quiets(capsys):
    for name in ("train", "gradcheck"):
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--quiet print only the final line" in text or "--quiet no note" in text, text


def test_closed_pipe_ends_quietly(tmp_path):
    """``bprop info | head -1``: the reader is gone before bprop writes; no traceback."""
    root = str(Path(bprop.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    # From an empty folder: `python -m` puts the current folder first on the
    # path, and a source tree there would shadow the bprop under test.
    proc = subprocess.Popen([sys.executable, "-m", "bprop", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    proc.stdout.close()  # before the interpreter has even started bprop
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 1
    assert err == ""
