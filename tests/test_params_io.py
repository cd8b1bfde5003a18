"""Parameter files: the book's pickles load without running code; anything else is refused."""
import os
import pickle

import numpy as np
import pytest

from bprop import _params_io
from bprop._params_io import UnsafeParamsError
from book_ch07 import BOOK_DIR


class _RunsCode:
    """Pickles into a call of os.mkdir: loading it with pickle.load creates the directory."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _write(path, obj, protocol=4):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    f = _write(tmp_path / "evil.pkl", {"W1": np.zeros(3), "b1": _RunsCode(marker)})
    with pytest.raises(UnsafeParamsError, match=r"refusing to load posix\.mkdir|refusing to load os\.mkdir"):
        _params_io.load(f)
    assert not marker.exists()
    with open(f, "rb") as fh:
        pickle.load(fh)  # the plain loader would have run it: the test's premise
    assert marker.exists()


@pytest.mark.parametrize("obj, message", [
    ([np.zeros(2)], "expected a dict of names to arrays, got list"),
    ({1: np.zeros(2)}, "parameter names must be strings, got 1"),
    ({"W1": np.array([1, "a"], dtype=object)}, "parameter 'W1' must be a numeric NumPy array, got an array of dtype object"),
    ({"W1": [1.0, 2.0]}, "parameter 'W1' must be a numeric NumPy array, got list"),
    ({"W1": np.zeros(2).view(np.recarray)}, "refusing to load numpy"),
])
def test_anything_but_a_dict_of_numeric_arrays_is_refused(tmp_path, obj, message):
    f = _write(tmp_path / "p.pkl", obj)
    with pytest.raises(UnsafeParamsError, match=__import__("re").escape(message)):
        _params_io.load(f)


def test_a_truncated_file_names_the_file(tmp_path):
    f = _write(tmp_path / "p.pkl", {"W1": np.arange(100.0)})
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsafeParamsError, match="p.pkl: not a readable parameter file"):
        _params_io.load(f)


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("dt", [np.float64, np.float32, np.int64])
def test_arrays_round_trip(tmp_path, protocol, dt):
    params = {"W1": np.arange(24, dtype=dt).reshape(2, 3, 4), "b1": np.zeros(0, dt), "s": np.array(3.5).astype(dt)}
    loaded = _params_io.load(_write(tmp_path / "p.pkl", params, protocol))
    assert sorted(loaded) == sorted(params)
    for k, v in params.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        np.testing.assert_array_equal(loaded[k], v)


def test_save_writes_what_pickle_load_reads(tmp_path):
    params = {"W1": np.random.default_rng(0).standard_normal((3, 2)), "b1": np.ones(2, np.float32)}
    _params_io.save(params, tmp_path / "p.pkl")
    with open(tmp_path / "p.pkl", "rb") as f:
        plain = pickle.load(f)  # what the book's load_params does
    assert type(plain) is dict and sorted(plain) == ["W1", "b1"]
    for k in params:
        np.testing.assert_array_equal(plain[k], params[k])
        assert plain[k].dtype == params[k].dtype


def test_the_books_params_file_loads():
    path = BOOK_DIR / "ch07" / "params.pkl"
    if not path.is_file():
        pytest.skip(f"the book's ch07/params.pkl is not at {path}")
    params = _params_io.load(path)
    with open(path, "rb") as f:
        expected = pickle.load(f)
    assert sorted(params) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    for k in expected:
        np.testing.assert_array_equal(params[k], expected[k])
